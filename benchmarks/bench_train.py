"""Training throughput (clips/s) of CLIP4Clip with a randomly initialised CLIP (no weights needed).

    .venv/bin/python benchmarks/bench_train.py --arch vitb32 --frames 12 --batch 128 --precision bf16-mixed
    .venv/bin/python benchmarks/bench_train.py --arch tiny --frames 8 --batch 64      # CPU smoke run

One optimiser step = encode B clips x T frames and B captions, symmetric InfoNCE, backward, AdamW. Inputs
are random uint8 frames already at the model's size, so this measures the model, not decoding (see
bench_decode.py for that). Prints the median over the timed steps after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidbench.config import compose
from vidbench.methods import build_method

ARCHS = {
    "tiny": None,
    "vitb32": {
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
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    ap.add_argument("--head", choices=["meanp", "seqtransf"], default="meanp")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--words", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--precision", choices=["32", "bf16-mixed", "16-mixed"], default="32")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = compose(f"clip4clip-{args.head}_tiny_8f_b64_synth-msrvtt", ["model.clip=tiny"])
    torch.manual_seed(0)
    if ARCHS[args.arch] is not None:
        from vidbench.models.clip import ClipBackbone

        method = build_method(cfg)
        method.clip = ClipBackbone("tiny", tiny_overrides=ARCHS[args.arch])
        if method.temporal is not None:
            from vidbench.models.temporal import SeqTransf

            method.temporal = SeqTransf(method.clip.text_width, heads=method.clip.text_heads)
    else:
        method = build_method(cfg)
    method.to(device).train()
    size = method.clip.image_size
    b, t = args.batch, args.frames
    batch = {
        "input_ids": torch.randint(1, method.clip.vocab_size - 2, (b, args.words), device=device),
        "attention_mask": torch.ones(b, args.words, dtype=torch.long, device=device),
        "video": torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, device=device),
        "video_mask": torch.ones(b, t, dtype=torch.long, device=device),
    }
    batch["input_ids"][:, -1] = method.clip.vocab_size - 1
    opt = torch.optim.AdamW(method.parameters(), lr=1e-5)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(enabled=args.precision == "16-mixed")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = sum(method.global_loss_terms(batch).values())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(
        f"{args.arch} {args.head} T={t} B={b} {args.precision} on {name}: {step_s * 1e3:.0f} ms/step, "
        f"{b / step_s:.1f} clips/s{mem}"
    )


if __name__ == "__main__":
    main()
