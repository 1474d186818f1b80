"""FLOP, parameter, latency and storage helpers checked against hand-derived counts."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidbench.eval.efficiency import (
    count_flops,
    count_params,
    dense_match_flops,
    hardware_name,
    index_bytes_per_video,
    time_per_query,
)

B, T, D, H = 1, 12, 512, 8


class QKVAttention(nn.Module):
    """The spec's measurement block: q/k/v projections (no bias, no output projection) + SDPA."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(D, D, bias=False) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, D // H).transpose(1, 2)

        return F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))


def linear_flops(n_layers: int) -> int:
    return n_layers * 2 * B * T * D * D  # one [B*T, D] @ [D, D] per projection


def attention_flops() -> int:
    head_dim = D // H
    return 2 * (2 * B * H * T * T * head_dim)  # q @ k^T and attn @ v


def test_analytic_counts_match_the_spec_numbers() -> None:
    assert linear_flops(3) == 18_874_368
    assert attention_flops() == 294_912


def test_sdpa_block_counts_attention() -> None:
    block = QKVAttention()
    x = torch.randn(B, T, D)
    with torch.no_grad():
        report = count_flops(lambda: block(x))
    assert report.total == linear_flops(3) + attention_flops() == 19_169_280
    assert report.attention == attention_flops() > 0
    assert report.by_op["aten.mm"] == linear_flops(3)
    assert sum(report.by_op.values()) == report.total


def test_multihead_attention_module() -> None:
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    x = torch.randn(B, T, D)
    with torch.no_grad():
        report = count_flops(lambda: mha(x, x, x, need_weights=False))
    # in-projection (q, k, v) and out-projection: four D x D layers
    assert report.total == linear_flops(4) + attention_flops()
    assert report.attention == attention_flops()
    assert report.by_module["MultiheadAttention"] == report.total


def test_mlp_has_no_attention_flops() -> None:
    mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
    x = torch.randn(T, D)
    report = count_flops(lambda: mlp(x))
    assert report.attention == 0
    assert report.total == 2 * T * D * 4 * D * 2


def test_dense_match_flops_equals_a_counted_matmul() -> None:
    n_gallery = 1000
    query, gallery = torch.randn(1, D), torch.randn(n_gallery, D)
    counted = count_flops(lambda: query @ gallery.T).total
    assert dense_match_flops(n_gallery, D) == counted == 1_024_000


def test_count_params_with_frozen_part_and_shared_weight() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_params(model) == (4 * 3 + 3 + 3 * 2 + 2, 3 * 2 + 2)

    tied = nn.Module()
    tied.a = nn.Linear(5, 5, bias=False)
    tied.b = nn.Linear(5, 5, bias=False)
    tied.b.weight = tied.a.weight
    assert count_params(tied) == (25, 25)


def test_time_per_query_is_median_per_query_and_counts_calls() -> None:
    calls = []

    def fn() -> None:
        calls.append(1)
        time.sleep(0.004)

    ms = time_per_query(fn, n_queries=2, warmup=2, repeats=3)
    assert len(calls) == 5
    assert 2.0 <= ms < 100.0
    with pytest.raises(ValueError, match="n_queries"):
        time_per_query(fn, n_queries=0)


def test_hardware_name_cpu() -> None:
    name = hardware_name("cpu")
    assert name.startswith("cpu: ") and "cores)" in name


def test_index_bytes_per_video() -> None:
    feats = torch.zeros(10, D, dtype=torch.float32)
    codes = torch.zeros(10, 256, dtype=torch.uint8)
    assert index_bytes_per_video([feats, codes], n_videos=10) == D * 4 + 256
    with pytest.raises(ValueError, match="n_videos"):
        index_bytes_per_video([feats], n_videos=0)
