"""Your own dataset without code (``data.dataset: custom``): one annotation file per split, CSV, TSV or JSONL.

Columns (CSV/TSV header, or keys of each JSON Lines object): ``video`` (an id, matched against file stems
anywhere under the video root, or a path relative to the video root), ``caption``, and optionally
``start`` / ``end`` in seconds (a clip of a longer video: each distinct (video, start, end) is one gallery
item) and ``split``. Rows of one clip are its captions, in file order: ``data.custom.captions: multi``
evaluates each as a query (multi-caption, as MSVD/VATEX), ``paragraph`` joins them into one query (as
ActivityNet/DiDeMo). ``data.custom.annotations`` names the file under ``data.root``; ``{split}`` in it is
replaced by the split (``{split}.csv``), and a file without ``{split}`` holds every split in its ``split``
column.

Every problem names the file, the line and the fix: a missing column, an empty caption, a clip listed in two
splits, a duplicate row, a file that is not UTF-8, a bad time.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidbench.data.datasets.files import Entry, Scheme, build_split, stem_candidates
from vidbench.data.types import SplitIndex, VideoRef
from vidbench.errors import AnnotationError, ConfigError

SPLITS = None  # any split name the files use
REQUIRED = ("video", "caption")
OPTIONAL = ("start", "end", "split")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
CAPTION_MODES = ("multi", "paragraph")


@dataclass(frozen=True)
class Row:
    line: int
    video: str
    caption: str
    start: float | None
    end: float | None
    split: str | None

    @property
    def clip(self) -> tuple[str, float | None, float | None]:
        return (self.video, self.start, self.end)


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(path, f"cannot read: {exc}", "check the path and the file's permissions") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AnnotationError(
            path,
            f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})",
            f"save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`",
        ) from exc


def _time(path: Path, line: int, key: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(
            path, f"line {line}: {key} {value!r} is not a number of seconds", f"write {key} as seconds, e.g. 12.5"
        ) from None
    if t < 0:
        raise AnnotationError(path, f"line {line}: {key} {t} is negative", f"{key} counts seconds from 0")
    return t


def _records(path: Path, text: str, fmt: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs; the header (CSV/TSV) or every object (JSONL) must hold the required columns."""
    fix = f"columns {', '.join(REQUIRED)} are required; {', '.join(OPTIONAL)} are optional"
    if fmt == "jsonl":
        out = []
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                msg = f"line {n}: not a JSON object: {exc.msg}"
                raise AnnotationError(path, msg, "write one JSON object per line") from exc
            if not isinstance(obj, dict):
                raise AnnotationError(path, f"line {n}: expected a JSON object, found {type(obj).__name__}", fix)
            missing = [c for c in REQUIRED if c not in obj]
            if missing:
                raise AnnotationError(path, f"line {n}: missing column(s) {missing}", fix)
            out.append((n, obj))
        return out
    lines = text.splitlines()
    reader = csv.DictReader(lines, delimiter="\t" if fmt == "tsv" else ",")
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        sep = "tab" if fmt == "tsv" else "comma"
        raise AnnotationError(
            path,
            f"line 1: the header {header} lacks column(s) {missing}",
            f"{fix}; the first line is the {sep}-separated header",
        )
    rows = []
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        if any(clean.values()):
            rows.append((reader.line_num, clean))
    return rows


