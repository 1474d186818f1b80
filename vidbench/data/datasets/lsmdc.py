"""LSMDC 2016 adapter: the challenge's tab-separated annotation files (train / val / 1k public test).

Each line has exactly six tab-separated fields: ``clip_id, start_aligned, end_aligned, start_extracted,
end_extracted, sentence`` (no header). Sentences may contain quotes and commas, so lines are split on tabs
only, never with a quoting csv reader. Train/val clip ids repeat (several sentences per clip): a clip
appears once, at its first row, with all its sentences grouped in file order. The test file (1,000 clips,
one sentence each) is evaluated single-caption, 1,000 x 1,000. Videos: ``<movie>/<clip_id>.avi`` (any
extension, any depth); clip ids contain dots, so only the last extension is stripped from file names.
"""

from __future__ import annotations

from pathlib import Path

from vidbench.data.datasets.files import Entry, build_split, check_split, read_text_lines, require_annotation
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError

SPLITS: tuple[str, ...] = ("train", "val", "test")

FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
FIELDS = ("clip_id", "start_aligned", "end_aligned", "start_extracted", "end_extracted", "sentence")


def read_rows(path: Path) -> list[tuple[str, str]]:
    """``(clip_id, sentence)`` for every non-blank line, checking the six-field layout line by line."""
    rows: list[tuple[str, str]] = []
    for line_no, line in read_text_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(FIELDS):
            raise AnnotationError(
                path,
                f"line {line_no} has {len(fields)} tab-separated fields, expected {len(FIELDS)} "
                f"({', '.join(FIELDS)}): {line[:120]!r}",
                "fix or delete this line; fields must be separated by single tab characters",
            )
        clip_id, sentence = fields[0].strip(), fields[-1].strip()
        if not clip_id or not sentence:
            raise AnnotationError(
                path, f"line {line_no}: empty clip id or sentence", "fix or delete this line"
            )
        rows.append((clip_id, sentence))
    if not rows:
        raise AnnotationError(path, "no annotation lines", "re-download this file from the LSMDC site")
    return rows


def load_split(root: str | Path, split: str, *, video_root: str | Path | None = None) -> SplitIndex:
    """Index one LSMDC split; ``video_root`` (default ``root``) is searched recursively."""
    check_split("lsmdc", split, SPLITS)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    path = require_annotation(
        root,
        [FILES[split]],
        f"the LSMDC {split} annotations",
        f"request LSMDC access from MPII and put {FILES[split]} (tab-separated, 6 fields) into {root}",
    )
    rows = read_rows(path)
    grouped: dict[str, list[str]] = {}
    for clip_id, sentence in rows:
        grouped.setdefault(clip_id, []).append(sentence)
    entries = [Entry(cid, caps) for cid, caps in grouped.items()]
    notes = {"split_file": str(path), "rows": len(rows), "repeated_clip_rows": len(rows) - len(grouped)}
    return build_split(
        "lsmdc",
        split,
        entries,
        vroot,
        multi_caption=len(rows) > len(grouped),
        notes=notes,
        name_pattern="<clip_id>.avi (any extension, any depth)",
    )
