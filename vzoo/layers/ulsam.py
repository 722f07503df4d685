"""Ultra-lightweight subspace attention (ULSAM: Saini, Jha, Das, Mittal, Mohan; WACV 2020).

The ``C`` channels of an NCHW map are split into ``g`` subspaces of ``G = C / g`` consecutive channels.
Each subspace ``F_i`` (``B × G × H × W``) gets its own spatial attention map::

    a_i = ReLU(BN(dw1x1(F_i)))                  # depthwise 1×1 conv (with bias) + BatchNorm + ReLU
    a_i = maxpool3x3(a_i, stride 1, pad 1)
    a_i = ReLU(BN(pw1x1(a_i)))                  # pointwise conv G → 1 (with bias) + BatchNorm + ReLU
    A_i = softmax of a_i over all H·W positions # one map per subspace, summing to 1
    out_i = F_i * A_i + F_i                     # broadcast over the G channels

and the outputs are concatenated. Parameters: ``2C`` (dw) + ``C + g`` (pw) + ``2C + 2g`` (BN affine).

The reference code (``Nandan91/ULSAM``, ``ulsam.py``) loops over ``g`` ``SubSpace`` modules. Because
every op is per channel or per subspace, vzoo computes all subspaces at once — one depthwise conv
and BatchNorm over all ``C`` channels, one grouped ``C → g`` pointwise conv and a BatchNorm over the
``g`` maps — which is the same arithmetic (BatchNorm statistics are per channel either way) without a
Python loop. The reference module's state dict (``subspaces.{i}.conv_dws.weight``, ``.bn_dws.*``,
``.conv_point.*``, ``.bn_point.*``) loads directly (:meth:`ULSAM.load_state_dict` converts it, see
:func:`ulsam_state_dict_from_official`). Like the reference, BatchNorm uses ``momentum=0.9`` (in
PyTorch's convention: the running stats move 90 % towards each batch); pass ``bn_momentum`` to change it.
"""
from __future__ import annotations

import re
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["ULSAM", "ulsam_state_dict_from_official"]

_PARTS = ("conv_dws", "bn_dws", "conv_point", "bn_point")


def ulsam_state_dict_from_official(state_dict: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
    """Turn reference-layout keys ``{prefix}subspaces.{i}.{part}.{name}`` into vzoo's fused keys
    ``{prefix}{part}.{name}`` (every tensor concatenated over the subspaces in order; the
    ``num_batches_tracked`` counters, equal in a module trained as a whole, become their maximum).
    Keys not under ``{prefix}subspaces.`` pass through unchanged."""
    pat = re.compile(re.escape(prefix) + r"subspaces\.(\d+)\.(" + "|".join(_PARTS) + r")\.(\w+)$")
    groups: Dict[str, Dict[int, torch.Tensor]] = {}
    out = {}
    for k, v in state_dict.items():
        m = pat.match(k)
        if m is None:
            out[k] = v
            continue
        groups.setdefault(f"{prefix}{m.group(2)}.{m.group(3)}", {})[int(m.group(1))] = v
    for k, parts in groups.items():
        idx = sorted(parts)
        if idx != list(range(len(idx))):
            raise ValueError(f"ulsam_state_dict_from_official: subspaces of {k!r} are {idx}; "
                             f"expected 0..{len(idx) - 1}")
        tensors = [parts[i] for i in idx]
        if k.endswith("num_batches_tracked"):
            out[k] = torch.stack(tensors).max()
        else:
            out[k] = torch.cat(tensors, 0)
    return out


class ULSAM(nn.Module):
    """Subspace attention over ``num_splits`` groups of channels (see the module docstring).

    Args:
        channels: input (= output) channels ``C``; must be divisible by ``num_splits``.
        num_splits: the number of subspaces ``g`` (the paper uses 1, 2, 4, 8, 16).
        bn_momentum: BatchNorm momentum (reference: 0.9).
        bn_eps: BatchNorm eps (reference: PyTorch's default 1e-5).
    """

    def __init__(self, channels: int, num_splits: int = 4, bn_momentum: float = 0.9, bn_eps: float = 1e-5,
                 device=None, dtype=None):
        super().__init__()
        for name, val in (("channels", channels), ("num_splits", num_splits)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"ULSAM: {name} must be a positive int, got {val!r}")
        if channels % num_splits:
            raise ValueError(f"ULSAM: channels ({channels}) must be divisible by num_splits ({num_splits}); "
                             f"allowed num_splits for {channels} channels: "
                             f"{[d for d in range(1, channels + 1) if channels % d == 0][:12]}...")
        dd = dict(device=device, dtype=dtype)
        self.channels, self.num_splits = channels, num_splits
        self.conv_dws = nn.Conv2d(channels, channels, 1, groups=channels, bias=True, **dd)
        self.bn_dws = nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum, **dd)
        self.conv_point = nn.Conv2d(channels, num_splits, 1, groups=num_splits, bias=True, **dd)
        self.bn_point = nn.BatchNorm2d(num_splits, eps=bn_eps, momentum=bn_momentum, **dd)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_splits={self.num_splits}"

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The ``g`` attention maps, ``(B, g, H, W)``, each summing to 1 over ``H·W``."""
        if not torch.jit.is_scripting():
            if not is_fx_symbolic_tracing():  # an eager check: TorchScript and fx see only the compute
                if x.ndim != 4 or x.shape[1] != self.channels:
                    raise ValueError(f"ULSAM: expected an NCHW input with {self.channels} channels, "
                                     f"got shape {tuple(x.shape)}")
        a = F.relu(self.bn_dws(self.conv_dws(x)))
        a = F.max_pool2d(a, 3, stride=1, padding=1)
        a = F.relu(self.bn_point(self.conv_point(a)))
        return a.flatten(2).softmax(-1).view_as(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        a = self.attention(x).unsqueeze(2)  # (B, g, 1, H, W)
        xs = x.view(B, self.num_splits, C // self.num_splits, H, W)
        return (xs * a + xs).view(B, C, H, W)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # accept the reference module's per-subspace layout (subspaces.{i}.*) as well as our own
        if any(k.startswith(prefix + "subspaces.") for k in state_dict):
            converted = ulsam_state_dict_from_official(
                {k: v for k, v in state_dict.items() if k.startswith(prefix)}, prefix)
            for k in [k for k in state_dict if k.startswith(prefix)]:
                del state_dict[k]
            state_dict.update(converted)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
