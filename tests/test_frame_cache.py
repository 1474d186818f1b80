"""Frame cache: equal to load_clip bit for bit, reused without decoding, keyed on its inputs, atomic."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import vidbench.data.frame_cache as fc
from vidbench.data.frame_cache import FrameCache, cache_key
from vidbench.data.types import VideoRef
from vidbench.data.video import load_clip
from vidbench.data.video_writer import write_video
from vidbench.errors import DataError

PARAMS = {"max_frames": 4, "size": 16}


def pattern(n: int, h: int, w: int, seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = ((xx * 5 + yy * 2 + 3 * i + 40 * seed) % 256)[..., None]
    return frames


@pytest.fixture()
def refs(tmp_path) -> list[VideoRef]:
    good_a = write_video(tmp_path / "a.mp4", pattern(100, 48, 64, 0), fps=25, gop=40)
    good_b = write_video(tmp_path / "b.mkv", pattern(70, 64, 48, 1), fps=30)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    data = good_a.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "readme.mp4"
    text.write_text("not a video\n" * 50)
    return [
        VideoRef("a", good_a),
        VideoRef("gone", None),
        VideoRef("b_window", good_b, start_s=1.0, end_s=2.0),
        VideoRef("empty", empty),
        VideoRef("truncated", truncated),
        VideoRef("text", text),
        VideoRef("elsewhere", tmp_path / "not_there.mp4"),
    ]


def test_cache_equals_load_clip_and_records_failures(tmp_path, refs, capsys):
    cache = FrameCache.build(tmp_path / "cache", refs, **PARAMS)
    assert len(cache) == len(refs) and cache.path == tmp_path / "cache" / cache.key
    assert [cache.status(i) for i in range(len(refs))] == [
        "ok", "missing", "ok", "undecodable", "undecodable", "undecodable", "missing",
    ]  # fmt: skip
    for i in (0, 2):
        ref = refs[i]
        frames, mask = cache.get(i)
        want_frames, want_mask = load_clip(ref.path, start_s=ref.start_s, end_s=ref.end_s, **PARAMS)
        assert frames.dtype == torch.uint8 and mask.dtype == torch.long
        assert torch.equal(frames, want_frames) and torch.equal(mask, want_mask)
    assert cache.get(2)[1].tolist() == [1, 1, 0, 0]  # window 1..2 s of a 30 fps clip: frames 30 and 60
    failures = cache.failures()
    assert set(failures) == {"gone", "empty", "truncated", "text", "elsewhere"}
    assert "empty" in failures["empty"] and "cannot open" in failures["truncated"]
    assert "not_there.mp4" in failures["elsewhere"]
    with pytest.raises(DataError, match=r"'truncated' \(row 4\) is undecodable"):
        cache.get(4)
    assert "7/7 clips (100%), 5 failed" in capsys.readouterr().err


def test_second_build_reuses_without_decoding(tmp_path, refs, monkeypatch):
    first = FrameCache.build(tmp_path / "cache", refs, **PARAMS, progress=False)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(fc, "load_clip", no_decoding)
    second = FrameCache.build(tmp_path / "cache", refs, **PARAMS, progress=False)
    assert second.key == first.key and second.path == first.path
    assert torch.equal(second.get(0)[0], first.get(0)[0])
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [first.key]


def test_key_follows_every_input(refs):
    params = {"max_frames": 4, "size": 16, "framerate": 1.0, "slice_framepos": 2, "fps_mode": "int"}
    base = cache_key(refs, params)
    assert cache_key(refs, dict(params)) == base
    changes = [
        {"max_frames": 5},
        {"size": 32},
        {"framerate": 2.0},
        {"slice_framepos": 0},
        {"fps_mode": "exact"},
        {"fps_mode": "stride"},  # DRL's sampling rule: other frames, another cache
    ]
    for change in changes:
        assert cache_key(refs, params | change) != base, change
    assert cache_key(refs[:-1], params) != base
    assert cache_key([VideoRef("a", refs[0].path, start_s=1.0)] + refs[1:], params) != base
    st = refs[0].path.stat()
    os.utime(refs[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a replaced or touched video
    assert cache_key(refs, params) != base


def test_changed_parameter_builds_a_new_cache(tmp_path, refs):
    a = FrameCache.build(tmp_path / "cache", refs[:1], **PARAMS, progress=False)
    b = FrameCache.build(
        tmp_path / "cache", refs[:1], max_frames=4, size=16, slice_framepos=0, progress=False
    )
    assert a.key != b.key and a.path.is_dir() and b.path.is_dir()


def test_crash_mid_build_leaves_nothing_that_looks_complete(tmp_path, refs, monkeypatch):
    calls = {"n": 0}
    real = fc.load_clip

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a job killed mid-build
        return real(*args, **kwargs)

    monkeypatch.setattr(fc, "load_clip", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        FrameCache.build(tmp_path / "cache", refs, **PARAMS, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    cache = FrameCache.build(tmp_path / "cache", refs, **PARAMS, progress=False)
    assert cache.status(0) == "ok" and cache.status(2) == "ok"


def test_parallel_build_is_order_preserving_and_pickles(tmp_path, refs):
    serial = FrameCache.build(tmp_path / "serial", refs, **PARAMS, progress=False)
    parallel = FrameCache.build(tmp_path / "parallel", refs, **PARAMS, num_workers=2, progress=False)
    assert parallel.key == serial.key
    assert [parallel.status(i) for i in range(len(refs))] == [serial.status(i) for i in range(len(refs))]
    for i in (0, 2):
        assert torch.equal(parallel.get(i)[0], serial.get(i)[0])
    clone = pickle.loads(pickle.dumps(parallel))  # what a spawned DataLoader worker receives
    assert clone._frames is None and torch.equal(clone.get(2)[0], serial.get(2)[0])


def test_cache_files_on_disk(tmp_path, refs):
    cache = FrameCache.build(tmp_path / "cache", refs[:3], **PARAMS, progress=False)
    frames = np.load(Path(cache.path) / "frames.npy", mmap_mode="r")
    assert frames.shape == (3, 4, 3, 16, 16) and frames.dtype == np.uint8
    assert not frames[1].any()  # the missing video's row stays zero; get() refuses it
    with pytest.raises(IndexError):
        cache.get(3)
    with pytest.raises(ValueError, match="at least one video"):
        FrameCache.build(tmp_path / "cache", [], **PARAMS)


def test_bad_settings_fail_the_build_not_every_clip(tmp_path, refs):
    with pytest.raises(ValueError, match="slice_framepos=7"):
        FrameCache.build(tmp_path / "cache", refs, max_frames=4, size=16, slice_framepos=7)
    with pytest.raises(ValueError, match="size=0"):
        FrameCache.build(tmp_path / "cache", refs, max_frames=4, size=0)
    assert not (tmp_path / "cache").exists()
