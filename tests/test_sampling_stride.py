"""DRL's frame sampling (``fps_mode="stride"``, issue 11 item 6) against a brute force of its decord loader's
rule, and the recipes that use it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vidbench.config import compose, list_recipes
from vidbench.data.sampling import sample_frame_indices


def drl_decord_rule(num_frames, fps, max_frames, framerate=1, start_s=None, end_s=None):
    """Written from the issue text: stride round(fps / framerate) over [start*fps, min(end*fps, n-1)], then
    uniform slicing (np.linspace, truncated) down to max_frames. Window seconds are truncated, negatives -> 0,
    an equal start and end widen the end by one second."""
    if start_s is None:
        f_start, f_end = 0, num_frames - 1
    else:
        start, end = max(0, int(start_s)), max(0, int(end_s))
        if start == end:
            end += 1
        f_start, f_end = int(start * fps), int(min(end * fps, num_frames - 1))
    stride = int(round(fps / int(framerate)))
    picked = []
    pos = f_start
    while pos <= f_end:
        picked.append(pos)
        pos += stride
    if len(picked) > max_frames:
        picked = [picked[i] for i in np.linspace(0, len(picked) - 1, num=max_frames, dtype=int)]
    return picked


def test_issue_example_ntsc_rate():
    assert sample_frame_indices(300, 29.97, 12, fps_mode="stride") == list(range(0, 271, 30))  # 10 frames
    assert sample_frame_indices(300, 29.97, 12) == list(range(0, 291, 29))  # CLIP4Clip's int(fps): 11 frames


def test_stride_matches_the_rule_on_random_clips():
    rng = random.Random(0)
    for _ in range(400):
        n = rng.randint(1, 4000)
        fps = rng.choice([23.976, 24.0, 25.0, 29.97, 30.0, 59.94, 12.5, 2.0, rng.uniform(1.0, 60.0)])
        max_frames = rng.choice([1, 4, 12, 64])
        framerate = rng.choice([1, 1, 2, 3])
        window = {}
        if rng.random() < 0.4:
            duration = n / fps
            a, b = sorted(rng.uniform(-1.0, duration) for _ in range(2))
            if int(max(0, a)) * fps <= n - 1:  # a start past the clip is our own documented rule, tested below
                window = {"start_s": a, "end_s": b}
        got = sample_frame_indices(n, fps, max_frames, framerate=framerate, fps_mode="stride", **window)
        assert got == drl_decord_rule(n, fps, max_frames, framerate, **window), (n, fps, max_frames, window)


def test_stride_window_edges():
    assert sample_frame_indices(600, 30.0, 64, start_s=4, end_s=4, fps_mode="stride") == [120, 150]  # end + 1 s
    assert sample_frame_indices(600, 30.0, 64, start_s=50, end_s=80, fps_mode="stride") == [599]  # last frame
    with pytest.raises(ValueError, match="after"):
        sample_frame_indices(600, 30.0, 12, start_s=7.5, end_s=3, fps_mode="stride")
    with pytest.raises(ValueError, match="stride"):
        sample_frame_indices(600, 30.0, 12, framerate=0.5, fps_mode="stride")


def test_every_drl_recipe_uses_the_drl_rule_and_no_other_does():
    for path in list_recipes():
        cfg = compose(path)
        expected = "stride" if cfg.method.name == "drl" else "int"
        assert cfg.data.fps_mode == expected, path.name
