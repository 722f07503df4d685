"""Large kernel attention (LKA, from VAN: Guo et al., "Visual Attention Network", 2022).

A ``K×K`` depthwise convolution with a large ``K`` is decomposed into three cheap parts:

1. a ``(2d-1)×(2d-1)`` depthwise convolution (local context),
2. a ``ceil(K/d)×ceil(K/d)`` depthwise convolution with dilation ``d`` (long-range context),
3. a 1×1 convolution (channel mixing).

Their output is an attention map that gates the input element-wise: ``out = x * attn(x)``.
VAN uses ``K=21, d=3``: depthwise 5×5, depthwise 7×7 with dilation 3 (padding 9), pointwise 1×1.

Input and output are NCHW; spatial size is preserved for any input size.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["LargeKernelAttention", "lka_kernel_sizes"]


def lka_kernel_sizes(kernel_size: int, dilation: int) -> tuple:
    """The (local, dilated) depthwise kernel sizes that decompose a ``kernel_size`` kernel with ``dilation``."""
    if not isinstance(kernel_size, int) or kernel_size < 3:
        raise ValueError(f"LargeKernelAttention: kernel_size must be an int >= 3, got {kernel_size!r}")
    if not isinstance(dilation, int) or not 1 < dilation < kernel_size:
        raise ValueError(f"LargeKernelAttention: dilation must be an int with 1 < dilation < kernel_size "
                         f"({kernel_size}), got {dilation!r}")
    local = 2 * dilation - 1
    dilated = -(-kernel_size // dilation)  # ceil
    if dilated % 2 == 0:
        dilated += 1  # odd, so 'same' padding exists
    return local, dilated


class LargeKernelAttention(nn.Module):
    """``x * pw(dw_dilated(dw(x)))``: the LKA gate of VAN (see the module docstring).

    Args:
        dim: channels (input = output).
        kernel_size: the large kernel that is decomposed (VAN: 21).
        dilation: dilation of the long-range depthwise convolution (VAN: 3).
        device, dtype: where and in which dtype the weights are created.
    """

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, device=None, dtype=None):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"LargeKernelAttention: dim must be a positive int, got {dim!r}")
        dd = dict(device=device, dtype=dtype)
        local, dilated = lka_kernel_sizes(kernel_size, dilation)
        self.dw = nn.Conv2d(dim, dim, local, padding=local // 2, groups=dim, **dd)
        self.dw_dilated = nn.Conv2d(dim, dim, dilated, padding=(dilated // 2) * dilation, dilation=dilation,
                                    groups=dim, **dd)
        self.pw = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if not is_fx_symbolic_tracing():  # an eager check: TorchScript and fx see only the compute
                if x.ndim != 4:
                    raise ValueError(f"LargeKernelAttention: x must be NCHW (4-D), got shape {tuple(x.shape)}")
        return x * self.pw(self.dw_dilated(self.dw(x)))
