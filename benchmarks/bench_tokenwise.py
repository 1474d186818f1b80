"""Test-time token-wise (DRL WTI) scoring: the blocked scorer against DRL's 32 x 32 chunk loop.

Usage::

    .venv/bin/python benchmarks/bench_tokenwise.py            # the shapes users meet (~3-5 min on 1 core)
    .venv/bin/python benchmarks/bench_tokenwise.py --quick    # smaller shapes, well under a minute

For each dataset shape it scores random L2-normalised features with realistic valid lengths (see
``DATASETS``) twice: ``tokenwise_scores_blocked`` (one matmul per block under ``--budget-mb``) and
``simple_block_loop_scores`` (DRL's evaluation: 32 x 32 chunks, each building ``[32, 32, Lt, Lv]``).
It prints wall time, pairs/s, the peak memory of each run, the throughput ratio, and the max abs
difference between the two on every pair both computed (the run fails if it exceeds 1e-5).

Where a full run would take too long here, a scorer runs on a fixed random subset and its throughput
is extrapolated (the output says so): the simple loop on a random subset of its 32 x 32 chunks, the
blocked scorer on a random subset of the texts against all videos. Chunks are independent, so the
subset has the same per-pair cost; the equality check always covers the subset.

Memory: every measurement runs in a fresh subprocess. Torch's CPU allocations are invisible to
tracemalloc, so the figure is the kernel's resident-set high-water mark (``VmHWM``) after the call minus
the resident set just before it; the high-water mark is reset to the current RSS right before the call
(``/proc/self/clear_refs`` = 5, after ``malloc_trim``), so building the inputs does not count.
``MALLOC_MMAP_THRESHOLD_`` is fixed at 64 KiB so large buffers are mmapped and returned to the OS when
freed, and the RSS follows live memory rather than glibc's cache. The figure includes the output matrix.

Threads: ``--threads 1`` by default. The development box has 2 cores shared with other jobs; with two
OpenMP threads the many small ops of the chunk loop stall on thread hand-offs when the other core is
busy, which would flatter the blocked scorer. One thread gives a fair, steadier comparison; pass
``--threads 0`` for torch's default.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vidbench.models.interaction import (
    prepare_tokens,
    simple_block_loop_scores,
    tokenwise_scores_blocked,
)

D = 512
CHUNK = 32  # DRL's evaluation chunk


@dataclass(frozen=True)
class Shape:
    name: str
    n_text: int
    n_video: int
    max_words: int
    max_frames: int
    text_len: str  # how valid text lengths are drawn, see _lengths
    video_len: str
    blocked_texts: int | None  # None: all texts; else a random subset against all videos
    simple_chunks: int | None  # None: the full chunk loop; else this many random 32 x 32 chunks


# Valid-length distributions, chosen to resemble each dataset (not measured from the real files):
#   MSRVTT captions ~9-10 words -> 2 + Poisson(10) tokens; clips 10-32 s at 1 fps -> min(12, U{10..32}).
#   MSVD captions ~7 words -> 2 + Poisson(8); clips 1-60 s, median ~9 s -> min(12, lognormal(ln 9, 0.6)).
#   ActivityNet paragraphs ~3.6 sentences of ~13 words -> 2 + Poisson(58), cut at 64; videos ~2 min ->
#   min(64, U{20..240}) frames.
#   "msrvtt-nopad" has no padding at all: the blocked scorer's worst case.
DATASETS = {
    "full": [
        Shape("msrvtt", 1000, 1000, 32, 12, "poisson:10", "uniform:10:32", None, None),
        Shape("msrvtt-nopad", 1000, 1000, 32, 12, "full", "full", None, 256),
        Shape("msvd", 27763, 670, 32, 12, "poisson:8", "lognormal:9:0.6", None, 512),
        Shape("activitynet", 4917, 4917, 64, 64, "poisson:58", "uniform:20:240", 128, 64),
    ],
    "quick": [
        Shape("msrvtt", 256, 256, 32, 12, "poisson:10", "uniform:10:32", None, None),
        Shape("msrvtt-nopad", 256, 256, 32, 12, "full", "full", None, 32),
        Shape("msvd", 2000, 670, 32, 12, "poisson:8", "lognormal:9:0.6", None, 64),
        Shape("activitynet", 4917, 4917, 64, 64, "poisson:58", "uniform:20:240", 32, 8),
    ],
}


# ---------------------------------------------------------------------------------------------------------
# inputs (identical in every worker: everything derives from the seed)


def _lengths(spec: str, n: int, cap: int, g: torch.Generator) -> torch.Tensor:
    kind, *args = spec.split(":")
    if kind == "full":
        x = torch.full((n,), cap)
    elif kind == "poisson":
        x = 2 + torch.poisson(torch.full((n,), float(args[0])), generator=g).long()
    elif kind == "uniform":
        x = torch.randint(int(args[0]), int(args[1]) + 1, (n,), generator=g)
    elif kind == "lognormal":
        x = torch.exp(math.log(float(args[0])) + float(args[1]) * torch.randn(n, generator=g)).round().long()
    else:
        raise ValueError(f"unknown length spec {spec!r}")
    return x.clamp(1, cap)


def _side(n: int, length: int, len_spec: str, g: torch.Generator, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Prepared tokens built chunk by chunk, so no transient spike precedes the measurement."""
    lens = _lengths(len_spec, n, length, g)
    mask = (torch.arange(length)[None, :] < lens[:, None]).long()
    tokens = torch.empty(n, length, D)
    for i in range(0, n, chunk):
        x = torch.randn(min(chunk, n - i), length, D, generator=g)
        tokens[i : i + chunk] = prepare_tokens(x, mask[i : i + chunk])
    logits = torch.randn(n, length, generator=g).masked_fill(mask == 0, float("-inf"))
    return {"tokens": tokens, "mask": mask, "weights": torch.softmax(logits, -1)}


