"""Peak memory and step time of one CLIP4Clip (meanP) training step per ``trainer.contrastive_chunk``.

    .venv/bin/python benchmarks/bench_memory.py                 # CPU, reduced-width CLIP (shapes printed)
    .venv/bin/python benchmarks/bench_memory.py --gpu           # GPU: ViT-B/32, 12 and 64 frames, bf16

One step = the method's ``training_step`` path (chunked: gradient caching, vidbench/methods/grad_cache.py)
+ backward + AdamW, on random uint8 frames at the model's size and random captions, at the recipe's batch
(128). Every configuration runs in a fresh subprocess. Peak memory: on GPU ``torch.cuda.max_memory_allocated``
over the step (weights, gradients and AdamW state included); on CPU the growth of the process's peak resident
set over the step above the resident set before it (activations, gradients, AdamW state; the weights are
printed apart). The largest batch per memory size comes from the measured curve: peak(B, C) is fitted as
``fixed + a * min(C, B) + b * B`` from the runs at B = 128 (every chunk) and one run at B = 64 (chunk 8).
With ``--write`` the table replaces this mode's (cpu / gpu) section between its markers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

def markers(gpu: bool) -> tuple[str, str]:
    """The README section this mode owns (the CPU and the GPU tables live side by side)."""
    mode = "gpu" if gpu else "cpu"
    return f"<!-- bench_memory:{mode}:begin -->", f"<!-- bench_memory:{mode}:end -->"

CHUNKS = (None, 64, 32, 16, 8)
GIB = 2**30

# Reduced for CPU (a small shared machine): 2 layers of width 96 (vision) / 64 (text), 64x64 frames, 16 patches each.
CPU_ARCH = {
    "text_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4},
    "vision_config": {
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 16,
    },
    "projection_dim": 64,
}
GPU_ARCH = {  # ViT-B/32 (random init: memory and time do not depend on the weights)
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "vocab_size": 49408,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
    "projection_dim": 512,
}


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def one_config(gpu: bool, frames: int, batch: int, chunk: int | None, steps: int, words: int) -> dict:
    """Runs in its own process: build, one measured step (peak), ``steps`` timed steps (median)."""
    from vidbench.config import compose
    from vidbench.methods import build_method
    from vidbench.models.clip import ClipBackbone

    if not gpu:
        torch.set_num_threads(1)  # small matrices: one thread is faster and far steadier on a shared machine
    device = torch.device("cuda" if gpu else "cpu")
    overrides = [f"data.max_frames={frames}", f"data.batch_size={batch}"]
    if chunk:
        overrides.append(f"trainer.contrastive_chunk={chunk}")
    cfg = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", overrides)
    torch.manual_seed(0)
    method = build_method(cfg)
    method.clip = ClipBackbone("tiny", tiny_overrides=GPU_ARCH if gpu else CPU_ARCH)
    method.to(device).train()
    size, vocab = method.clip.image_size, method.clip.model.config.text_config.vocab_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab - 2, (batch, words), generator=g)
    ids[:, 0], ids[:, -1] = vocab - 2, vocab - 1
    b = {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(batch, words, dtype=torch.long, device=device),
        "video": torch.randint(0, 256, (batch, frames, 3, size, size), generator=g, dtype=torch.uint8).to(device),
        "video_mask": torch.ones(batch, frames, dtype=torch.long, device=device),
        "index": torch.arange(batch, device=device),
    }
    opt = torch.optim.AdamW(method.parameters(), lr=1e-5)
    weights = sum(p.numel() * p.element_size() for p in method.parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            if chunk:
                _, loss = method.chunked_loss_terms(b, chunk)
                method.on_before_backward(loss)
            else:
                loss = torch.stack(list(method.global_loss_terms(b).values())).sum()
        loss.backward()
        opt.step()
        if gpu:
            torch.cuda.synchronize()

    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_now_bytes()
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if gpu else _rss_peak_bytes() - before
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "frames": frames,
        "batch": batch,
        "chunk": chunk,
        "peak_bytes": int(peak),
        "weights_bytes": int(weights),
        "step_s": statistics.median(times) if times else first,
        "image_size": size,
    }


def run_sub(args: argparse.Namespace, frames: int, batch: int, chunk: int | None) -> dict:
    cmd = [sys.executable, __file__, "--one", json.dumps([frames, batch, chunk]), "--steps", str(args.steps)]
    cmd += ["--words", str(args.words)] + (["--gpu"] if args.gpu else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        if "out of memory" in out.stderr.lower():
            return {"frames": frames, "batch": batch, "chunk": chunk, "oom": True}
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_curve(rows: list[dict], full: int) -> tuple[float, float, float] | None:
    """(fixed, a, b) of peak = fixed + a * min(C, B) + b * B from the runs that fit in memory."""
    import numpy as np

    ok = [r for r in rows if not r.get("oom")]
    if len(ok) < 3:
        return None
    x = np.array([[1.0, min(r["chunk"] or r["batch"], r["batch"]), r["batch"]] for r in ok])
    y = np.array([r["peak_bytes"] for r in ok], dtype=float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


def largest_batch(curve: tuple[float, float, float], budget: float, chunk: int | None) -> int:
    fixed, a, b = curve
    if chunk is None:
        return max(0, int((budget - fixed) / (a + b)))
    n = int((budget - fixed - a * chunk) / b) if b > 0 else 10**9
    return max(0, n)


def table(rows: list[dict], curve, gpu: bool, full: int) -> list[str]:
    lines = ["| frames | batch | chunk | peak GiB | step s | largest batch @ 24 / 40 / 80 GiB |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        chunk = "off" if r["chunk"] is None else str(r["chunk"])
        if r.get("oom"):
            lines.append(f"| {r['frames']} | {r['batch']} | {chunk} | OOM | — | — |")
            continue
        fits = "—"
        if curve is not None and r["batch"] == full:
            fits = " / ".join(str(largest_batch(curve, g * GIB, r["chunk"])) for g in (24, 40, 80))
        lines.append(
            f"| {r['frames']} | {r['batch']} | {chunk} | {r['peak_bytes'] / GIB:.3f} | {r['step_s']:.2f} | {fits} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="ViT-B/32 in bf16 on the GPU, 12 and 64 frames")
    ap.add_argument("--batch", type=int, default=128, help="the recipe's batch (per device)")
    ap.add_argument("--frames", type=int, nargs="*", default=None, help="default: 12 (CPU); 12 64 (GPU)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after the measured one")
    ap.add_argument("--words", type=int, default=32)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        frames, batch, chunk = json.loads(args.one)
        print(json.dumps(one_config(args.gpu, frames, batch, chunk, args.steps, args.words)))
        return
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device visible")
    frames_list = args.frames or ([12, 64] if args.gpu else [12])
    arch = GPU_ARCH if args.gpu else CPU_ARCH
    if args.gpu:
        where = f"GPU {torch.cuda.get_device_name(0)}, bf16 autocast"
    else:
        where = f"CPU {platform.machine()}, 1 torch thread, float32"
    header = [
        f"machine: {where}; torch {torch.__version__}",
        f"model: CLIP4Clip meanP, random-init CLIP: vision {json.dumps(arch['vision_config'])}, "
        f"text {json.dumps(arch['text_config'])}, projection {arch['projection_dim']}; captions of {args.words} tokens",
        "peak: " + ("torch.cuda.max_memory_allocated over one step" if args.gpu else
                    "growth of the peak resident set over one step (weights excluded, printed below)"),
    ]
    lines: list[str] = []
    for frames in frames_list:
        rows = [run_sub(args, frames, args.batch, c) for c in CHUNKS]
        rows.append(run_sub(args, frames, args.batch // 2, 8))
        for r in rows:
            print(json.dumps(r), flush=True)
        curve = fit_curve(rows, args.batch)
        lines += table(rows, curve, args.gpu, args.batch)
        if curve is not None:
            fixed, a, b = curve
            lines.append(
                f"\nfit ({frames} frames): peak = {fixed / GIB:.3f} GiB + {a / 2**20:.2f} MiB x min(chunk, batch) "
                f"+ {b / 2**20:.3f} MiB x batch; weights {rows[0].get('weights_bytes', 0) / 2**20:.1f} MiB\n"
            )
    text = "\n".join([*header, "", *lines])
    print(text)
    if args.write:
        readme = HERE / "README.md"
        begin, end = markers(args.gpu)
        old = readme.read_text()
        command = ".venv/bin/python benchmarks/bench_memory.py" + (" --gpu" if args.gpu else "")
        block = f"{begin}\n```\n{command}\n```\n\n{text}\n{end}"
        if begin in old:
            new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
        else:
            new = old.rstrip() + "\n\n" + block + "\n"
        from vidbench.io import write_text_atomic

        write_text_atomic(readme, new)


if __name__ == "__main__":
    main()
