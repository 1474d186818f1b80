"""The synthetic benchmark: real MSRVTT/MSVD layouts, decodable videos, determinism, captions that match."""

from __future__ import annotations

import csv
import json
import pickle
import re
from pathlib import Path

import av
import numpy as np
import pytest

from vidbench.data import synthetic as S
from vidbench.errors import ConfigError, DataError

TINY = {
    "n_train": 6,
    "n_test": 4,
    "n_msvd_train": 3,
    "n_msvd_test": 3,
    "seconds": (3, 4),
    "progress": False,
}
FPS = 8
W, H = 64, 48
ANNOTATIONS = [
    "README.txt",
    "ground_truth.json",
    "msrvtt/MSRVTT_data.json",
    "msrvtt/MSRVTT_train.9k.csv",
    "msrvtt/MSRVTT_train.7k.csv",
    "msrvtt/MSRVTT_JSFUSION_test.csv",
    "msvd/train_list.txt",
    "msvd/val_list.txt",
    "msvd/test_list.txt",
    "msvd/raw-captions.pkl",
]


@pytest.fixture(scope="module")
def gens(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    a = S.generate(base / "a", seed=3, **TINY)
    b = S.generate(base / "b", seed=3, **TINY)
    c = S.generate(base / "c", seed=4, **TINY)
    return base, a, b, c


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _all_videos(root: Path) -> list[Path]:
    return sorted((root / "msrvtt" / "videos" / "all").glob("*.mp4")) + sorted(
        (root / "msvd" / "YouTubeClips").glob("*.avi")
    )


def test_msrvtt_layout(gens):
    base, summary, _, _ = gens
    root = base / "a" / "msrvtt"
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert set(data) == {"info", "videos", "sentences"}
    assert all(
        set(v) == {"id", "video_id", "category", "url", "start time", "end time", "split"} for v in data["videos"]
    )
    assert all(set(s) == {"sen_id", "video_id", "caption"} for s in data["sentences"])
    assert [s["sen_id"] for s in data["sentences"]] == list(range(len(data["sentences"])))
    caps: dict[str, list[str]] = {}
    for s in data["sentences"]:
        caps.setdefault(s["video_id"], []).append(s["caption"])
    assert all(len(c) == S.MSRVTT_CAPTIONS_PER_VIDEO == len(set(c)) for c in caps.values())

    header, rows9 = _rows(root / "MSRVTT_train.9k.csv")
    assert header == ["video_id"] and [r[0] for r in rows9] == [f"video{i}" for i in range(6)]
    header, rows7 = _rows(root / "MSRVTT_train.7k.csv")
    assert header == ["video_id"] and 0 < len(rows7) <= 6 and {r[0] for r in rows7} <= {r[0] for r in rows9}
    header, test = _rows(root / "MSRVTT_JSFUSION_test.csv")
    assert header == ["key", "vid_key", "video_id", "sentence"] and len(test) == 4
    for k, (key, vid_key, vid, sentence) in enumerate(test):
        n = int(vid.removeprefix("video"))
        assert (key, vid_key) == (f"ret{k}", f"msr{n}")
        assert n >= 6  # test ids come after the train ids, as in 1k-A
        assert sentence in caps[vid]
    assert len({r[3] for r in test}) == 4  # no tied queries
    assert not {r[0] for r in rows9} & {r[2] for r in test}
    assert set(caps) == {r[0] for r in rows9} | {r[2] for r in test}
    splits = {v["video_id"]: v["split"] for v in data["videos"]}
    assert all(splits[r[2]] == "test" for r in test)
    assert summary["msrvtt"]["n_captions"] == len(data["sentences"]) == 10 * 10


def test_msvd_layout(gens):
    base, summary, _, _ = gens
    root = base / "a" / "msvd"
    lists = {s: (root / f"{s}_list.txt").read_text().splitlines() for s in ("train", "val", "test")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == [3, 1, 3]
    every = [i for s in lists.values() for i in s]
    assert len(set(every)) == len(every)
    caps = pickle.loads((root / "raw-captions.pkl").read_bytes())
    assert isinstance(caps, dict) and set(caps) == set(every)
    for vid, groups in caps.items():
        assert S.MSVD_CAPTIONS_PER_VIDEO[0] <= len(groups) <= S.MSVD_CAPTIONS_PER_VIDEO[1]
        assert all(isinstance(g, list) and g and all(t == t.lower() and " " not in t for t in g) for g in groups)
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}_\d+_\d+", vid)
        assert (root / "YouTubeClips" / f"{vid}.avi").is_file()
    assert any(v.startswith("-") for v in every)
    assert any("_" in v[:11] for v in every)
    assert summary["msvd"]["n_test"] == 3


def test_every_video_decodes_to_expected_length_and_size(gens):
    base = gens[0] / "a"
    data = json.loads((base / "msrvtt" / "MSRVTT_data.json").read_text())
    seconds = {v["video_id"]: int(v["end time"]) for v in data["videos"]}
    for vid, sec in seconds.items():
        frames = _decode(base / "msrvtt" / "videos" / "all" / f"{vid}.mp4")
        assert frames.shape == (sec * FPS, H, W, 3)
        assert 3 <= sec <= 4
    for vid in pickle.loads((base / "msvd" / "raw-captions.pkl").read_bytes()):
        start, end = (int(x) for x in vid.rsplit("_", 2)[1:])
        frames = _decode(base / "msvd" / "YouTubeClips" / f"{vid}.avi")
        assert frames.shape == ((end - start) * FPS, H, W, 3)


def test_same_seed_same_output_different_seed_differs(gens):
    base = gens[0]
    for name in ANNOTATIONS:
        assert (base / "a" / name).read_bytes() == (base / "b" / name).read_bytes(), name
    vids_a, vids_b = _all_videos(base / "a"), _all_videos(base / "b")
    assert [p.name for p in vids_a] == [p.name for p in vids_b] and len(vids_a) == 17
    for pa, pb in zip(vids_a, vids_b, strict=True):
        assert np.array_equal(_decode(pa), _decode(pb)), pa.name
    other = base / "c"
    assert (base / "a" / "msrvtt/MSRVTT_data.json").read_bytes() != (other / "msrvtt/MSRVTT_data.json").read_bytes()
    va, vc = _decode(vids_a[0]), _decode(other / "msrvtt/videos/all" / vids_a[0].name)
    assert va.shape != vc.shape or not np.array_equal(va, vc)


def test_ground_truth_matches_plan(gens):
    base = gens[0] / "a"
    truth = json.loads((base / "ground_truth.json").read_text())
    plan = S.plan_benchmark(3, **{k: v for k, v in TINY.items() if k != "progress"})
    for ds, splits in plan.items():
        for split, clips in splits.items():
            assert [c["video_id"] for c in truth[ds][split]] == [c.video_id for c in clips]
            assert [c["captions"] for c in truth[ds][split]] == [list(c.captions) for c in clips]


def _colour_pixels(frame: np.ndarray, colour: str, tol: float = 60.0) -> np.ndarray:
    dist = np.linalg.norm(frame.astype(np.float64) - np.array(S.COLOURS[colour]), axis=-1)
    return dist < tol


def test_captions_describe_what_is_drawn(gens):
    """Colours, shapes and directions named in captions are on screen, where and when the plan says."""
    base = gens[0] / "a"
    plan = S.plan_benchmark(3, **{k: v for k, v in TINY.items() if k != "progress"})
    shape_of_word = {w: s for s, words in S.SHAPE_WORDS.items() for w in words}
    checked_moves = 0
    for clip in plan["msrvtt"]["train"] + plan["msrvtt"]["test"]:
        frames = _decode(base / "msrvtt" / "videos" / "all" / f"{clip.video_id}.mp4")
        colours = {e.desc.colour for e in clip.events}
        for cap in clip.captions:
            words = cap.split()
            named = {w for w in words if w in S.COLOURS}
            assert named and named <= colours, cap
            assert {shape_of_word[w] for w in words if w in shape_of_word} <= {e.desc.shape for e in clip.events}
            for c in named:  # every named colour is visible in some sampled frame
                assert any(_colour_pixels(frames[t * FPS], c).sum() >= 10 for t in range(clip.seconds)), (cap, c)
        for i, ev in enumerate(clip.events):
            shown = [t for t in range(clip.seconds) if ev.position(t) is not None]
            assert len(shown) >= 2
            for t in range(clip.seconds):  # absent before it appears and after it vanishes
                if ev.position(t) is None:
                    assert _colour_pixels(frames[t * FPS], ev.desc.colour, tol=40).sum() < 3
            # mean colour in the shape's core, where no later shape covers it, is the event's colour
            t = shown[-1]
            x, y = (float(np.floor(v + 0.5)) for v in ev.position(t))
            core = S.shape_mask(ev.desc.shape, x, y, ev.size * 0.6, W, H)
            for later in clip.events[i + 1 :]:
                if (p := later.position(t)) is not None:
                    core &= ~S.shape_mask(later.desc.shape, *np.floor(np.add(p, 0.5)), later.size * 1.3, W, H)
            if core.sum() >= 3:
                mean = frames[t * FPS][core].mean(axis=0)
                assert np.abs(mean - np.array(S.COLOURS[ev.desc.colour])).max() < 45, (clip.video_id, ev.desc)
            if ev.desc.motion in S.DIRECTIONS:  # the colour's centroid moves the way the caption says
                t0, t1 = max(shown[0], ev.move_start_s), shown[-1]
                c0, c1 = (np.argwhere(_colour_pixels(frames[t * FPS], ev.desc.colour)).mean(0) for t in (t0, t1))
                dy, dx = c1 - c0
                step = {"left": -dx, "right": dx, "up": -dy, "down": dy}[ev.desc.motion]
                assert step > 3, (clip.video_id, ev.desc, dx, dy)
                checked_moves += 1
    assert checked_moves >= 3


def test_event_phrases_name_every_attribute():
    for colour in S.COLOURS:
        for shape in S.SHAPES:
            for motion in S.MOTIONS:
                place = "top" if motion == "still" else None
                for vanishes in (False, True):
                    desc = S.EventDesc(colour, shape, motion, place, vanishes)
                    full = S.event_phrases(desc)
                    assert len(full) >= 10 and len(set(full)) == len(full)
                    for p in full:
                        words = p.split()
                        assert colour in words and set(words) & set(S.SHAPE_WORDS[shape])
                        if motion == "still":
                            assert "at the top" in p
                        else:
                            assert re.search(rf"\b({motion}|{motion}ward|to the {motion})\b", p)
                        assert ("disappear" in p or "vanish" in p) == vanishes
                    assert not set(full) & set(S.event_phrases(desc, complete=False))
    descs = [S.EventDesc("red", "square", "left", None, False), S.EventDesc("blue", "circle", "still", "left", False)]
    assert S.canonical_caption(descs) == "a red square moves left then a blue circle appears on the left"
    caps, flags = S.clip_captions(descs, np.random.default_rng(0), 10)
    assert len(caps) == len(set(caps)) == 10 and flags[0]
    assert any(not f and ("red" in c) != ("blue" in c) for c, f in zip(caps, flags, strict=True))


def test_test_split_content_is_distinct():
    plan = S.plan_benchmark(0, n_train=5, n_test=100, n_msvd_train=2, n_msvd_test=60)
    for clips in (plan["msrvtt"]["test"], plan["msvd"]["test"]):
        keys = [c.key for c in clips]
        assert len(set(keys)) == len(keys)
    msvd_caps = [c for clip in plan["msvd"]["test"] for c in clip.captions]
    assert len(set(msvd_caps)) == len(msvd_caps)
    assert {len(c.events) for c in plan["msrvtt"]["test"]} == {1, 2, 3}


def test_bad_arguments_and_foreign_folders(tmp_path, capsys):
    with pytest.raises(ConfigError, match="even"):
        S.generate(tmp_path / "x", size=(63, 48), progress=False)
    with pytest.raises(ConfigError, match="seconds"):
        S.generate(tmp_path / "x", seconds=(2, 4), progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not empty"):
        S.generate(foreign, **TINY)
    assert (foreign / "thesis.tex").read_text() == "precious"

    out = tmp_path / "out"
    S.generate(out, **TINY)
    small = {**TINY, "n_test": 2}
    S.generate(out, **small)  # regenerating over an earlier output clears its stale videos
    assert not (out / "msrvtt/videos/all/video9.mp4").exists()
    assert (out / "msrvtt/videos/all/video7.mp4").exists()
    assert capsys.readouterr().err == ""
