"""MSR-VTT adapter: the CLIP4Clip/DRL files (``MSRVTT_data.json`` + split csvs) and the official full split.

Splits: ``train-9k`` / ``train-7k`` (CLIP4Clip csvs, 20 captions per video), ``test-1ka`` (JSFusion 1k-A:
the csv's own single caption per video, 1,000 x 1,000), and the official full split ``train-full`` /
``val-full`` / ``test-full`` (multi-caption, 2,990 videos / 59,800 queries for test) read from
``MSRVTT_{train,val,test}.full.csv`` if present, else from the json's ``videos[*].split`` field.

``MSRVTT_data.json`` is read in either schema seen in the wild: ``sentences[*].video_id/caption`` (official,
CLIP4Clip/DRL) or COCO-style ``annotations[*].image_id/caption`` (Frozen-in-Time's ``MSR_VTT.json``, which
is also accepted under that name). Videos are ``video{N}.mp4`` at any depth (e.g. ``videos/all/``); any
other extension (``.webm``) is the fallback.
"""

from __future__ import annotations

from pathlib import Path

from vidbench.data.datasets.files import (
    Entry,
    Scheme,
    build_split,
    check_split,
    dedupe,
    find_annotation,
    missing_id_error,
    read_csv_rows,
    read_json,
    require_annotation,
)
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError

SPLITS: tuple[str, ...] = ("train-9k", "train-7k", "train-full", "val-full", "test-1ka", "test-full")

JSON_NAMES = ("MSRVTT_data.json", "MSR_VTT.json")
JSFUSION_CSV = "MSRVTT_JSFUSION_test.csv"
_TRAIN_CSV = {"train-9k": "MSRVTT_train.9k.csv", "train-7k": "MSRVTT_train.7k.csv"}
_FULL = {
    "train-full": ("MSRVTT_train.full.csv", ("train",)),
    "val-full": ("MSRVTT_val.full.csv", ("validate", "val", "validation")),
    "test-full": ("MSRVTT_test.full.csv", ("test",)),
}
_FIX_ZIP = (
    "download CLIP4Clip's msrvtt_data.zip (MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_train.7k.csv, "
    "MSRVTT_JSFUSION_test.csv) and unpack it into {root}"
)


NAME_PATTERN = "video<N>.mp4 (or video<N>.<ext>, any folder depth)"


def _candidates(video_id: str) -> list[tuple[Scheme, str]]:
    return [("name", f"{video_id}.mp4"), ("stem", video_id), ("name", video_id)]


def _video_id(value: object) -> str:
    """Ids are ``video{N}``; a COCO-style file may store the bare integer N."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return f"video{value}"
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise TypeError


def read_annotations(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Captions per video id (file order) and the official split per video id (empty if absent)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise AnnotationError(
            path, f"expected a JSON object, found {type(obj).__name__}", "use MSRVTT_data.json"
        )
    if isinstance(obj.get("sentences"), list):
        key, rows, id_field = "sentences", obj["sentences"], "video_id"
    elif isinstance(obj.get("annotations"), list):
        key, rows, id_field = "annotations", obj["annotations"], "image_id"
    else:
        raise AnnotationError(
            path,
            f"no 'sentences' or 'annotations' list (top-level keys: {sorted(obj)[:8]})",
            "use the MSR-VTT annotation json with sentences[*].video_id/caption",
        )
    captions: dict[str, list[str]] = {}
    for j, row in enumerate(rows):
        try:
            vid = _video_id(row[id_field])
            cap = row["caption"]
            if not isinstance(cap, str):
                raise TypeError
        except (TypeError, KeyError) as e:
            raise AnnotationError(
                path,
                f"{key}[{j}] is not {{'{id_field}': ..., 'caption': str}}: {str(row)[:120]}",
                "re-download MSRVTT_data.json; this entry is malformed",
            ) from e
        captions.setdefault(vid, []).append(cap.strip())
    splits: dict[str, str] = {}
    for j, row in enumerate(obj.get("videos") or []):
        try:
            splits[_video_id(row["video_id"])] = str(row["split"]).strip()
        except (TypeError, KeyError) as e:
            raise AnnotationError(
                path, f"videos[{j}] lacks 'video_id' or 'split': {str(row)[:120]}", "re-download the json"
            ) from e
    return captions, splits


def _read_video_csv(path: Path) -> list[str]:
    return [row["video_id"] for _, row in read_csv_rows(path, ["video_id"])]


def _load_test_1ka(root: Path, video_root: Path) -> SplitIndex:
    path = require_annotation(root, [JSFUSION_CSV], "the 1k-A test csv", _FIX_ZIP.format(root=root))
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for line, row in read_csv_rows(path, ["video_id", "sentence"]):
        vid = row["video_id"]
        if vid in seen:
            raise AnnotationError(
                path,
                f"line {line}: video_id {vid!r} repeats line {seen[vid]} (1k-A has one caption per video)",
                "re-download MSRVTT_JSFUSION_test.csv",
            )
        if not row["sentence"]:
            raise AnnotationError(path, f"line {line}: empty sentence for {vid!r}", "re-download the csv")
        seen[vid] = line
        entries.append(Entry(vid, [row["sentence"]]))
    notes = {"split_file": str(path), "caption_source": str(path)}
    return build_split(
        "msrvtt",
        "test-1ka",
        entries,
        video_root,
        candidates=_candidates,
        multi_caption=False,
        notes=notes,
        name_pattern=NAME_PATTERN,
    )


def load_split(root: str | Path, split: str, *, video_root: str | Path | None = None) -> SplitIndex:
    """Index one MSR-VTT split; ``video_root`` (default ``root``) is searched recursively."""
    check_split("msrvtt", split, SPLITS)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    if split == "test-1ka":
        return _load_test_1ka(root, vroot)

    ann = require_annotation(root, JSON_NAMES, "MSR-VTT annotations", _FIX_ZIP.format(root=root))
    captions, official = read_annotations(ann)
    notes: dict[str, object] = {"caption_source": str(ann)}
    if split in _TRAIN_CSV:
        list_path = require_annotation(root, [_TRAIN_CSV[split]], "the split csv", _FIX_ZIP.format(root=root))
        ids = _read_video_csv(list_path)
        source: Path = list_path
    else:
        csv_name, labels = _FULL[split]
        found = find_annotation(root, [csv_name])
        if found is not None:
            ids, source = _read_video_csv(found), found
        elif official:
            ids = [vid for vid, s in official.items() if s in labels]
            source = ann
            if not ids:
                raise AnnotationError(
                    ann,
                    f"no video has split in {list(labels)} in videos[*].split",
                    f"put {csv_name} (header video_id, one id per line) into {root}",
                )
        else:
            raise AnnotationError(
                root / csv_name,
                f"{csv_name} not found and {ann.name} has no videos[*].split field",
                f"put {csv_name} (header video_id; CLIP2Video ships it) into {root}, "
                "or use the official MSR-VTT json that lists videos with their split",
            )
    notes["split_file"] = str(source)
    ids, notes["duplicate_ids_dropped"] = dedupe(ids)
    entries = []
    for vid in ids:
        caps = captions.get(vid)
        if not caps:
            raise missing_id_error(vid, source, ann)
        entries.append(Entry(vid, caps))
    return build_split(
        "msrvtt",
        split,
        entries,
        vroot,
        candidates=_candidates,
        multi_caption=True,
        notes=notes,
        name_pattern=NAME_PATTERN,
    )
