"""Sparsifiner's staged training (``lim142857/Sparsifiner``: ``src/main.py``, ``src/losses.py``) for mmengine.

The release trains a Sparsifiner from a dense teacher (the DeiT it starts from) in phases, each with its own
optimizer and warm-up + cosine learning rate:

1. ``attn_recon``: only the connectivity predictors train; the loss is the attention reconstruction loss,
   ``0.01 * mean over blocks of sum((approx_attn - teacher_attn[..., 1:, :]) ** 2)`` (:class:`AttnReconLoss`).
2. ``cls_distill``: only the backbone trains, on the sparse attention the predictors choose; the loss is
   cross-entropy + ``0.5 *`` KL to the teacher's logits (:class:`ClsDistillLoss`) ``+ 0.5 *`` MSE to the
   teacher's last image tokens (:class:`TokenDistillLoss`, over the tokens the student kept).

Here: :class:`SparsifinerClassifier` (a :class:`TimmClassifier` with a frozen ``teacher`` and the losses, as
registered modules) and :class:`SparsifinerPhaseHook` (sets the phase per epoch, gives each phase a fresh
optimizer state, as the release's new optimizer per phase, and sets the learning rate per iteration along the
release's ``cosine_scheduler`` of the phase). The release's default experiment: 5 epochs ``attn_recon`` (lr
3e-4 -> 2e-4, 3 warm-up epochs), then 45 epochs ``cls_distill`` (8e-5 -> 2e-6, 3 warm-up epochs).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import timm
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from ..registry import HOOKS, MODELS, build_in_vzoo_scope
from .model import TimmClassifier

__all__ = ["AttnReconLoss", "ClsDistillLoss", "TokenDistillLoss", "SparsifinerClassifier", "SparsifinerPhaseHook",
           "teacher_outputs", "phase_lr"]


# ---------------------------------------------------------------------------------------------------
# losses (the release's src/losses.py, the terms its default experiment uses)
# ---------------------------------------------------------------------------------------------------
@MODELS.register_module()
class AttnReconLoss(nn.Module):
    """``weight * mean_blocks sum((approx - teacher[..., 1:, :]) ** 2)`` (release: MSE, reduction 'sum')."""

    def __init__(self, weight: float = 0.01):
        super().__init__()
        self.weight = weight

    def forward(self, approx_attn: Sequence[torch.Tensor], teacher_attn: Sequence[torch.Tensor]) -> torch.Tensor:
        total = sum(F.mse_loss(a, t[..., 1:, :].to(a.dtype), reduction="sum")
                    for a, t in zip(approx_attn, teacher_attn))
        return self.weight * total / len(approx_attn)


@MODELS.register_module()
class ClsDistillLoss(nn.Module):
    """``weight * KL(teacher || student)`` of the class logits (log-softmax targets, 'batchmean')."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return self.weight * F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(teacher_logits, dim=-1),
                                      reduction="batchmean", log_target=True)


