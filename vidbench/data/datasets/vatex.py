"""VATEX (English) adapter on the HGR retrieval split: 25,991 train / 1,500 val / 1,500 test videos.

Split lists ``{train,val,test}_list.txt`` (as shipped in CLIP2Video's ``data/vatex_data/``) hold one
``<youtube id>_<start6>_<end6>`` per line. English captions come from the first file found of:
``ref_captions.json`` (HGR/TS2-Net: id -> list of str), ``vatex_data.json`` (CLIP2Video: id ->
``{"enCap": [...]}``), or the official list-of-dicts jsons (``videoID``/``enCap``:
``vatex_training_v1.0.json``, ``vatex_validation_v1.0.json``, ``vatex_public_test_english_v1.1.json``,
merged). Evaluation is multi-caption like MSVD. Note that TS2-Net's loader reads ``test_list.txt`` for
"val"; here ``val`` always means ``val_list.txt``. Videos: ``<id>.<any ext>`` at any depth.
"""

from __future__ import annotations

from pathlib import Path

from vidbench.data.datasets.files import (
    Entry,
    build_split,
    check_split,
    dedupe,
    find_annotation,
    missing_id_error,
    read_id_list,
    read_json,
    require_annotation,
)
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError

SPLITS: tuple[str, ...] = ("train", "val", "test")

CAPTION_FILES = ("ref_captions.json", "vatex_data.json")
OFFICIAL_FILES = (
    "vatex_training_v1.0.json",
    "vatex_validation_v1.0.json",
    "vatex_public_test_english_v1.1.json",
)
_FIX_LISTS = (
    "put the HGR split lists train_list.txt / val_list.txt / test_list.txt (CLIP2Video's data/vatex_data/) "
    "into {root}"
)
_FIX_CAPS = (
    "put ref_captions.json (id -> list of English captions) or vatex_data.json, or the official "
    "vatex_training_v1.0.json + vatex_validation_v1.0.json, into {root}"
)


def _strings(path: Path, where: str, caps: object) -> list[str]:
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise AnnotationError(
            path,
            f"{where}: English captions must be a list of strings, got {str(caps)[:120]}",
            "re-download this caption file",
        )
    return [c.strip() for c in caps if c.strip()]


def read_captions(path: Path) -> dict[str, list[str]]:
    """English captions per video id from any of the three JSON shapes users have."""
    obj = read_json(path)
    out: dict[str, list[str]] = {}
    if isinstance(obj, dict):
        for vid, value in obj.items():
            if isinstance(value, dict):
                if "enCap" not in value:
                    raise AnnotationError(path, f"key {vid!r} has no 'enCap' list", "re-download this file")
                value = value["enCap"]
            out[str(vid)] = _strings(path, f"key {vid!r}", value)
        return out
    if isinstance(obj, list):
        for j, row in enumerate(obj):
            if not isinstance(row, dict) or "videoID" not in row or "enCap" not in row:
                raise AnnotationError(
                    path,
                    f"entry [{j}] is not {{'videoID': ..., 'enCap': [...]}}: {str(row)[:120]}",
                    "re-download the official VATEX json",
                )
            out.setdefault(str(row["videoID"]), []).extend(_strings(path, f"entry [{j}]", row["enCap"]))
        return out
    raise AnnotationError(
        path, f"expected a JSON object or list, found {type(obj).__name__}", "re-download it"
    )


def _caption_sources(root: Path) -> list[Path]:
    one = find_annotation(root, CAPTION_FILES)
    if one is not None:
        return [one]
    official = [p for p in (find_annotation(root, [n]) for n in OFFICIAL_FILES) if p is not None]
    if official:
        return official
    names = ", ".join(CAPTION_FILES + OFFICIAL_FILES)
    raise AnnotationError(
        root / CAPTION_FILES[0], f"no VATEX caption file ({names}) in {root}", _FIX_CAPS.format(root=root)
    )


def load_split(root: str | Path, split: str, *, video_root: str | Path | None = None) -> SplitIndex:
    """Index one VATEX split; ``video_root`` (default ``root``) is searched recursively."""
    check_split("vatex", split, SPLITS)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    list_path = require_annotation(
        root, [f"{split}_list.txt"], f"the {split} split list", _FIX_LISTS.format(root=root)
    )
    sources = _caption_sources(root)
    captions: dict[str, list[str]] = {}
    for src in sources:
        for vid, caps in read_captions(src).items():
            captions.setdefault(vid, caps)
    ids, dup = dedupe(read_id_list(list_path))
    entries: list[Entry] = []
    for vid in ids:
        if not captions.get(vid):
            raise missing_id_error(vid, list_path, sources, "English captions")
        entries.append(Entry(vid, captions[vid]))
    notes = {
        "split_file": str(list_path),
        "caption_source": [str(s) for s in sources] if len(sources) > 1 else str(sources[0]),
        "duplicate_ids_dropped": dup,
    }
    pattern = "<videoID>.mp4 (any extension, any depth)"
    return build_split("vatex", split, entries, vroot, multi_caption=True, notes=notes, name_pattern=pattern)
