"""Write uint8 frames to a real video container with PyAV (test fixtures and the synthetic benchmark)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 30,
    codec: str = "mpeg4",
    gop: int | None = None,
    bit_rate: int | None = None,
) -> Path:
    """Encode ``frames`` (``[N, H, W, 3]`` uint8 RGB) into ``path``; the container follows the suffix.

    ``gop`` is the keyframe interval in frames (default: one keyframe per second), which decides how far a
    keyframe seek lands from its target. Width and height must be even for yuv420p.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size {w}x{h} must be even for yuv420p")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "mp4" if path.suffix.lower() not in {".avi", ".mkv", ".webm", ".mov"} else None
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = gop or fps
        # one encoder thread: the mpeg4 encoder cuts a slice per thread, so the thread count would
        # otherwise change the bytes (and decoded pixels) from one machine to the next
        stream.codec_context.thread_count = 1
        if bit_rate:
            stream.bit_rate = bit_rate
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
