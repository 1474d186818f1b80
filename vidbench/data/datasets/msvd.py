"""MSVD (YouTube2Text) adapter: CLIP4Clip's ``msvd_data`` folder (S2VT split 1,200 / 100 / 670).

Split lists ``{train,val,test}_list.txt`` hold one clip id per line; captions come from ``raw-captions.pkl``
(id -> list of token lists, joined with single spaces as CLIP4Clip does) or, when that is absent, from
X-Pool's ``captions_msvd.json`` (id -> list of strings). Evaluation is multi-caption (27,763 queries over
670 test videos). Clip ids look like ``<youtube id>_<start>_<end>``; the YouTube id may start with ``-`` and
contain ``_``, so ids are matched whole against file stems (``YouTubeClips/<id>.avi``, any extension/depth).
"""

from __future__ import annotations

from pathlib import Path

from vidbench.data.datasets.files import (
    Entry,
    build_split,
    check_split,
    dedupe,
    missing_id_error,
    read_id_list,
    read_json,
    read_plain_pickle,
    require_annotation,
)
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError

SPLITS: tuple[str, ...] = ("train", "val", "test")

PKL_NAME = "raw-captions.pkl"
JSON_NAME = "captions_msvd.json"
_FIX = (
    "download CLIP4Clip's msvd_data.zip (train_list.txt, val_list.txt, test_list.txt, raw-captions.pkl) "
    "and unpack it into {root}"
)


def _caption_text(value: object) -> str:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return " ".join(t.strip() for t in value if t.strip())
    raise TypeError


def read_captions(path: Path) -> dict[str, list[str]]:
    """Captions per clip id from the pickle (token lists) or the JSON twin (strings)."""
    fix = f"re-download {path.name}; it should map each clip id to a list of captions"
    obj = read_plain_pickle(path, fix) if path.suffix == ".pkl" else read_json(path, fix)
    if not isinstance(obj, dict):
        raise AnnotationError(
            path, f"expected a mapping clip id -> captions, found {type(obj).__name__}", fix
        )
    out: dict[str, list[str]] = {}
    for key, caps in obj.items():
        try:
            if not isinstance(caps, list):
                raise TypeError
            texts = [_caption_text(c) for c in caps]
        except TypeError as e:
            raise AnnotationError(
                path,
                f"key {key!r}: captions must be a list of strings or token lists, got {str(caps)[:120]}",
                fix,
            ) from e
        out[str(key)] = [t for t in texts if t]
    return out


def load_split(root: str | Path, split: str, *, video_root: str | Path | None = None) -> SplitIndex:
    """Index one MSVD split; ``video_root`` (default ``root``) is searched recursively."""
    check_split("msvd", split, SPLITS)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    fix = _FIX.format(root=root)
    list_path = require_annotation(root, [f"{split}_list.txt"], f"the {split} split list", fix)
    cap_path = require_annotation(root, [PKL_NAME, JSON_NAME], "MSVD captions", fix)
    captions = read_captions(cap_path)
    ids, dup = dedupe(read_id_list(list_path))
    entries: list[Entry] = []
    for vid in ids:
        caps = captions.get(vid) or captions.get(f"{vid}.avi")  # mmaction2 keys by file name
        if not caps:
            raise missing_id_error(vid, list_path, cap_path)
        entries.append(Entry(vid, caps))
    notes = {"split_file": str(list_path), "caption_source": str(cap_path), "duplicate_ids_dropped": dup}
    pattern = "<clip id>.avi (any extension, any depth)"
    return build_split("msvd", split, entries, vroot, multi_caption=True, notes=notes, name_pattern=pattern)
