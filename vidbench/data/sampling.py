"""Which frames of a clip to decode: pure index arithmetic, no I/O, shared by every dataset.

The rules follow CLIP4Clip's cv2 reader (``RawVideoExtractorCV2``) so that a clip sampled here picks the
same frame indices the reference picked; ``fps_mode="exact"`` is offered for users who prefer the real
frame rate over the reference's truncated one. ``fps_mode="stride"`` is DRL's decord loader instead (a fixed
stride of ``round(fps / framerate)`` frames), which picks different frames on non-integer rates: 10 frames
``[0, 30, ..., 270]`` of a 300-frame clip at 29.97 fps where the cv2 rule picks 11, ``[0, 29, ..., 290]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SLICE_HEAD, SLICE_TAIL, SLICE_UNIFORM = 0, 1, 2
FPS_MODES = ("int", "exact", "stride")


def sample_frame_indices(
    num_frames: int,
    fps: float,
    max_frames: int,
    framerate: float = 1.0,
    slice_framepos: int = 2,
    start_s: float | None = None,
    end_s: float | None = None,
    fps_mode: str = "int",
) -> list[int]:
    """Frame indices (increasing, all ``< num_frames``, at most ``max_frames``) to read from one clip.

    Rules, in order (reference = CLIP4Clip's cv2 reader):

    1. **Rate.** ``fps_mode="int"`` truncates the frame rate to an integer (29.97 -> 29) and uses it for
       every time -> index conversion, as the reference does (so sampling drifts slightly on NTSC rates);
       a rate below 1 is raised to 1. ``fps_mode="exact"`` uses the real ``fps``.
    2. **Duration** in whole seconds: ``ceil(num_frames / rate)``.
    3. **Window.** Without ``start_s``/``end_s`` the clip spans seconds ``0 .. duration``. With a window,
       both ends are truncated to whole seconds (``int``), negative values become 0, an end past the clip
       is clamped to ``duration`` and a start past the clip to its last second (a window never yields
       nothing). The end second is *inclusive* like the reference's loop. ``start_s > end_s`` is an error.
    4. **Per second.** For each second ``sec`` of the window take ``framerate`` frames. With an integral
       ``framerate`` k in int mode these are ``sec * rate + j * (rate // k)`` for ``j < k`` (k=1: the first
       frame of each second); a k above the rate takes every frame of the second (the reference asserts
       instead). Otherwise (fractional ``framerate`` or exact mode) the frames are at times
       ``start + j / framerate`` seconds, index ``int(t * rate)``, deduplicated.
    5. **Past the end.** Indices ``>= num_frames`` are dropped (the reference's read simply fails there), so
       a clip shorter than one second gives ``[0]``.
    6. **Too many.** If more than ``max_frames`` remain, ``slice_framepos`` keeps 0 = the first
       ``max_frames``, 1 = the last ``max_frames``, 2 = ``np.linspace(0, n - 1, max_frames)`` truncated
       toward 0 (what every published script uses).

    ``fps_mode="stride"`` replaces rules 1-5 by DRL's decord loader, see :func:`stride_frame_indices`.

    Fewer than ``max_frames`` indices is normal for short clips; :func:`frame_mask` marks the padding.
    """
    _check_args(num_frames, fps, max_frames, framerate, slice_framepos, fps_mode)
    if fps_mode == "stride":
        indices = stride_frame_indices(num_frames, fps, framerate, start_s, end_s)
        return _slice(indices, max_frames, slice_framepos)
    rate: float = float(max(1, int(fps))) if fps_mode == "int" else float(fps)
    duration = math.ceil(num_frames / rate)
    start_sec, end_sec = _window_seconds(duration, start_s, end_s)

    if fps_mode == "int" and float(framerate).is_integer():
        k = int(framerate)
        r = int(rate)
        offsets = list(range(r)) if k >= r else [j * (r // k) for j in range(k)]
        candidates = [sec * r + off for sec in range(start_sec, end_sec + 1) for off in offsets]
    else:
        step = 1.0 / framerate
        n_steps = math.ceil((end_sec + 1 - start_sec) * framerate - 1e-9)
        candidates = list(dict.fromkeys(int((start_sec + j * step) * rate + 1e-9) for j in range(n_steps)))

    indices = [i for i in candidates if i < num_frames]
    return _slice(indices, max_frames, slice_framepos)


def stride_frame_indices(
    num_frames: int, fps: float, framerate: float = 1.0, start_s: float | None = None, end_s: float | None = None
) -> list[int]:
    """DRL's decord rule, before the slicing down to ``max_frames``: every ``round(fps / int(framerate))``-th
    frame of ``[start * fps, min(end * fps, num_frames - 1)]`` (both ends inclusive, truncated to integers).

    Without a window the range is the whole clip. A window's ends are truncated to whole seconds and negative
    values become 0, as the reference does; an equal start and end widen the end by one second (reference);
    ``start_s > end_s`` is an error (the reference swaps them silently); a start past the clip's last frame
    gives the last frame (the reference returns an empty clip there).
    """
    rate = max(1, int(framerate))
    stride = max(1, int(round(float(fps) / rate)))
    last = num_frames - 1
    if start_s is None and end_s is None:
        first, stop = 0, last
    else:
        start = 0 if start_s is None else max(0, int(start_s))
        end = None if end_s is None else max(0, int(end_s))
        if end is not None and start > end:
            raise ValueError(f"window start_s={start_s} is after end_s={end_s}; give start_s <= end_s")
        if end is not None and end == start:
            end = start + 1
        first = int(start * fps)
        stop = last if end is None else int(min(end * fps, last))
        first = min(first, stop)
    return list(range(first, stop + 1, stride))


def check_sampling_args(max_frames: int, framerate: float, slice_framepos: int, fps_mode: str) -> None:
    """Raise ValueError for sampling settings no clip could satisfy (a config error, not a video's fault)."""
    _check_args(1, 1.0, max_frames, framerate, slice_framepos, fps_mode)


def frame_mask(n_valid: int, max_frames: int) -> torch.Tensor:
    """``[max_frames]`` long mask: 1 for the ``n_valid`` real frames, then 0 for the zero padding."""
    if not 0 <= n_valid <= max_frames:
        raise ValueError(f"n_valid={n_valid} must lie in [0, max_frames={max_frames}]")
    mask = torch.zeros(max_frames, dtype=torch.long)
    mask[:n_valid] = 1
    return mask


def _check_args(
    num_frames: int, fps: float, max_frames: int, framerate: float, slice_framepos: int, fps_mode: str
) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: a clip needs at least one frame")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps={fps} must be a positive number (a 0 fps usually means a broken header)")
    if max_frames < 1:
        raise ValueError(f"max_frames={max_frames} must be >= 1")
    if not (framerate > 0 and math.isfinite(framerate)):
        raise ValueError(f"framerate={framerate} must be a positive number of frames per second")
    if slice_framepos not in (SLICE_HEAD, SLICE_TAIL, SLICE_UNIFORM):
        raise ValueError(f"slice_framepos={slice_framepos} must be 0 (head), 1 (tail) or 2 (uniform)")
    if fps_mode not in FPS_MODES:
        raise ValueError(f"fps_mode={fps_mode!r} must be one of {FPS_MODES}")
    if fps_mode == "stride" and framerate < 1:
        raise ValueError(f"framerate={framerate}: fps_mode='stride' (DRL's rule) takes a whole number >= 1 of frames/s")


def _window_seconds(duration: int, start_s: float | None, end_s: float | None) -> tuple[int, int]:
    """Whole-second window ``[start, end]`` (inclusive) clamped to a clip of ``duration`` seconds."""
    if start_s is None and end_s is None:
        return 0, duration
    start = 0.0 if start_s is None else float(start_s)
    end = float(duration) if end_s is None else float(end_s)
    if start > end:
        raise ValueError(f"window start_s={start_s} is after end_s={end_s}; give start_s <= end_s")
    start_sec = min(max(0, int(start)), duration - 1)
    end_sec = max(min(max(0, int(end)), duration), start_sec)
    return start_sec, end_sec


def _slice(indices: list[int], max_frames: int, slice_framepos: int) -> list[int]:
    if len(indices) <= max_frames:
        return indices
    if slice_framepos == SLICE_HEAD:
        return indices[:max_frames]
    if slice_framepos == SLICE_TAIL:
        return indices[-max_frames:]
    picks = np.linspace(0, len(indices) - 1, num=max_frames, dtype=int)
    return [indices[p] for p in picks]
