"""Tiny datasets in each real on-disk format, for the adapter, DataModule and verification tests.

Every ``write_<dataset>(folder, ...)`` writes annotation files exactly as users have them plus short real
videos (32x32, 4 fps, 2-3 s, a distinct colour per video) under the dataset's usual sub-folders and naming
schemes, and returns a :class:`FixtureDataset` describing what the adapter should produce.
"""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidbench.data.video_writer import write_video

FPS = 4
SIZE = 32


@dataclass
class FixtureDataset:
    """What a writer produced: where things are and what ``load_split`` must return for each split."""

    name: str
    root: Path  # annotation folder (the adapter's ``root``)
    video_root: Path  # folder the videos were written under (inside ``root``)
    splits: dict[str, list[str]]  # split -> video ids in the order the adapter returns them
    captions: dict[str, dict[str, list[str]]]  # split -> video id -> expected captions, in order
    files: dict[str, Path]  # video id -> the file written for it
    missing: list[str]  # annotated ids that deliberately have no file
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # video id -> expected window
    durations: dict[str, float] = field(default_factory=dict)  # video id -> seconds written


def write_clip(path: Path, seed: int, seconds: float = 2.0, fps: int = FPS, size: int = SIZE) -> Path:
    """A real, decodable video: a solid colour per ``seed`` that brightens over time.

    ``.webm`` is written as Matroska (the mpeg4 codec is not allowed in WebM; decoders probe content).
    """
    n = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 200, size=3)
    ramp = np.linspace(0, 50, n)[:, None]
    colours = np.clip(base[None, :] + ramp, 0, 255).astype(np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".webm":
        tmp = write_video(path.with_name(path.name + ".tmp.mkv"), frames, fps=fps)
        tmp.replace(path)
        return path
    return write_video(path, frames, fps=fps)


def _write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# MSR-VTT


def write_msrvtt(
    folder: Path, *, schema: str = "sentences", full_csv: bool = False, video_subdir: str = "videos/all"
) -> FixtureDataset:
    """12 videos (official split: train 0-5, validate 6-7, test 8-11), 3 captions each.

    ``schema="sentences"`` writes ``MSRVTT_data.json`` with ``videos[*].split``; ``"annotations"`` writes a
    COCO-style ``annotation/MSR_VTT.json`` without split info (pass ``full_csv=True`` for full splits).
    With ``full_csv`` the full-split csvs list train videos in *reverse* order, so a test can tell the csv
    from the json field. ``video3`` is a ``.webm``; ``video11`` has no file.
    """
    folder = Path(folder)
    n_videos = 12
    caps = {
        f"video{n}": [f"clip {n} shows a person doing task {k}" for k in range(3)] for n in range(n_videos)
    }
    official = {f"video{n}": ("train" if n < 6 else "validate" if n < 8 else "test") for n in range(n_videos)}
    # captions interleaved across videos as in the official file (ordered by sen_id, not grouped)
    sentences = [
        {"sen_id": k * n_videos + n, "video_id": f"video{n}", "caption": caps[f"video{n}"][k]}
        for k in range(3)
        for n in range(n_videos)
    ]
    if schema == "sentences":
        videos = [
            {
                "id": n,
                "video_id": f"video{n}",
                "category": n % 20,
                "url": "https://example.invalid",
                "start time": 1.0,
                "end time": 3.0,
                "split": official[f"video{n}"],
            }
            for n in range(n_videos)
        ]
        _write_json(
            folder / "MSRVTT_data.json", {"info": {"year": 2016}, "videos": videos, "sentences": sentences}
        )
    elif schema == "annotations":
        anns = [{"image_id": s["video_id"], "caption": s["caption"], "id": s["sen_id"]} for s in sentences]
        _write_json(folder / "annotation" / "MSR_VTT.json", {"annotations": anns})
    else:
        raise ValueError(schema)

    train_9k = [f"video{n}" for n in range(9)]
    train_7k = [f"video{n}" for n in range(8)]
    test_1ka = ["video9", "video11", "video10"]  # not sorted: order must follow the csv
    jsfusion = {vid: f'{caps[vid][1]}, then "waves"' for vid in test_1ka}  # commas and quotes survive csv
    _write_lines(folder / "MSRVTT_train.9k.csv", ["video_id", *train_9k])
    _write_lines(folder / "MSRVTT_train.7k.csv", ["video_id", *train_7k])
    with open(folder / "MSRVTT_JSFUSION_test.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, vid in enumerate(test_1ka):
            w.writerow([f"ret{i}", f"msr{vid[5:]}", vid, jsfusion[vid]])

    full = {
        "train-full": [v for v, s in official.items() if s == "train"],
        "val-full": [v for v, s in official.items() if s == "validate"],
        "test-full": [v for v, s in official.items() if s == "test"],
    }
    if full_csv:
        full["train-full"] = full["train-full"][::-1]
        for split, fname in (("train-full", "train"), ("val-full", "val"), ("test-full", "test")):
            _write_lines(folder / f"MSRVTT_{fname}.full.csv", ["video_id", *full[split]])

    video_root = folder / video_subdir
    files: dict[str, Path] = {}
    missing = ["video11"]
    for n in range(n_videos):
        vid = f"video{n}"
        if vid in missing:
            continue
        ext = ".webm" if n == 3 else ".mp4"
        files[vid] = write_clip(video_root / f"{vid}{ext}", seed=n)

    splits = {"train-9k": train_9k, "train-7k": train_7k, "test-1ka": test_1ka, **full}
    captions = {s: {v: caps[v] for v in ids} for s, ids in splits.items()}
    captions["test-1ka"] = {v: [jsfusion[v]] for v in test_1ka}
    if schema == "annotations" and not full_csv:
        for s in ("train-full", "val-full", "test-full"):
            del splits[s], captions[s]
    return FixtureDataset("msrvtt", folder, video_root, splits, captions, files, missing)


# ---------------------------------------------------------------------------------------------------------
# MSVD

MSVD_SPLITS = {
    "train": ["-4wsuPCjDBc_5_15", "a_b-CdEfGhI_0_4", "xYz12345678_10_22"],
    "val": ["-_hbPLsZvvo_19_25", "Q9rT_uV-wXy_3_7"],
    "test": ["-vg3vR86fu0_1_6", "ZzZ_y-x_w1v_12_20", "mN0pQ1rS2tU_0_10"],
}


def write_msvd(folder: Path, *, captions: str = "pkl") -> FixtureDataset:
    """S2VT-style lists + ``raw-captions.pkl`` (token lists) or ``captions_msvd.json`` (strings).

    Ids start with ``-`` and contain ``_``; videos are ``YouTubeClips/<id>.avi``; ``ZzZ_y-x_w1v_12_20``
    (test) has no file. Caption counts vary per video (2..4) to check grouping.
    """
    folder = Path(folder)
    all_ids = [v for ids in MSVD_SPLITS.values() for v in ids]
    caps = {
        vid: [f"a thing number {i} happens in way {k}" for k in range(2 + i % 3)]
        for i, vid in enumerate(all_ids)
    }
    extra = {"notInAnySplit_0_1": ["an unused caption"]}  # real caption files hold more ids than a split
    for split, ids in MSVD_SPLITS.items():
        _write_lines(folder / f"{split}_list.txt", ids)
    if captions == "pkl":
        tokens = {vid: [c.split(" ") for c in cs] for vid, cs in {**caps, **extra}.items()}
        with open(folder / "raw-captions.pkl", "wb") as f:
            pickle.dump(tokens, f)
    elif captions == "json":
        _write_json(folder / "captions_msvd.json", {**caps, **extra})
    else:
        raise ValueError(captions)
    video_root = folder / "YouTubeClips"
    missing = ["ZzZ_y-x_w1v_12_20"]
    files = {
        vid: write_clip(video_root / f"{vid}.avi", seed=100 + i)
        for i, vid in enumerate(all_ids)
        if vid not in missing
    }
    expected = {s: {v: caps[v] for v in ids} for s, ids in MSVD_SPLITS.items()}
    return FixtureDataset("msvd", folder, video_root, dict(MSVD_SPLITS), expected, files, missing)


# ---------------------------------------------------------------------------------------------------------
# VATEX

VATEX_SPLITS = {
    "train": ["AbCdEfGhIjK_000030_000040", "-xY_z12345a_000001_000011", "Zz9-8_7y6X5_000100_000110"],
    "val": ["-aaaaaaaaaa_000000_000010", "bbb_bbb_bbb_000020_000030"],
    "test": ["ccccccccccc_000005_000015", "-dd_dd-dd_d_000050_000060"],
}


def write_vatex(folder: Path, *, captions: str = "ref") -> FixtureDataset:
    """HGR split lists + captions as ``ref_captions.json`` (``"ref"``), ``vatex_data.json``
    (``"vatex_data"``) or the official list-of-dicts jsons (``"official"``). Videos ``videos/<a|b>/<id>.mp4``;
    ``-dd_dd-dd_d_000050_000060`` (test) has no file.
    """
    folder = Path(folder)
    all_ids = [v for ids in VATEX_SPLITS.values() for v in ids]
    caps = {
        vid: [f"someone does activity {i} variant {k}" for k in range(2 + i % 2)]
        for i, vid in enumerate(all_ids)
    }
    for split, ids in VATEX_SPLITS.items():
        _write_lines(folder / f"{split}_list.txt", ids)
    if captions == "ref":
        _write_json(folder / "ref_captions.json", caps)
    elif captions == "vatex_data":
        _write_json(
            folder / "vatex_data.json", {v: {"enCap": c, "chCap": ["中文"] * len(c)} for v, c in caps.items()}
        )
    elif captions == "official":

        def rows(ids: list[str]) -> list[dict]:
            return [{"videoID": v, "enCap": caps[v], "chCap": ["中文"] * len(caps[v])} for v in ids]

        _write_json(folder / "vatex_training_v1.0.json", rows(VATEX_SPLITS["train"]))
        _write_json(folder / "vatex_validation_v1.0.json", rows(VATEX_SPLITS["val"] + VATEX_SPLITS["test"]))
    else:
        raise ValueError(captions)
    video_root = folder / "videos"
    missing = ["-dd_dd-dd_d_000050_000060"]
    files = {
        vid: write_clip(video_root / ("a" if i % 2 else "b") / f"{vid}.mp4", seed=200 + i)
        for i, vid in enumerate(all_ids)
        if vid not in missing
    }
    expected = {s: {v: caps[v] for v in ids} for s, ids in VATEX_SPLITS.items()}
    return FixtureDataset("vatex", folder, video_root, dict(VATEX_SPLITS), expected, files, missing)


# ---------------------------------------------------------------------------------------------------------
# LSMDC


def _lsmdc_clip(movie: str, i: int) -> str:
    return f"{movie}_00.0{i}.01.100-00.0{i}.04.250"


def write_lsmdc(folder: Path) -> FixtureDataset:
    """Three tab-separated 6-field files; train repeats a clip non-adjacently, val adjacently.

    Videos ``avi/<movie>/<clip_id>.avi``; the last test clip has no file. One test sentence holds quotes
    and a comma (a quoting csv reader would mangle it).
    """
    folder = Path(folder)
    m1, m2 = "0001_American_Beauty", "3009_BATTLE_LOS_ANGELES"
    train_rows = [
        (_lsmdc_clip(m1, 1), "SOMEONE opens the door."),
        (_lsmdc_clip(m1, 2), "SOMEONE looks outside."),
        (_lsmdc_clip(m1, 1), "He steps in."),
        (_lsmdc_clip(m2, 1), "Soldiers run."),
    ]
    val_rows = [
        (_lsmdc_clip(m2, 2), "A jet flies."),
        (_lsmdc_clip(m2, 2), "It banks left."),
        (_lsmdc_clip(m2, 3), "Smoke."),
    ]
    test_rows = [
        (_lsmdc_clip(m1, 4), 'SOMEONE says "hi, there" and waves.'),
        (_lsmdc_clip(m2, 4), "SOMEONE's helmet falls, rolling away."),
        (_lsmdc_clip(m2, 5), "The city burns."),
    ]

    def write(name: str, rows: list[tuple[str, str]]) -> None:
        lines = []
        for clip, sentence in rows:
            t = clip.rsplit("_", 1)[1].split("-")
            lines.append("\t".join([clip, t[0], t[1], t[0], t[1], sentence]))
        _write_lines(folder / name, lines)

    write("LSMDC16_annos_training.csv", train_rows)
    write("LSMDC16_annos_val.csv", val_rows)
    write("LSMDC16_challenge_1000_publictect.csv", test_rows)

    def group(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for clip, s in rows:
            out.setdefault(clip, []).append(s)
        return out

    expected = {"train": group(train_rows), "val": group(val_rows), "test": group(test_rows)}
    splits = {s: list(g) for s, g in expected.items()}
    video_root = folder / "avi"
    missing = [test_rows[-1][0]]
    files: dict[str, Path] = {}
    for i, clip in enumerate(dict.fromkeys(c for rows in (train_rows, val_rows, test_rows) for c, _ in rows)):
        if clip not in missing:
            files[clip] = write_clip(video_root / clip.rsplit("_", 1)[0] / f"{clip}.avi", seed=300 + i)
    return FixtureDataset("lsmdc", folder, video_root, splits, expected, files, missing)


# ---------------------------------------------------------------------------------------------------------
# ActivityNet Captions


def write_activitynet(folder: Path) -> FixtureDataset:
    """``train.json``/``val_1.json`` + ids files (each with one id lacking captions).

    Video names mix ``v_<id>`` and ``<id>``, ``.mp4``/``.mkv``/``.webm``, flat and nested;
    ``v_GGGGGGGGGGG`` (val_1) has no file. Durations are fractional to check ``ceil``.
    """
    folder = Path(folder)
    train = {
        "v_AAAAAAAAAAA": (2.5, [" A woman enters a room.", " She starts dancing.  "]),
        "v_BBBBBBBBBBB": (2.0, ["A dog runs."]),
        "v_-CCCCCCCCCC": (1.25, ["  Kids play ball ", "in a park.", " "]),
    }
    val = {
        "v_DDDDDDDDDDD": (2.0, [" A man cooks.", " He tastes the soup."]),
        "v_EEEEEEEEEEE": (2.75, ["Two people swim."]),
        "v_FFFFFFFFFFF": (1.5, [" Snow falls.", " A car passes.", " Night comes."]),
        "v_GGGGGGGGGGG": (3.0, ["Nobody has this video."]),
    }

    def ann(d: dict[str, tuple[float, list[str]]]) -> dict:
        return {
            v: {"duration": dur, "timestamps": [[0.1 * i, dur + 5.0] for i in range(len(s))], "sentences": s}
            for v, (dur, s) in d.items()
        }

    _write_json(folder / "train.json", ann(train))
    _write_json(folder / "val_1.json", ann(val))
    train_ids = ["v_BBBBBBBBBBB", "v_NOCAPTION01", "v_AAAAAAAAAAA", "v_-CCCCCCCCCC"]
    val_ids = ["v_DDDDDDDDDDD", "v_EEEEEEEEEEE", "v_FFFFFFFFFFF", "v_GGGGGGGGGGG", "v_NOCAPTION02"]
    _write_json(folder / "train_ids.json", train_ids)
    _write_json(folder / "val_ids.json", val_ids)

    names = {
        "v_AAAAAAAAAAA": "videos/v_AAAAAAAAAAA.mp4",
        "v_BBBBBBBBBBB": "videos/BBBBBBBBBBB.mkv",
        "v_-CCCCCCCCCC": "videos/v_-CCCCCCCCCC.webm",
        "v_DDDDDDDDDDD": "videos/val/deep/er/DDDDDDDDDDD.mp4",
        "v_EEEEEEEEEEE": "videos/val/v_EEEEEEEEEEE.mkv",
        "v_FFFFFFFFFFF": "videos/FFFFFFFFFFF.webm",
    }
    durations = {v: d for v, (d, _) in {**train, **val}.items()}
    files = {
        v: write_clip(folder / rel, seed=400 + i, seconds=durations[v])
        for i, (v, rel) in enumerate(names.items())
    }

    def para(s: list[str]) -> str:
        return " ".join(x.strip() for x in s if x.strip())

    splits = {"train": [v for v in train_ids if v in train], "val_1": [v for v in val_ids if v in val]}
    expected = {
        "train": {v: [para(train[v][1])] for v in splits["train"]},
        "val_1": {v: [para(val[v][1])] for v in splits["val_1"]},
    }
    windows = {v: (0.0, float(np.ceil(d))) for v, d in durations.items()}
    return FixtureDataset(
        "activitynet",
        folder,
        folder / "videos",
        splits,
        expected,
        files,
        ["v_GGGGGGGGGGG"],
        windows,
        durations,
    )


# ---------------------------------------------------------------------------------------------------------
# DiDeMo

DIDEMO_TEST = {
    # list entry -> file written (None: missing)
    "11@N01_111_aaa.mov": "11@N01_111_aaa.mov",  # scheme 1: original Flickr name
    "22@N02_222_bbb.avi": "22@N02_222_bbb.avi.mp4",  # scheme 2: AWS `<name>.mp4`
    "33@N03_333_ccc.": "33@N03_333_ccc..mp4",  # scheme 2 with a bare trailing dot
    "44@N04_444_ddd.mp4": "44@N04_444_ddd.mp4",
    "55@N05_555_eee.3gp": "55@N05_555_eee.mp4",  # stem only (re-encoded copy)
    "66@N06_666_fff.m4v": None,
}
DIDEMO_TRAIN = {"77@N07_777_ggg.mov": "77@N07_777_ggg.mov.mp4", "88@N08_888_hhh.wmv": "88@N08_888_hhh.wmv"}
DIDEMO_VAL = {"99@N09_999_iii.mpg": "99@N09_999_iii.mpg.mp4"}


def write_didemo(folder: Path) -> FixtureDataset:
    """``{split}_data.json`` moments (interleaved across videos, plus videos not in the lists) and
    ``{split}_list.txt`` names, with files under ``videos/`` in every naming scheme (see ``DIDEMO_TEST``).
    """
    folder = Path(folder)
    splits = {"train": DIDEMO_TRAIN, "val": DIDEMO_VAL, "test": DIDEMO_TEST}
    expected: dict[str, dict[str, list[str]]] = {}
    files: dict[str, Path] = {}
    missing: list[str] = []
    seed = 500
    for split, table in splits.items():
        names = list(table)
        descs = {
            n: [f"moment {k} of video {n[:6]} happens " for k in range(1 + i % 3)]
            for i, n in enumerate(names)
        }
        descs[f"0{split}@N00_000_zzz.mov"] = ["this video is not in the list"]
        moments = []
        aid = 0
        for k in range(3):  # interleave: first description of every video, then the second, ...
            for n, ds in descs.items():
                if k < len(ds):
                    moments.append(
                        {
                            "annotation_id": aid,
                            "description": ds[k],
                            "video": n,
                            "times": [[k, k]] * 4,
                            "dl_link": "https://example.invalid",
                            "num_segments": 6,
                        }
                    )
                    aid += 1
        _write_json(folder / f"{split}_data.json", moments)
        _write_lines(folder / f"{split}_list.txt", names)
        expected[split] = {n: [" ".join(d.strip() for d in descs[n])] for n in names}
        for n, fname in table.items():
            seed += 1
            if fname is None:
                missing.append(n)
            else:
                files[n] = write_clip(folder / "videos" / fname, seed=seed, seconds=3.0)
    windows = {n: (0.0, 31.0) for t in splits.values() for n in t}
    return FixtureDataset(
        "didemo",
        folder,
        folder / "videos",
        {s: list(t) for s, t in splits.items()},
        expected,
        files,
        missing,
        windows,
    )


WRITERS = {
    "msrvtt": write_msrvtt,
    "msvd": write_msvd,
    "vatex": write_vatex,
    "lsmdc": write_lsmdc,
    "activitynet": write_activitynet,
    "didemo": write_didemo,
}
