"""Parameter groups, the reference optimiser (BertAdam) and the warmup-cosine schedule.

Spec methods-clip4clip-drl.md 2.7. Parameter groups follow the reference by name: parameters of the
CLIP backbone train at ``lr * coef_lr``, others at ``lr``; names containing "bias" get no weight decay,
everything else (CLIP's LayerNorm weights and the logit scale included) gets ``weight_decay``.

``adamw`` (the schema default, the tiny demo recipes) is torch's AdamW with bias correction. ``bertadam``
reproduces the CLIP4Clip/DRL/EERCF reference update, and every paper recipe of those papers uses it: per-tensor
gradient clipping at 1.0, no bias correction, decoupled decay added to the Adam direction, all scaled by the
scheduled learning rate. ``adam`` is torch's Adam, HCQ's reference optimiser (its recipes have no decay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def warmup_cosine(progress: float, warmup: float = 0.1) -> float:
    """The reference schedule: linear warmup, then 0.5 * (1 + cos(pi * progress)) on the RAW progress.

    Because the cosine is not re-based after warmup, the multiplier jumps from 1.0 to about 0.976 at
    ``progress == warmup``; at step 0 it is 0, so the first update does nothing. Both are kept on purpose.
    """
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(
    model: nn.Module, *, lr: float, coef_lr: float, weight_decay: float, backbone_prefix: str = "clip."
) -> list[dict]:
    """Four groups: (backbone vs new modules) x (decayed vs bias). Frozen parameters are left out."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_backbone = name.startswith(backbone_prefix) or f".{backbone_prefix}" in name
        no_decay = "bias" in name
        groups.setdefault((is_backbone, no_decay), []).append(p)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * coef_lr if is_backbone else lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{'clip' if is_backbone else 'new'}_{'nodecay' if no_decay else 'decay'}",
            }
        )
    return out


class BertAdam(torch.optim.Optimizer):
    """The reference optimiser's update rule (no bias correction, per-tensor clip, decoupled decay)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                    grad = p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
        return loss


OPTIMIZERS = ("adamw", "bertadam", "adam")


def build_optimizer(name: str, groups: list[dict], *, betas, eps: float) -> torch.optim.Optimizer:
    """``bertadam``: the CLIP4Clip/DRL/EERCF reference update; ``adam``: torch's Adam (coupled L2 decay), HCQ's
    reference optimiser; ``adamw``: torch's AdamW (bias-corrected, decoupled decay), vidbench's option."""
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=tuple(betas), eps=eps)
    if name == "bertadam":
        return BertAdam(groups, betas=tuple(betas), eps=eps)
    if name == "adam":
        return torch.optim.Adam(groups, betas=tuple(betas), eps=eps)
    raise ValueError(f"optim.optimizer must be one of {OPTIMIZERS}, got {name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup: float, schedule: str
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step multiplier evaluated at step/total_steps, stepping from 0 (the reference's counter)."""
    total = max(1, total_steps)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step / total, warmup))