def read_rows(path: Path) -> list[Row]:
    """Every row of one annotation file, checked (empty caption, bad times, duplicates)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AnnotationError(path, f"unknown annotation format {path.suffix!r}", f"use one of {sorted(FORMATS)}")
    rows: list[Row] = []
    seen: dict[tuple, int] = {}
    for n, rec in _records(path, _decode(path), fmt):
        video = str(rec.get("video") or "").strip()
        caption = str(rec.get("caption") or "").strip()
        if not video:
            raise AnnotationError(path, f"line {n}: empty video", "give every row a video id or relative path")
        if not caption:
            raise AnnotationError(
                path, f"line {n}: empty caption for video {video!r}", "write the caption, or remove the row"
            )
        start, end = _time(path, n, "start", rec.get("start")), _time(path, n, "end", rec.get("end"))
        if start is not None and end is not None and end <= start:
            raise AnnotationError(path, f"line {n}: end {end} is not after start {start}", "swap or fix the times")
        split = str(rec["split"]).strip() if rec.get("split") not in (None, "") else None
        row = Row(n, video, caption, start, end, split)
        key = (row.clip, caption, split)
        if key in seen:
            raise AnnotationError(
                path,
                f"line {n}: duplicate of line {seen[key]} (video {video!r}, same caption and times)",
                "remove one of the two rows; repeated rows would count one query twice",
            )
        seen[key] = n
        rows.append(row)
    if not rows:
        raise AnnotationError(path, "no rows", "add one row per caption: video, caption[, start, end, split]")
    return rows


def _clip_id(row: Row) -> str:
    if row.start is None and row.end is None:
        return row.video
    return f"{row.video}@{'' if row.start is None else f'{row.start:g}'}-{'' if row.end is None else f'{row.end:g}'}"


def _options(options: Mapping[str, Any] | None) -> tuple[str, str, str]:
    o = dict(options or {})
    name, pattern, mode = o.get("name") or "custom", o.get("annotations") or "{split}.csv", o.get("captions") or "multi"
    if mode not in CAPTION_MODES:
        raise ConfigError(f"data.custom.captions = {mode!r}; choose one of {list(CAPTION_MODES)}")
    return str(name), str(pattern), str(mode)


def _check_other_splits(root: Path, pattern: str, split: str, rows: list[Row], path: Path) -> None:
    """A clip of this split must not be listed in another split's file (a split's list is its membership)."""
    prefix, _, suffix = pattern.partition("{split}")
    mine = {r.clip: r.line for r in rows}
    for other in sorted(root.glob(prefix + "*" + suffix)):
        rel = other.relative_to(root).as_posix()
        other_split = rel[len(prefix) : len(rel) - len(suffix)]
        if other == path or other_split == split or "/" in other_split:
            continue
        try:
            theirs = read_rows(other)
        except AnnotationError:
            continue  # that split's own problems are reported when it is loaded
        for r in theirs:
            if r.clip in mine:
                raise AnnotationError(
                    path,
                    f"line {mine[r.clip]}: video {r.video!r} is listed in split {split!r} and in split "
                    f"{other_split!r} ({other}, line {r.line})",
                    "keep each video (clip) in one split, or the test split leaks into training",
                )


def _check_split_column(path: Path, rows: list[Row]) -> None:
    first: dict[tuple, Row] = {}
    for r in rows:
        if r.split is None:
            raise AnnotationError(
                path,
                f"line {r.line}: no split (this file holds every split)",
                "fill the split column, or name one file per split with {split} in data.custom.annotations",
            )
        prev = first.setdefault(r.clip, r)
        if prev.split != r.split:
            raise AnnotationError(
                path,
                f"line {r.line}: video {r.video!r} is listed in split {prev.split!r} (line {prev.line}) and in "
                f"split {r.split!r}",
                "keep each video (clip) in one split, or the test split leaks into training",
            )


def load_split(
    root: str | Path, split: str, *, video_root: str | Path | None = None, options: Mapping[str, Any] | None = None
) -> SplitIndex:
    """Index ``split`` of a custom dataset; ``options`` is the recipe's ``data.custom`` section."""
    name, pattern, mode = _options(options)
    root = Path(root).expanduser()
    vroot = Path(video_root).expanduser() if video_root is not None else root
    per_split = "{split}" in pattern
    path = root / pattern.replace("{split}", split)
    if not path.is_file():
        raise AnnotationError(
            path,
            f"annotation file of split {split!r} not found",
            f"write it (columns video, caption[, start, end, split]) or set data.custom.annotations "
            f"(now {pattern!r}) and data.root (now {root})",
        )
    rows = read_rows(path)
    if per_split:
        if any(r.split not in (None, split) for r in rows):
            bad = next(r for r in rows if r.split not in (None, split))
            raise AnnotationError(
                path, f"line {bad.line}: split {bad.split!r} in the file of split {split!r}", "fix the split column"
            )
        _check_other_splits(root, pattern, split, rows, path)
    else:
        _check_split_column(path, rows)
        rows = [r for r in rows if r.split == split]
        if not rows:
            raise AnnotationError(path, f"no row has split {split!r}", "check data.train_split / data.test_split")
    clips: dict[str, list[Row]] = {}
    for r in rows:
        clips.setdefault(_clip_id(r), []).append(r)
    entries, video_of = [], {}
    for cid, group in clips.items():
        texts = [r.caption for r in group]
        entries.append(Entry(cid, [" ".join(texts)] if mode == "paragraph" else texts, group[0].start, group[0].end))
        video_of[cid] = group[0].video

    def candidates(cid: str) -> list[tuple[Scheme, str]]:
        video = video_of[cid]
        if "/" in video:  # a relative path: resolved directly below; the name is the fallback for the notes
            return [("name", Path(video).name), *stem_candidates(Path(video).name)]
        return stem_candidates(video)

    notes = {"annotation_file": str(path), "caption_mode": mode}
    index = build_split(
        name,
        split,
        entries,
        vroot,
        candidates=candidates,
        multi_caption=mode == "multi" and len(rows) > len(clips),
        text_unit="paragraph" if mode == "paragraph" else "sentence",
        notes=notes,
        name_pattern="<video>.<ext> (any depth), or the video column as a path relative to the video root",
    )
    # a video given as a relative path is that file, not any file of the same name elsewhere
    fixed = []
    for ref in index.videos:
        video = video_of[ref.video_id]
        if "/" in video:
            direct = vroot / video
            ref = VideoRef(ref.video_id, direct if direct.is_file() else None, ref.start_s, ref.end_s)
        fixed.append(ref)
    index.videos = fixed
    index.notes.update(
        videos_found=sum(v.path is not None for v in fixed), videos_missing=sum(v.path is None for v in fixed)
    )
    return index