@MODELS.register_module()
class TokenDistillLoss(nn.Module):
    """``weight * MSE`` of the last block's normed image tokens, over the tokens the student kept."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        self.weight = weight

    def forward(self, tokens: torch.Tensor, teacher_tokens: torch.Tensor,
                token_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if token_mask is not None:
            tokens, teacher_tokens = tokens[token_mask], teacher_tokens[token_mask]
        return self.weight * F.mse_loss(tokens, teacher_tokens)


# ---------------------------------------------------------------------------------------------------
# the dense teacher
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: torch.Tensor, with_attn: bool = True):
    """A timm ViT's (logits, normed image tokens, per-block softmax attention ``(B, heads, N, N)``, or [])
    — the release's ``VisionTransformerTeacher`` outputs. The attention is recomputed on the side from each
    block's ``qkv`` (timm's fused attention never forms it)."""
    x = teacher.norm_pre(teacher.patch_drop(teacher._pos_embed(teacher.patch_embed(x))))
    attn: List[torch.Tensor] = []
    for blk in teacher.blocks:
        if with_attn:
            a = blk.attn
            B, N, _ = x.shape
            q, k, _ = a.qkv(blk.norm1(x)).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            attn.append(((a.q_norm(q) @ a.k_norm(k).transpose(-2, -1)) * a.scale).softmax(dim=-1))
        x = blk(x)
    x = teacher.norm(x)
    return teacher.forward_head(x), x[:, teacher.num_prefix_tokens:], attn


# ---------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------
def _pretrained_kwargs(file: Optional[str], num_classes: Optional[int]) -> dict:
    """``timm.create_model`` arguments loading ``file`` with its classifier: the student and the teacher start
    from weights of the task (DeiT's ImageNet ones in the release), whose classifier timm would re-initialise
    when its size is not the cfg's; a classifier of another size then fails the key check instead."""
    if not file:
        return {}
    overlay = dict(file=file) if num_classes is None else dict(file=file, num_classes=num_classes)
    return dict(pretrained=True, pretrained_cfg_overlay=overlay)


@MODELS.register_module()
class SparsifinerClassifier(TimmClassifier):
    """A Sparsifiner (``arch``, e.g. ``sparsifiner_deit_small_patch16_224``) trained from a dense ``teacher``.

    Args:
        teacher: ``dict(arch=..., pretrained=FILE, arch_kwargs=...)``, a timm ViT classifier of the task (its
            ``num_classes`` is the student's; frozen, always in eval mode; saved with the runner's checkpoints).
        attn_recon_loss, cls_distill_loss, token_distill_loss: the loss modules (configs of the registered
            ones above; the release's weights by default).
        pretrained: the student's starting weights (a DeiT / ViT file: the predictor starts fresh), classifier included.
        **kwargs: :class:`TimmClassifier` arguments (``arch``, ``num_classes``, ``arch_kwargs``, ``mixup`` ...).

    The phase is the network's (``model.phase``, set by :class:`SparsifinerPhaseHook`).
    """

    def __init__(self, teacher: dict, attn_recon_loss: Optional[dict] = None, cls_distill_loss: Optional[dict] = None,
                 token_distill_loss: Optional[dict] = None, pretrained: Optional[str] = None,
                 arch_kwargs: Optional[dict] = None, num_classes: Optional[int] = None, **kwargs):
        student_kwargs = dict(arch_kwargs or {}, **_pretrained_kwargs(pretrained, num_classes))
        super().__init__(arch_kwargs=student_kwargs, num_classes=num_classes, **kwargs)
        if not hasattr(self.model, "forward_aux"):
            raise TypeError(f"SparsifinerClassifier: arch {self.arch!r} is not a Sparsifiner (no forward_aux)")
        # every network parameter joins the optimizer (timm's param groups skip frozen ones); the phase hook
        # then freezes what its phase does not train
        self.model.requires_grad_(True)
        t_kwargs = dict(teacher.get("arch_kwargs") or {}, num_classes=self.num_classes,
                        **_pretrained_kwargs(teacher.get("pretrained"), self.num_classes))
        self.teacher = timm.create_model(teacher["arch"], **t_kwargs).eval().requires_grad_(False)
        self.teacher.is_init = True  # timm initialised or loaded it; the runner's init_weights must not re-init it
        self.attn_recon_loss = build_in_vzoo_scope(MODELS, attn_recon_loss or dict(type="AttnReconLoss"))
        self.cls_distill_loss = build_in_vzoo_scope(MODELS, cls_distill_loss or dict(type="ClsDistillLoss"))
        self.token_distill_loss = build_in_vzoo_scope(MODELS, token_distill_loss or dict(type="TokenDistillLoss"))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's dropout / drop path never run
        return self

    def loss(self, inputs, data_samples) -> Dict[str, torch.Tensor]:
        inputs, target = self.mix_batch(inputs, self._targets(data_samples, inputs.device))
        recon = self.model.phase == "attn_recon"
        t_logits, t_tokens, t_attn = teacher_outputs(self.teacher, inputs, with_attn=recon)
        out = self.model.forward_aux(inputs)
        if recon:
            return dict(loss_attn_recon=self.attn_recon_loss(out["approx_attn"], t_attn))
        return dict(loss_cls=self.classification_loss(out["logits"], target),
                    loss_cls_distill=self.cls_distill_loss(out["logits"], t_logits),
                    loss_token_distill=self.token_distill_loss(out["tokens"], t_tokens, out["token_masks"][-1]))


# ---------------------------------------------------------------------------------------------------
# the phase switch
# ---------------------------------------------------------------------------------------------------
def phase_lr(iteration: int, iters_per_epoch: int, epochs: int, base_lr: float, final_lr: float,
             warmup_epochs: int = 0) -> float:
    """Learning rate at iteration ``iteration`` (0-based) of a phase: the release's ``utils.cosine_scheduler``
    (a linear warm-up from 0 to ``base_lr`` over ``warmup_epochs``, endpoints included, then a half cosine
    from ``base_lr`` to ``final_lr`` over the rest of the phase)."""
    warmup = warmup_epochs * iters_per_epoch
    if iteration < warmup:
        return base_lr * iteration / (warmup - 1) if warmup > 1 else base_lr
    rest = epochs * iters_per_epoch - warmup
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * (iteration - warmup) / rest))


