"""Frame samplers against hand-worked cases and a brute-force copy of the reference's read loop."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from vidbench.data.sampling import frame_mask, sample_frame_indices


def reference_cv2_loop(num_frames, fps, max_frames, framerate, slice_framepos, start_s=None, end_s=None):
    """The CLIP4Clip cv2 reader's index arithmetic, written out as a loop (integral framerate, int fps)."""
    fps_i = int(fps)
    total = (num_frames + fps_i - 1) // fps_i
    start_sec, end_sec = 0, total
    if start_s is not None:
        start_sec, end_sec = int(start_s), min(int(end_s), total)
    interval = max(fps_i // framerate, 1)
    inds = list(range(0, fps_i, interval))[:framerate]
    picked = []
    for sec in range(start_sec, end_sec + 1):
        for ind in inds:
            idx = sec * fps_i + ind
            if idx >= num_frames:  # cap.read() fails: the reference stops reading
                break
            picked.append(idx)
    if len(picked) > max_frames:
        if slice_framepos == 0:
            picked = picked[:max_frames]
        elif slice_framepos == 1:
            picked = picked[-max_frames:]
        else:
            picked = [picked[i] for i in np.linspace(0, len(picked) - 1, num=max_frames, dtype=int)]
    return picked


def test_one_per_second_then_uniform_slice():
    # 60 s at 30 fps -> 60 candidates (0, 30, ..., 1770); uniform picks linspace(0, 59, 12) truncated.
    got = sample_frame_indices(1800, 30.0, 12)
    picks = [0, 5, 10, 16, 21, 26, 32, 37, 42, 48, 53, 59]
    assert got == [30 * p for p in picks]


def test_head_and_tail_slices():
    assert sample_frame_indices(1800, 30.0, 4, slice_framepos=0) == [0, 30, 60, 90]
    assert sample_frame_indices(1800, 30.0, 4, slice_framepos=1) == [1680, 1710, 1740, 1770]


def test_int_fps_truncation_and_exact_mode():
    # 29.97 fps is read as 29 in the reference: seconds map to multiples of 29, so sampling drifts.
    got = sample_frame_indices(300, 29.97, 20)
    assert got == [29 * s for s in range(11)]  # ceil(300 / 29) = 11 seconds; 11 * 29 = 319 >= 300 dropped
    exact = sample_frame_indices(300, 29.97, 20, fps_mode="exact")
    assert exact == [int(s * 29.97) for s in range(11)]
    assert exact[-1] == 299 and got[-1] == 290


def test_short_clips_never_empty():
    assert sample_frame_indices(1, 30.0, 12) == [0]
    assert sample_frame_indices(10, 30.0, 12) == [0]
    assert sample_frame_indices(31, 30.0, 12) == [0, 30]
    assert sample_frame_indices(5, 0.5, 12) == [0, 1, 2, 3, 4]  # fps below 1 counts as 1 in int mode


def test_window_is_whole_seconds_inclusive_and_clamped():
    assert sample_frame_indices(600, 30.0, 64, start_s=2.7, end_s=5.2) == [60, 90, 120, 150]
    assert sample_frame_indices(600, 30.0, 64, start_s=18, end_s=99) == [540, 570]  # end clamped to 20 s
    assert sample_frame_indices(600, 30.0, 64, start_s=-3, end_s=1) == [0, 30]
    assert sample_frame_indices(600, 30.0, 64, start_s=4, end_s=4) == [120]
    assert sample_frame_indices(600, 30.0, 64, start_s=50, end_s=80) == [570]  # past the end: last second
    assert sample_frame_indices(600, 30.0, 64, end_s=1.5) == [0, 30]
    assert sample_frame_indices(600, 30.0, 64, start_s=19) == [570]


def test_bad_window_names_the_values():
    with pytest.raises(ValueError, match=r"start_s=7.5 is after end_s=3"):
        sample_frame_indices(600, 30.0, 12, start_s=7.5, end_s=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_frames": 0}, "num_frames=0"),
        ({"fps": 0.0}, "fps=0.0"),
        ({"fps": float("nan")}, "fps=nan"),
        ({"max_frames": 0}, "max_frames=0"),
        ({"framerate": 0}, "framerate=0"),
        ({"slice_framepos": 3}, "slice_framepos=3"),
        ({"fps_mode": "float"}, "fps_mode='float'"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"num_frames": 100, "fps": 30.0, "max_frames": 12} | kwargs
    with pytest.raises(ValueError, match=match):
        sample_frame_indices(**args)


def test_other_framerates():
    assert sample_frame_indices(90, 30.0, 64, framerate=2) == [0, 15, 30, 45, 60, 75]
    assert sample_frame_indices(90, 29.0, 64, framerate=3)[:3] == [0, 9, 18]  # interval 29 // 3
    assert sample_frame_indices(12, 3.0, 64, framerate=5) == list(range(12))  # more than the rate: all frames
    assert sample_frame_indices(300, 30.0, 64, framerate=0.5) == [0, 60, 120, 180, 240]
    assert sample_frame_indices(300, 30.0, 64, framerate=0.5, start_s=1, end_s=4) == [30, 90]


def test_matches_reference_loop_on_random_cases():
    rng = random.Random(0)
    for _ in range(2000):
        fps = rng.choice([1.0, 3.0, 12.5, 24.0, 25.0, 29.97, 30.0, 59.94, 60.0])
        n = rng.randint(1, 3000)
        max_frames = rng.choice([1, 4, 12, 64])
        framerate = rng.choice([1, 1, 2, 3])
        slice_framepos = rng.randint(0, 2)
        window = {}
        if rng.random() < 0.4:
            dur = math.ceil(n / int(fps))
            a = rng.randint(0, max(dur - 1, 0))
            window = {"start_s": a + rng.random() * 0.9, "end_s": rng.randint(a, dur + 5) + 0.95}
        got = sample_frame_indices(n, fps, max_frames, framerate, slice_framepos, **window)
        assert got == reference_cv2_loop(n, fps, max_frames, framerate, slice_framepos, **window)
        assert got and len(got) <= max_frames and got == sorted(set(got)) and got[-1] < n


def test_exact_mode_invariants_on_random_cases():
    rng = random.Random(1)
    for _ in range(1000):
        fps = rng.uniform(0.3, 120.0)
        n = rng.randint(1, 5000)
        got = sample_frame_indices(
            n, fps, rng.choice([1, 12, 64]), rng.choice([0.25, 1.0, 2.0]), fps_mode="exact"
        )
        assert got and got == sorted(set(got)) and got[0] >= 0 and got[-1] < n


def test_frame_mask():
    assert frame_mask(3, 5).tolist() == [1, 1, 1, 0, 0]
    assert frame_mask(0, 2).tolist() == [0, 0]
    assert frame_mask(4, 4).dtype == torch.long
    with pytest.raises(ValueError, match="n_valid=5"):
        frame_mask(5, 4)
