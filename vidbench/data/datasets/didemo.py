"""DiDeMo adapter for paragraph-to-video retrieval (train 8,392 / val 1,065 / test 1,004 videos).

Reads LocalizingMoments' ``{train,val,test}_data.json`` (a list of moments: ``annotation_id``,
``description``, ``video``, ``times``, ...) filtered by collaborative-experts' ``{train,val,test}_list.txt``
(one Flickr file name per line, with its original extension; some end in a bare ``.``). The raw jsons hold
more videos than the lists, so the list decides membership. Each video becomes one paragraph: its
descriptions in the json's order, joined with single spaces; one query per video, evaluated single-caption.

Time window: every video gets ``[0, 31]`` s. This is the CLIP4Clip convention: it computes per-moment times
and then overrides them with 0..31 s because the videos were truncated to 30 s for annotation, so at 1 fps
at most ~32 frames are read even with ``max_frames=64``. Moment timestamps are not used.

Video files come under three naming schemes; a list entry matches a file when it equals the file name
(original Flickr names), the name minus one trailing ``.mp4`` (AWS download script: ``x.mov.mp4``,
``x..mp4``), the file stem (``x.mov.webm``), or — last resort — shares its stem (``x.mov`` -> ``x.mp4``,
re-encoded copies).
"""

from __future__ import annotations

from pathlib import Path

from vidbench.data.datasets.files import (
    Entry,
    Scheme,
    build_split,
    check_split,
    dedupe,
    missing_id_error,
    read_id_list,
    read_json,
    require_annotation,
    split_stem,
)
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError

SPLITS: tuple[str, ...] = ("train", "val", "test")

WINDOW_S: tuple[float, float] = (0.0, 31.0)
_FIX_JSON = "put LocalizingMoments' data/{split}_data.json into {root}"
_FIX_LIST = "put collaborative-experts' misc/datasets/didemo/{split}_list.txt into {root}"


def _candidates(entry: str) -> list[tuple[Scheme, str]]:
    return [("name", entry), ("name_minus_mp4", entry), ("stem", entry), ("stem", split_stem(entry))]


def read_moments(path: Path) -> dict[str, list[str]]:
    """Descriptions per video file name, in the json's order."""
    obj = read_json(path)
    if not isinstance(obj, list):
        raise AnnotationError(
            path,
            f"expected a JSON list of moments, found {type(obj).__name__}",
            "use LocalizingMoments' {train,val,test}_data.json",
        )
    out: dict[str, list[str]] = {}
    for j, m in enumerate(obj):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("video"), str)
            or not isinstance(m.get("description"), str)
        ):
            raise AnnotationError(
                path,
                f"moment [{j}] lacks a string 'video' or 'description': {str(m)[:120]}",
                "re-download this file; this moment is malformed",
            )
        text = m["description"].strip()
        if text:
            out.setdefault(m["video"].strip(), []).append(text)
    return out


def load_split(root: str | Path, split: str, *, video_root: str | Path | None = None) -> SplitIndex:
    """Index one DiDeMo split; ``video_root`` (default ``root``) is searched recursively."""
    check_split("didemo", split, SPLITS)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    json_path = require_annotation(
        root, [f"{split}_data.json"], f"the DiDeMo {split} moments", _FIX_JSON.format(split=split, root=root)
    )
    list_path = require_annotation(
        root, [f"{split}_list.txt"], f"the DiDeMo {split} list", _FIX_LIST.format(split=split, root=root)
    )
    moments = read_moments(json_path)
    names, dup = dedupe(read_id_list(list_path))
    entries: list[Entry] = []
    for name in names:
        texts = moments.get(name)
        if not texts:
            raise missing_id_error(name, list_path, json_path, "descriptions")
        entries.append(Entry(name, [" ".join(texts)], *WINDOW_S))
    notes = {
        "split_file": str(list_path),
        "caption_source": str(json_path),
        "duplicate_ids_dropped": dup,
        "annotated_videos_not_in_list": len(set(moments) - set(names)),
        "window_s": list(WINDOW_S),
    }
    return build_split(
        "didemo",
        split,
        entries,
        vroot,
        candidates=_candidates,
        multi_caption=False,
        text_unit="paragraph",
        notes=notes,
        name_pattern="the list's name as is, <name>.mp4, or <stem>.<ext> (any depth)",
    )
