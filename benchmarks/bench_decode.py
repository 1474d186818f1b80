"""What one clip costs to load: keyframe seeks vs decoding everything vs reading the frame cache.

Writes a synthetic clip (mpeg4, 224x224, 30 fps, one keyframe per second by default) to a temporary folder,
then times producing what a dataset hands the model for it: 12 frames sampled at 1 fps and sliced
uniformly, CLIP-resized to uint8 ``[12, 3, 224, 224]`` with a mask, exactly as ``load_clip`` does:

  (a) ``load_clip``: keyframe seek + decode forward to each of the 12 targets, then resize;
  (b) ``decode_all_frames`` then index the 12 frames, then resize (what a sequential reader does);
  (b') decode frames in order up to the last target, converting only the 12 to RGB (cheapest without seeks);
  (c) ``FrameCache.get`` from the memory-mapped cache built once beforehand (later epochs, evaluation).

All must return identical tensors (asserted). Timings are medians over ``--runs`` repetitions with
one torch thread, as inside a DataLoader worker.

    .venv/bin/python benchmarks/bench_decode.py [--seconds 60] [--gop 30] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from vidbench.data.frame_cache import FrameCache
from vidbench.data.sampling import frame_mask, sample_frame_indices
from vidbench.data.transforms import resize_center_crop
from vidbench.data.types import VideoRef
from vidbench.data.video import decode_all_frames, load_clip, probe_video
from vidbench.data.video_writer import write_video

MAX_FRAMES, SIZE, FPS = 12, 224, 30


def synthetic_frames(n: int, size: int) -> np.ndarray:
    """Moving ramps, a sliding block and fixed texture: compresses like real footage, no scene cuts."""
    yy, xx = np.mgrid[0:size, 0:size]
    texture = np.random.default_rng(0).integers(0, 40, (size, size))
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xx + i) % 256
        frames[i, ..., 1] = (2 * yy + texture) % 256
        frames[i, ..., 2] = (xx + yy + 2 * i) % 256
        x0 = (3 * i) % (size - 40)
        frames[i, 60:100, x0 : x0 + 40] = 255
    return frames


def decode_all_then_index(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    info = probe_video(path)
    indices = sample_frame_indices(info.num_frames, info.fps, MAX_FRAMES)
    frames = decode_all_frames(path)[indices]
    video = torch.zeros((MAX_FRAMES, 3, SIZE, SIZE), dtype=torch.uint8)
    video[: len(indices)] = resize_center_crop(torch.from_numpy(frames), SIZE)
    return video, frame_mask(len(indices), MAX_FRAMES)


def sequential_scan(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every frame but convert only the sampled ones to RGB: the cheapest reader without seeking."""
    info = probe_video(path)
    indices = sample_frame_indices(info.num_frames, info.fps, MAX_FRAMES)
    wanted, picked = set(indices), {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                picked[i] = frame.to_ndarray(format="rgb24")
            if i >= indices[-1]:
                break
    video = torch.zeros((MAX_FRAMES, 3, SIZE, SIZE), dtype=torch.uint8)
    video[: len(indices)] = resize_center_crop(torch.from_numpy(np.stack([picked[i] for i in indices])), SIZE)
    return video, frame_mask(len(indices), MAX_FRAMES)


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up: page cache, lazy imports, memmap open
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="clip length in seconds")
    parser.add_argument("--gop", type=int, default=30, help="keyframe interval in frames")
    parser.add_argument("--runs", type=int, default=7, help="timed repetitions per method")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        t0 = time.perf_counter()
        write_video(path, synthetic_frames(args.seconds * FPS, SIZE), fps=FPS, gop=args.gop)
        write_s = time.perf_counter() - t0
        info = probe_video(path)
        indices = sample_frame_indices(info.num_frames, info.fps, MAX_FRAMES)

        def seek() -> tuple[torch.Tensor, torch.Tensor]:
            return load_clip(path, max_frames=MAX_FRAMES, size=SIZE)

        t0 = time.perf_counter()
        refs = [VideoRef("clip", path)]
        cache = FrameCache.build(Path(tmp) / "cache", refs, max_frames=MAX_FRAMES, size=SIZE, progress=False)
        build_s = time.perf_counter() - t0

        a = seek()
        for other in (decode_all_then_index(path), sequential_scan(path), cache.get(0)):
            assert torch.equal(a[0], other[0]) and torch.equal(a[1], other[1]), "methods disagree"

        seek_ms = median_ms(seek, args.runs)
        all_ms = median_ms(lambda: decode_all_then_index(path), max(3, args.runs // 2))
        scan_ms = median_ms(lambda: sequential_scan(path), max(3, args.runs // 2))
        cache_ms = median_ms(lambda: cache.get(0), args.runs * 5)

    codec_lib = ".".join(map(str, av.library_versions["libavcodec"]))
    rows = [
        ("(a) keyframe seek + decode forward", seek_ms),
        ("(b) decode all frames, then index", all_ms),
        ("(b') decode all, convert only the 12", scan_ms),
        ("(c) frame cache (memmap read)", cache_ms),
    ]
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"PyAV {av.__version__} (libavcodec {codec_lib}), torch {torch.__version__} (1 thread)",
        f"clip: {info.num_frames} frames, {info.width}x{info.height}, {info.fps:g} fps, mpeg4, "
        f"GOP {args.gop} frames; written in {write_s:.1f} s; frame cache built in {build_s * 1000:.0f} ms",
        f"sampled: {len(indices)} frames at {indices} -> uint8 [{MAX_FRAMES}, 3, {SIZE}, {SIZE}] + mask",
        "all methods returned identical frames and masks",
        "",
        "| method (ms per clip)                 | median ms |  min ms |",
        "|--------------------------------------|----------:|--------:|",
        *(f"| {name:<36} | {med:9.2f} | {low:7.2f} |" for name, (med, low) in rows),
        "",
        f"decode-all / seek: {all_ms[0] / seek_ms[0]:.1f}x (decode-all without the RGB conversions: "
        f"{scan_ms[0] / seek_ms[0]:.1f}x)",
        f"seek / cache: {seek_ms[0] / cache_ms[0]:.1f}x",
    ]
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
