"""Cost figures every method reports next to its accuracy: FLOPs, parameters, latency, storage.

Conventions (the leaderboard columns depend on them):
- FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (1 multiply-add = 2 FLOPs),
  never MACs. Attention is forced onto the MATH SDPA backend while counting, because the CPU
  default kernel (``_scaled_dot_product_flash_attention_for_cpu``) is missing from torch's FLOP
  registry and would silently count as zero (spec/ecosystem.md §6).
- Matching FLOPs per query are kept separate from encoder FLOPs: video encoding is amortised into an
  offline index, while matching is paid per query against every gallery item.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

# Batched matrix products: with linear layers lowering to mm/addmm, these are what attention
# (q·kᵀ and attn·v) issues, on the MATH path and in eager HF/nn.MultiheadAttention code alike.
ATTENTION_OPS: frozenset[str] = frozenset({"aten.bmm", "aten.baddbmm"})


def _is_attention_op(name: str) -> bool:
    return name in ATTENTION_OPS or "scaled_dot_product" in name


@dataclass(frozen=True)
class FlopReport:
    """FLOPs of one call.

    ``attention`` is the FLOPs of batched matmuls (``aten.bmm``/``aten.baddbmm``) plus any fused
    SDPA op the counter knows. That is the q·kᵀ and attn·v work of every attention layer, because
    dense layers lower to ``mm``/``addmm``. Other batched matmuls in ``fn`` (such as an einsum
    token-wise similarity) also land here, so read it as "attention" only for encoder calls.
    """

    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    attention: int = 0
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def count_flops(fn: Callable[[], Any]) -> FlopReport:
    """Run ``fn()`` once and count its FLOPs, attention included (forced onto the MATH backend).

    ``fn`` decides about gradients: wrap its body in ``torch.no_grad()`` to count inference only.
    """
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    counts = counter.get_flop_counts()
    global_counts = counts.get("Global", {})
    by_op = {str(op): int(n) for op, n in global_counts.items()}
    by_module = {
        name: int(sum(ops.values())) for name, ops in counts.items() if name != "Global" and sum(ops.values())
    }
    attention = sum(n for op, n in by_op.items() if _is_attention_op(op))
    return FlopReport(
        total=int(counter.get_total_flops()), by_op=by_op, attention=attention, by_module=by_module
    )


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared parameters are counted once."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def _as_device(device: torch.device | str | None) -> torch.device | None:
    return torch.device(device) if device is not None else None


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_query(
    fn: Callable[[], Any],
    n_queries: int,
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> float:
    """Median wall-clock milliseconds per query of ``fn``, which must process ``n_queries`` queries.

    The median of ``repeats`` timed calls (after ``warmup`` untimed ones) resists one-off stalls;
    on CUDA each timed call is bracketed by synchronisation so queued kernels are included.
    """
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    dev = _as_device(device)
    for _ in range(warmup):
        fn()
    _synchronize(dev)
    samples = []
    for _ in range(repeats):
        _synchronize(dev)
        start = time.perf_counter()
        fn()
        _synchronize(dev)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000.0 / n_queries


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware_name(device: torch.device | str | None = None) -> str:
    """Human-readable name of the device timings were taken on (goes into result.json)."""
    dev = _as_device(device) or torch.device("cpu")
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"cpu: {_cpu_model()} ({cores} cores)"
    return dev.type


def dense_match_flops(n_gallery: int, dim: int) -> float:
    """FLOPs to score one query against ``n_gallery`` cached vectors: 2·N·D.

    Cosine similarity on vectors normalised at indexing time is a plain dot product (D multiplies
    and D adds per gallery item); the ranking/top-k that follows is not counted.
    """
    return 2.0 * n_gallery * dim


def index_bytes_per_video(tensors: Iterable[torch.Tensor], n_videos: int) -> float:
    """Bytes of the cached index per video, from the tensors actually stored for ``n_videos``."""
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    return sum(t.numel() * t.element_size() for t in tensors) / n_videos
