"""ActivityNet Captions adapter for paragraph-to-video retrieval (train 10,009 / val_1 4,917 videos).

Reads the official captions zip: ``train.json`` / ``val_1.json`` (``v_id -> {duration, timestamps,
sentences}``) and ``train_ids.json`` / ``val_ids.json`` (lists of ``v_<youtube id>``). Each video becomes
one paragraph: its sentences, each stripped of surrounding whitespace, joined with single spaces; the
timestamps are ignored and the clip is the whole video, window ``[0, ceil(duration)]`` s. Evaluation is
single-caption (4,917 x 4,917 on val_1; ``val_2`` is not used). Ids in the ids file without captions are
left out and counted in ``notes``; if the ids file itself is absent the json's key order is used (the ids
files only add caption-less ids) and ``notes`` says so.

Video files differ between codebases: ``v_<id>.<ext>`` (TS2-Net, HBI) or ``<id>.<ext>`` (CLIP4Clip,
X-CLIP); both are accepted, with any extension (.mp4, .mkv, .webm) at any depth.
"""

from __future__ import annotations

import math
from pathlib import Path

from vidbench.data.datasets.files import (
    Entry,
    Scheme,
    build_split,
    check_split,
    dedupe,
    find_annotation,
    read_json,
    require_annotation,
)
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError

SPLITS: tuple[str, ...] = ("train", "val_1")

FILES = {"train": ("train.json", "train_ids.json"), "val_1": ("val_1.json", "val_ids.json")}
_FIX = (
    "unpack the official ActivityNet Captions zip (train.json, val_1.json, train_ids.json, val_ids.json) "
    "into {root}"
)


def _candidates(video_id: str) -> list[tuple[Scheme, str]]:
    bare = video_id[2:] if video_id.startswith("v_") else None
    out: list[tuple[Scheme, str]] = [("stem", video_id), ("name", video_id)]
    if bare:
        out += [("stem", bare), ("name", bare)]
    else:
        out.append(("stem", f"v_{video_id}"))
    return out


def paragraph(sentences: list[str]) -> str:
    """Sentences stripped and joined with single spaces (ActivityNet sentences often start with a space)."""
    return " ".join(s.strip() for s in sentences if s.strip())


def read_annotations(path: Path) -> dict[str, tuple[float, str]]:
    """``v_id -> (duration_s, paragraph)``; videos with no sentences map to an empty paragraph."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise AnnotationError(
            path,
            f"expected an object v_id -> {{duration, timestamps, sentences}}, found {type(obj).__name__}",
            "use the train.json / val_1.json of the official ActivityNet Captions release",
        )
    out: dict[str, tuple[float, str]] = {}
    for vid, ann in obj.items():
        try:
            duration = ann["duration"]
            sentences = ann["sentences"]
            if isinstance(duration, bool) or not isinstance(duration, int | float) or not duration >= 0:
                raise TypeError(f"duration {duration!r} is not a non-negative number")
            if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
                raise TypeError("sentences must be a list of strings")
        except (TypeError, KeyError) as e:
            raise AnnotationError(
                path,
                f"key {vid!r}: expected {{'duration': seconds, 'sentences': [str, ...]}} ({e})",
                "re-download this file; this entry is malformed",
            ) from e
        out[str(vid)] = (float(duration), paragraph(sentences))
    return out


def _read_ids(path: Path) -> list[str]:
    obj = read_json(path)
    if not isinstance(obj, list) or not all(isinstance(i, str) for i in obj):
        raise AnnotationError(path, 'expected a JSON list of video ids ("v_...")', "re-download this file")
    return [i.strip() for i in obj]


def load_split(root: str | Path, split: str, *, video_root: str | Path | None = None) -> SplitIndex:
    """Index one ActivityNet Captions split; ``video_root`` (default ``root``) is searched recursively."""
    check_split("activitynet", split, SPLITS)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    ann_name, ids_name = FILES[split]
    ann_path = require_annotation(root, [ann_name], f"the {split} captions", _FIX.format(root=root))
    annotations = read_annotations(ann_path)
    ids_path = find_annotation(root, [ids_name])
    notes: dict[str, object] = {"caption_source": str(ann_path)}
    if ids_path is not None:
        ids, notes["duplicate_ids_dropped"] = dedupe(_read_ids(ids_path))
        listed = set(ids)
        notes["split_file"] = str(ids_path)
        notes["annotated_ids_not_in_ids_file"] = sum(1 for v in annotations if v not in listed)
    else:
        ids = list(annotations)
        notes["split_file"] = f"{ids_name} absent: used the key order of {ann_path.name}"
    entries: list[Entry] = []
    without: list[str] = []
    for vid in ids:
        duration, text = annotations.get(vid, (0.0, ""))
        if not text:
            without.append(vid)
            continue
        entries.append(Entry(vid, [text], 0.0, float(math.ceil(duration))))
    if not entries:
        raise AnnotationError(
            ann_path,
            f"no id of {ids_path or ann_path} has captions here",
            f"use the {ann_name} and {ids_name} of the same release",
        )
    notes["ids_without_captions"] = len(without)
    notes["ids_without_captions_first"] = without[:10]
    return build_split(
        "activitynet",
        split,
        entries,
        vroot,
        candidates=_candidates,
        multi_caption=False,
        text_unit="paragraph",
        notes=notes,
        name_pattern="v_<id>.<ext> or <id>.<ext> (mp4, mkv, webm, ...; any depth)",
    )
