"""Reading the files users have: annotation files with clear errors, and a recursive video file index.

Dataset adapters share two jobs that go wrong in the same ways for every dataset:

* annotation / split files that are missing, unparsable or of the wrong shape must fail with an
  :class:`~vidbench.errors.AnnotationError` naming the file (and row / id / key) and what to put where;
* video files must be found wherever users keep them: any folder depth, any container extension,
  several naming schemes. The folder is walked once per process (cached by resolved root) and lookup
  tables keyed by file name, name minus ``.mp4`` and stem are built lazily on first use.

:func:`build_split` turns ordered ``(video id, captions, window)`` entries into a :class:`SplitIndex`
with every id resolved to a file (or ``None``; the DataModule applies the missing-video policy).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidbench.data.types import SplitIndex, VideoRef
from vidbench.errors import AnnotationError, ConfigError

# Files that are never videos, even when their stem equals a video id (captions, partial downloads,
# audio-only streams, frames, archives). Everything else counts as a candidate video file.
# fmt: off
NON_VIDEO_SUFFIXES = frozenset({
    ".json", ".txt", ".csv", ".tsv", ".pkl", ".pickle", ".npy", ".npz", ".pt", ".pth", ".h5", ".hdf5",  # data
    ".yaml", ".yml", ".md", ".py", ".sh", ".log", ".html", ".xml", ".srt", ".vtt", ".ass",  # text
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp",  # frames, thumbnails
    ".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz",  # archives
    ".part", ".ytdl", ".tmp", ".temp", ".lock", ".db",  # unfinished downloads, bookkeeping
    ".wav", ".mp3", ".m4a", ".aac", ".flac", ".opus",  # audio-only streams
})
# fmt: on

Scheme = Literal["name", "name_minus_mp4", "stem"]


def split_stem(name: str) -> str:
    """``name`` minus its last ``.ext``: ``a.mov.mp4`` -> ``a.mov``, ``a.`` -> ``a``, ``a`` -> ``a``.

    Unlike ``PurePath.stem`` this treats a bare trailing dot as an empty extension, as DiDeMo lists do.
    """
    head, dot, _ = name.rpartition(".")
    return head if dot and head else name


def _scheme_key(name: str, scheme: Scheme) -> str | None:
    if scheme == "name":
        return name
    if scheme == "stem":
        return split_stem(name)
    return name[: -len(".mp4")] if name.lower().endswith(".mp4") and len(name) > 4 else None


@dataclass
class KeyTable:
    """Video files keyed by one naming scheme; on a collision the first file in index order wins."""

    paths: dict[str, Path]
    collisions: dict[str, int]  # key -> number of further files that mapped to it


@dataclass
class FileIndex:
    """All regular files under ``root`` (relative paths, shortest path first, then by name)."""

    root: Path
    files: list[Path]
    unreadable_dirs: list[Path] = field(default_factory=list)
    _tables: dict[Scheme, KeyTable] = field(default_factory=dict, repr=False)
    _by_name_all: dict[str, list[Path]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def exists(self) -> bool:
        return self.root.is_dir()

    def table(self, scheme: Scheme) -> KeyTable:
        """Lookup table of video files for ``scheme`` (built once, then reused)."""
        with self._lock:
            if scheme not in self._tables:
                paths: dict[str, Path] = {}
                collisions: dict[str, int] = {}
                for rel in self.files:
                    if not _is_video_name(rel.name):
                        continue
                    key = _scheme_key(rel.name, scheme)
                    if key is None:
                        continue
                    if key in paths:
                        collisions[key] = collisions.get(key, 0) + 1
                    else:
                        paths[key] = self.root / rel
                self._tables[scheme] = KeyTable(paths, collisions)
            return self._tables[scheme]

    def find(self, candidates: Iterable[tuple[Scheme, str]]) -> tuple[Path | None, bool]:
        """First hit among ``(scheme, key)`` candidates, tried in order, and whether its key was ambiguous."""
        for scheme, key in candidates:
            tab = self.table(scheme)
            hit = tab.paths.get(key)
            if hit is not None:
                return hit, key in tab.collisions
        return None, False

    def files_named(self, name: str) -> list[Path]:
        """Every file (any type) called exactly ``name``, in index order (shallowest first)."""
        with self._lock:
            if self._by_name_all is None:
                table: dict[str, list[Path]] = {}
                for rel in self.files:
                    table.setdefault(rel.name, []).append(self.root / rel)
                self._by_name_all = table
            return list(self._by_name_all.get(name, []))


def _is_video_name(name: str) -> bool:
    if name.startswith("."):
        return False
    dot = name.rfind(".")
    return dot <= 0 or name[dot:].lower() not in NON_VIDEO_SUFFIXES


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Relative paths of all regular files under ``root``; follows directory symlinks, never twice.

    Breadth-first with sorted entries, so when two links reach one folder the shallowest, alphabetically
    first path claims it on every filesystem.
    """
    files: list[Path] = []
    unreadable: list[Path] = []
    seen: set[tuple[int, int]] = set()
    queue: deque[Path] = deque([Path()])
    try:
        st = os.stat(root)
    except OSError:
        return files, unreadable
    seen.add((st.st_dev, st.st_ino))
    while queue:
        rel_dir = queue.popleft()
        try:
            with os.scandir(root / rel_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            unreadable.append(root / rel_dir)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders (.cache, ._AppleDouble, .git) are never data
            try:
                if entry.is_dir(follow_symlinks=True):
                    est = entry.stat(follow_symlinks=True)
                    ident = (est.st_dev, est.st_ino)
                    if ident not in seen:  # a symlink loop or a second link to the same folder
                        seen.add(ident)
                        queue.append(rel_dir / entry.name)
                elif entry.is_file(follow_symlinks=True):
                    files.append(rel_dir / entry.name)
            except OSError:
                continue  # broken symlink or a file that vanished mid-walk
    files.sort(key=lambda p: (len(p.parts), len(str(p)), str(p)))
    return files, unreadable


_CACHE: dict[Path, FileIndex] = {}
_CACHE_LOCK = threading.Lock()


def scan_files(root: str | Path, *, refresh: bool = False) -> FileIndex:
    """Index every file under ``root`` once per process (cached by resolved path; ``refresh`` re-walks).

    The cache assumes the folder does not change while the process runs; call with ``refresh=True``
    (or :func:`clear_file_index_cache`) after adding files.
    """
    key = Path(root).expanduser().resolve()
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached is not None and not refresh:
        return cached
    files, unreadable = _walk(key)
    index = FileIndex(
        root=Path(os.path.abspath(Path(root).expanduser())), files=files, unreadable_dirs=unreadable
    )
    with _CACHE_LOCK:
        _CACHE[key] = index
    return index


def clear_file_index_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


# ---------------------------------------------------------------------------------------------------------
# Annotation files


def find_annotation(root: str | Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` found directly in ``root``, else at the shallowest depth below it.

    Users often keep annotations in a sub-folder (``MSRVTT/annotation/``); two different files with the
    same name at the same shallowest depth are ambiguous and rejected.
    """
    root = Path(root).expanduser()
    for name in names:
        if (root / name).is_file():
            return root / name
    if not root.is_dir():
        return None
    index = scan_files(root)
    for name in names:
        hits = index.files_named(name)
        if not hits:
            continue
        depth = len(hits[0].relative_to(root).parts)
        same = [h for h in hits if len(h.relative_to(root).parts) == depth]
        if len(same) > 1:
            listing = ", ".join(str(h) for h in same)
            raise AnnotationError(
                same[0],
                f"found {len(same)} files named {name} at the same depth: {listing}",
                f"keep one {name} (or move the one to use directly into {root})",
            )
        return hits[0]
    return None


def require_annotation(root: str | Path, names: Sequence[str], what: str, fix: str) -> Path:
    """:func:`find_annotation`, but a missing file is an :class:`AnnotationError` saying what to put where."""
    path = find_annotation(root, names)
    if path is None:
        root = Path(root).expanduser()
        wanted = " or ".join(names)
        where = "" if root.is_dir() else f" (the folder {root} does not exist)"
        raise AnnotationError(root / names[0], f"{what} not found: expected {wanted} in {root}{where}", fix)
    return path


def read_json(path: Path, fix: str = "") -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            path,
            f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
            fix or "re-download this file; it may be truncated or not JSON at all",
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(path, f"cannot read: {e}", fix or "check the file's permissions") from e


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only built-in containers and strings: a caption file never needs code objects."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only dict/list/str are expected)")


def read_plain_pickle(path: Path, fix: str = "") -> Any:
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f, encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, UnicodeDecodeError, IndexError, KeyError) as e:
        raise AnnotationError(path, f"not a readable pickle of plain captions: {e}", fix) from e
    except OSError as e:
        raise AnnotationError(path, f"cannot read: {e}", fix or "check the file's permissions") from e


def read_text_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line without its newline)`` for every line; a BOM and ``\\r`` are removed."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(path, f"cannot read as UTF-8 text: {e}", "check the file's permissions") from e
    return [(i, line.rstrip("\r")) for i, line in enumerate(text.split("\n"), start=1)]


def read_id_list(path: Path) -> list[str]:
    """One id per line (surrounding whitespace and blank lines ignored); an empty list is an error."""
    ids = [line.strip() for _, line in read_text_lines(path) if line.strip()]
    if not ids:
        raise AnnotationError(path, "the split list is empty", "put one video id per line in this file")
    return ids


def read_csv_rows(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a comma-separated file with a header holding ``required`` columns, with their line numbers."""
    lines = [line for _, line in read_text_lines(path)]
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise AnnotationError(
            path,
            f"header {header} lacks column(s) {missing}",
            f"the first line must be the header {','.join(required)}",
        )
    rows: list[tuple[int, dict[str, str]]] = []
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        if not any(clean.values()):
            continue
        rows.append((reader.line_num, clean))
    if not rows:
        raise AnnotationError(path, "no data rows after the header", "re-download this file")
    return rows


def dedupe(ids: Sequence[str]) -> tuple[list[str], int]:
    """Ids in first-appearance order, and how many repeats were dropped."""
    out = list(dict.fromkeys(ids))
    return out, len(ids) - len(out)


def missing_id_error(
    video_id: str, split_file: Path, ann_files: Path | Sequence[Path], kind: str = "captions"
) -> AnnotationError:
    """The error for an id that a split list names but the annotation file(s) do not cover."""
    files = [ann_files] if isinstance(ann_files, Path) else list(ann_files)
    where = " / ".join(str(f) for f in files)
    names = " / ".join(f.name for f in files)
    return AnnotationError(
        split_file,
        f"video id {video_id!r} is listed here but has no {kind} in {where}",
        f"use the {split_file.name} and {names} that belong together (same release), "
        f"or remove {video_id!r} from {split_file.name}",
    )


# ---------------------------------------------------------------------------------------------------------
# Building the split index


@dataclass(frozen=True)
class Entry:
    """One gallery video with its captions (in order) and an optional window in seconds."""

    video_id: str
    captions: list[str]
    start_s: float | None = None
    end_s: float | None = None


def stem_candidates(video_id: str) -> list[tuple[Scheme, str]]:
    """The common scheme: the file stem is the id (any extension); an extension-less file named the id."""
    return [("stem", video_id), ("name", video_id)]


def example_names(candidates: Iterable[tuple[Scheme, str]]) -> list[str]:
    """The file names that would match, in the order tried: ``<stem>.<ext>`` means any video extension."""
    names: list[str] = []
    for scheme, key in candidates:
        name = {"stem": f"{key}.<ext>", "name": key, "name_minus_mp4": f"{key}.mp4"}[scheme]
        if name not in names:
            names.append(name)
    return names


def build_split(
    dataset: str,
    split: str,
    entries: Sequence[Entry],
    video_root: str | Path,
    *,
    candidates: Callable[[str], Iterable[tuple[Scheme, str]]] = stem_candidates,
    multi_caption: bool,
    text_unit: str = "sentence",
    notes: dict[str, object] | None = None,
    name_pattern: str = "<id>.<ext>",
) -> SplitIndex:
    """Resolve every entry's file under ``video_root`` and lay captions out grouped in video order.

    ``name_pattern`` says in words which file names are looked for; it is recorded in ``notes`` with the
    names tried for one id (a missing one when there is one), so "not found" messages can show both.
    """
    index = scan_files(video_root)
    videos: list[VideoRef] = []
    captions: list[str] = []
    caption_video: list[int] = []
    ambiguous = 0
    for i, e in enumerate(entries):
        path, amb = index.find(candidates(e.video_id))
        ambiguous += int(amb)
        videos.append(VideoRef(e.video_id, path, e.start_s, e.end_s))
        captions.extend(e.captions)
        caption_video.extend([i] * len(e.captions))
    info: dict[str, object] = dict(notes or {})
    example = next((v.video_id for v in videos if v.path is None), videos[0].video_id if videos else None)
    info.update(
        video_root=os.path.abspath(Path(video_root).expanduser()),
        name_pattern=name_pattern,
        example_id=example,
        example_names=example_names(candidates(example)) if example is not None else [],
        videos=len(videos),
        captions=len(captions),
        videos_found=sum(v.path is not None for v in videos),
        videos_missing=sum(v.path is None for v in videos),
        ambiguous_video_files=ambiguous,
    )
    if not index.exists:
        info["video_root_missing"] = True
    if index.unreadable_dirs:
        info["unreadable_dirs"] = [str(p) for p in index.unreadable_dirs[:10]]
    return SplitIndex(
        dataset=dataset,
        split=split,
        videos=videos,
        captions=captions,
        caption_video=caption_video,
        multi_caption=multi_caption,
        text_unit=text_unit,
        notes=info,
    )


def check_split(dataset: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ConfigError(
            f"unknown split {split!r} for dataset {dataset!r}; choose one of: {', '.join(splits)}"
        )