def _inputs(shape: Shape, seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    text = _side(shape.n_text, shape.max_words, shape.text_len, g)
    video = _side(shape.n_video, shape.max_frames, shape.video_len, g)
    return text, video


def _plan(shape: Shape, seed: int) -> tuple[torch.Tensor | None, list[tuple[torch.Tensor, torch.Tensor]] | None]:
    """Blocked text subset (None = all) and simple-loop chunks (None = full loop), fixed by the seed."""
    g = torch.Generator().manual_seed(seed + 1)
    text_subset = None
    if shape.blocked_texts is not None:
        text_subset = torch.randperm(shape.n_text, generator=g)[: shape.blocked_texts].sort().values
    if shape.simple_chunks is None:
        return text_subset, None
    pool = text_subset if text_subset is not None else torch.arange(shape.n_text)
    tgroups = pool[torch.randperm(pool.numel(), generator=g)].split(CHUNK)
    vgroups = torch.randperm(shape.n_video, generator=g).split(CHUNK)
    combos = torch.randperm(len(tgroups) * len(vgroups), generator=g)[: shape.simple_chunks].tolist()
    chunks = [(tgroups[c // len(vgroups)], vgroups[c % len(vgroups)]) for c in combos]
    return text_subset, chunks


def _select(feats: dict, idx: torch.Tensor) -> dict:
    return {k: v.index_select(0, idx) for k, v in feats.items()}


# ---------------------------------------------------------------------------------------------------------
# worker: one measurement in a fresh process


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _start_peak() -> tuple[int, bool]:
    """Current RSS (bytes), after resetting the kernel's high-water mark to it if allowed."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        reset = False
    return _status_kib("VmRSS") * 1024, reset


def _peak(reset: bool) -> int:
    if reset:
        return _status_kib("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # lifetime peak (Linux: KiB)


def _worker(job: dict) -> None:
    shape = Shape(**job["shape"])
    if job["threads"] > 0:
        torch.set_num_threads(job["threads"])
    text, video = _inputs(shape, job["seed"])
    text_subset, chunks = _plan(shape, job["seed"])
    budget = int(job["budget_mb"] * 2**20)
    block = int(job["block_mb"] * 2**20) or None

    if job["scorer"] == "blocked":
        if text_subset is not None:
            text = _select(text, text_subset)
        warm = _select(text, torch.arange(2))
        tokenwise_scores_blocked(warm, video, mode="wti", budget_bytes=budget, block_bytes=block)
        rss0, reset = _start_peak()
        t0 = time.perf_counter()
        scores = tokenwise_scores_blocked(text, video, mode="wti", budget_bytes=budget, block_bytes=block)
        wall = time.perf_counter() - t0
        pairs = scores.numel()
        rows = text_subset if text_subset is not None else torch.arange(shape.n_text)
        torch.save({"rows": rows, "scores": scores}, job["out"])
    else:
        if chunks is not None:
            parts = [(_select(text, ti), _select(video, vi)) for ti, vi in chunks]
        simple_block_loop_scores(_select(text, torch.arange(2)), _select(video, torch.arange(2)), mode="wti")
        rss0, reset = _start_peak()
        t0 = time.perf_counter()
        if chunks is None:
            scores = simple_block_loop_scores(text, video, mode="wti", block=CHUNK)
            result = {"full": scores}
            pairs = scores.numel()
        else:
            outs = [simple_block_loop_scores(t, v, mode="wti", block=CHUNK) for t, v in parts]
            result = {"chunks": [(ti, vi, o) for (ti, vi), o in zip(chunks, outs, strict=True)]}
            pairs = sum(o.numel() for o in outs)
        wall = time.perf_counter() - t0
        torch.save(result, job["out"])
    peak = _peak(reset)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "pairs": pairs,
                "peak_delta_bytes": peak - rss0,
                "hwm_reset": reset,
                "text_fill": text["mask"].float().mean().item(),
                "video_fill": video["mask"].float().mean().item(),
                "threads": torch.get_num_threads(),
            }
        )
    )


# ---------------------------------------------------------------------------------------------------------
# driver


def _run_worker(job: dict) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker failed for {job['shape']['name']} / {job['scorer']}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _max_diff(blocked: dict, simple: dict) -> tuple[float, int]:
    rows, bscores = blocked["rows"], blocked["scores"]
    if "full" in simple:
        if rows.numel() != simple["full"].shape[0]:
            raise SystemExit("full simple loop needs the full blocked matrix")
        diff = (bscores - simple["full"]).abs()
        return diff.max().item(), diff.numel()
    pos = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long)
    pos[rows] = torch.arange(rows.numel())
    worst, count = 0.0, 0
    for ti, vi, out in simple["chunks"]:
        if bool((pos[ti] < 0).any()):
            raise SystemExit("a simple-loop chunk uses a text the blocked run did not score")
        ref = bscores[pos[ti]][:, vi]
        worst = max(worst, (ref - out).abs().max().item())
        count += out.numel()
    return worst, count


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes for a fast check")
    parser.add_argument("--budget-mb", type=float, default=256.0, help="blocked scorer's memory budget (MiB)")
    parser.add_argument(
        "--block-mb", type=float, default=0.0, help="blocked scorer's block size (MiB); 0 = its default"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run; 0 = torch default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated dataset names to run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return

    shapes = DATASETS["quick" if args.quick else "full"]
    if args.only:
        wanted = set(args.only.split(","))
        shapes = [s for s in shapes if s.name in wanted]
    print(
        f"# bench_tokenwise: WTI, D={D}, fp32, blocked scorer budget {args.budget_mb:g} MiB, block "
        f"{f'{args.block_mb:g} MiB' if args.block_mb else 'default (32 MiB on CPU)'}, "
        f"threads {args.threads if args.threads > 0 else 'default'}, seed {args.seed}"
        f"{' (quick)' if args.quick else ''}"
    )
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPU(s): {_cpu_name()}, load avg {os.getloadavg()}")
    header = f"{'dataset':<13} {'scorer':<15} {'pairs run':>12} {'time s':>8} {'pairs/s':>11} {'peak MB':>8}  note"
    print(header)
    print("-" * len(header))
    failed = False
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            total = shape.n_text * shape.n_video
            res, outs = {}, {}
            for scorer in ("blocked", "simple"):
                out = str(Path(tmp) / f"{shape.name}-{scorer}.pt")
                job = {
                    "shape": asdict(shape),
                    "scorer": scorer,
                    "seed": args.seed,
                    "budget_mb": args.budget_mb,
                    "block_mb": args.block_mb,
                    "threads": args.threads,
                    "out": out,
                }
                res[scorer] = _run_worker(job)
                outs[scorer] = torch.load(out)
            for scorer, label in (("blocked", "blocked"), ("simple", "simple 32x32")):
                r = res[scorer]
                rate = r["pairs"] / r["wall_s"]
                if r["pairs"] == total:
                    note = "full"
                else:
                    note = f"subset {r['pairs'] / total:.1%}; full run ~{total / rate:,.0f} s (extrapolated)"
                if not r["hwm_reset"]:
                    note += "; peak RSS not resettable here: memory figure includes input building"
                print(
                    f"{shape.name:<13} {label:<15} {_fmt_int(r['pairs']):>12} {r['wall_s']:>8.2f} "
                    f"{_fmt_int(rate):>11} {r['peak_delta_bytes'] / 2**20:>8.1f}  {note}"
                )
            diff, checked = _max_diff(outs["blocked"], outs["simple"])
            ratio = (res["blocked"]["pairs"] / res["blocked"]["wall_s"]) / (
                res["simple"]["pairs"] / res["simple"]["wall_s"]
            )
            ok = diff <= 1e-5
            failed |= not ok
            print(
                f"{'':<13} -> {shape.n_text:,} x {shape.n_video:,} ({shape.max_words} words x "
                f"{shape.max_frames} frames; valid fill text {res['blocked']['text_fill']:.0%}, "
                f"video {res['blocked']['video_fill']:.0%}): blocked/simple throughput {ratio:.1f}x; "
                f"max |diff| {diff:.1e} on {checked:,} pairs {'OK' if ok else 'MISMATCH'}"
            )
    print(f"# total wall {time.perf_counter() - start:.0f} s, load avg {os.getloadavg()}")
    if failed:
        raise SystemExit("blocked and simple scores differ by more than 1e-5")


if __name__ == "__main__":
    main()
