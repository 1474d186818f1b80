"""Optimiser, schedule and parameter groups against the reference rules (spec 2.7)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidbench.methods.optim import BertAdam, build_scheduler, param_groups, warmup_cosine


def test_warmup_cosine_reference_formula():
    assert warmup_cosine(0.0) == 0.0
    assert warmup_cosine(0.05) == pytest.approx(0.5)
    # no re-basing after warmup: the multiplier jumps to 0.5 * (1 + cos(0.1 pi)) ~ 0.976
    assert warmup_cosine(0.1) == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi)))
    assert warmup_cosine(0.0999) == pytest.approx(0.999)
    assert warmup_cosine(1.0) == pytest.approx(0.0, abs=1e-12)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.clip = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
        self.head = nn.Linear(3, 1)
        self.frozen = nn.Linear(3, 3)
        self.frozen.weight.requires_grad_(False)


def test_param_groups_follow_reference_names():
    groups = {g["name"]: g for g in param_groups(Toy(), lr=1e-4, coef_lr=1e-3, weight_decay=0.2)}
    assert groups["clip_decay"]["lr"] == pytest.approx(1e-7) and groups["clip_decay"]["weight_decay"] == 0.2
    assert groups["clip_nodecay"]["weight_decay"] == 0.0
    assert groups["new_decay"]["lr"] == 1e-4
    # the LayerNorm weight is decayed (the reference's "LayerNorm.weight" rule never matches CLIP's names)
    assert len(groups["clip_decay"]["params"]) == 2
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == 7  # frozen.weight left out


def test_bertadam_matches_hand_update():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5))
    start = p.detach().clone()
    opt = BertAdam([p], lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, max_grad_norm=1.0)
    m = torch.zeros(5)
    v = torch.zeros(5)
    ref = start.clone()
    for step in range(3):
        g = torch.randn(5) * 3
        p.grad = g.clone()
        opt.step()
        gc = g * min(1.0, 1.0 / (g.norm() + 1e-6))  # per-tensor clip at 1.0
        m = 0.9 * m + 0.1 * gc
        v = 0.98 * v + 0.02 * gc * gc
        ref = ref - 0.1 * (m / (v.sqrt() + 1e-6) + 0.2 * ref)
        assert torch.allclose(p.detach(), ref, atol=1e-5), step


def test_scheduler_first_step_is_zero():
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, total_steps=10, warmup=0.1, schedule="warmup_cosine")
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0
    assert lrs[1] == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi)))
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