@HOOKS.register_module()
class SparsifinerPhaseHook(Hook):
    """Runs the release's phases one after the other.

    Args:
        phases: ``[dict(name='attn_recon' | 'cls_distill', epochs=E, base_lr=..., final_lr=..., warmup_epochs=W)]``
            in order; their epochs should add up to ``train_cfg.max_epochs`` (the last phase continues otherwise).
            ``attn_recon`` trains the predictors (network phase ``'attn_recon'``), ``cls_distill`` the backbone
            (network phase ``'sparse'``).
    """
    priority = "HIGHEST"  # sets the lr before anything reads it (the runtime-info hook logs it)
    NETWORK_PHASE = {"attn_recon": "attn_recon", "cls_distill": "sparse"}

    def __init__(self, phases: Sequence[dict]):
        if not phases:
            raise ValueError("SparsifinerPhaseHook: phases is empty")
        for p in phases:
            if p.get("name") not in self.NETWORK_PHASE:
                raise ValueError(f"SparsifinerPhaseHook: phase name must be one of {tuple(self.NETWORK_PHASE)}, "
                                 f"got {p}")
            if int(p.get("epochs", 0)) < 1:
                raise ValueError(f"SparsifinerPhaseHook: every phase needs epochs >= 1, got {p}")
        self.phases = [{"warmup_epochs": 0, **p} for p in phases]
        self._current: Optional[int] = None

    def _phase_at(self, epoch: int):
        start = 0
        for i, p in enumerate(self.phases):
            if epoch < start + p["epochs"] or i == len(self.phases) - 1:
                return i, start
            start += p["epochs"]

    @staticmethod
    def _network(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        net = getattr(model, "model", model)
        if not hasattr(net, "phase"):
            raise TypeError(f"SparsifinerPhaseHook: {type(net).__name__} has no phase (a Sparsifiner is needed)")
        return net

    def before_train_epoch(self, runner) -> None:
        i, _ = self._phase_at(runner.epoch)
        if i != self._current:
            self._network(runner).phase = self.NETWORK_PHASE[self.phases[i]["name"]]
            if self._current is not None:  # the release builds a new optimizer for every phase
                runner.optim_wrapper.optimizer.state.clear()
            self._current = i
            runner.logger.info(f"Sparsifiner phase {self.phases[i]['name']!r} from epoch {runner.epoch}")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        i, start = self._phase_at(runner.epoch)
        p = self.phases[i]
        per_epoch = len(runner.train_dataloader)
        it = min((runner.epoch - start) * per_epoch + batch_idx, p["epochs"] * per_epoch - 1)
        lr = phase_lr(it, per_epoch, p["epochs"], p["base_lr"], p["final_lr"], p["warmup_epochs"])
        for group in runner.optim_wrapper.optimizer.param_groups:
            group["lr"] = lr
        runner.message_hub.update_scalar("train/phase_index", i)
