"""Train/test leakage control: shared video ids, and identical files under different paths.

Why: a test video that was also trained on inflates every number (T-MASS's data-leakage report; the 1k-A
and full MSR-VTT splits share videos with the other's training lists). Ids are compared first; then, for the
files whose paths differ, identical content is detected by the sha256 of the first MiB, computed only for
files whose byte size equals that of a file on the other side (identical content implies an equal size, so
nothing is missed and most files are never read).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from vidbench.data.types import SplitIndex

__all__ = ["HASH_BYTES", "head_digest", "split_overlap"]

HASH_BYTES = 1 << 20


def head_digest(path: Path, nbytes: int = HASH_BYTES) -> str:
    """sha256 of the first ``nbytes`` of a file."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(nbytes)).hexdigest()


def _sizes(paths: set[Path]) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = defaultdict(list)
    for p in paths:
        try:
            out[p.stat().st_size].append(p)
        except OSError:
            continue  # an unreadable file cannot be compared; the data report already counts missing ones
    return out


def split_overlap(train: SplitIndex, test: SplitIndex, *, declared: bool = False) -> dict[str, Any]:
    """The overlap control's record for one (train, test) pair of splits.

    Returns ``{"status", "train_split", "shared_ids", "shared_id_examples", "identical_files",
    "identical_file_examples", "files_hashed", "note"}``; status ``pass`` (none), ``fail`` (overlap the recipe
    did not declare) or ``declared`` (overlap the recipe declares with ``data.declare_overlap``).
    """
    train_ids = {v.video_id for v in train.videos}
    shared = sorted(train_ids & {v.video_id for v in test.videos})
    train_paths = {v.path.resolve() for v in train.videos if v.path is not None and v.video_id not in shared}
    test_paths = {v.path.resolve() for v in test.videos if v.path is not None and v.video_id not in shared}
    same_path = train_paths & test_paths
    train_paths -= same_path
    test_paths -= same_path
    by_size_train, by_size_test = _sizes(train_paths), _sizes(test_paths)
    identical: list[tuple[str, str]] = []
    hashed = 0
    for size in sorted(set(by_size_train) & set(by_size_test)):
        digests: dict[str, list[Path]] = defaultdict(list)
        for p in by_size_train[size]:
            digests[head_digest(p)].append(p)
        hashed += len(by_size_train[size])
        for p in by_size_test[size]:
            hashed += 1
            for q in digests.get(head_digest(p), []):
                identical.append((q.name, p.name))
    n_files = len(identical) + len(same_path)
    overlap = len(shared) + n_files
    status = "pass" if overlap == 0 else ("declared" if declared else "fail")
    parts = []
    if shared:
        parts.append(f"{len(shared):,} test video ids are also training ids (first: {', '.join(shared[:3])})")
    if same_path:
        parts.append(f"{len(same_path):,} test files are training files under other ids")
    if identical:
        parts.append(f"{len(identical):,} test files have the same first MiB as a training file")
    note = "; ".join(parts) or f"no shared ids or identical files with {train.split}"
    if overlap and declared:
        note += " (declared by the recipe: data.declare_overlap)"
    return {
        "status": status,
        "train_split": train.split,
        "shared_ids": len(shared),
        "shared_id_examples": shared[:10],
        "identical_files": n_files,
        "identical_file_examples": [f"{a} = {b}" for a, b in identical[:10]] + [p.name for p in sorted(same_path)][:10],
        "files_hashed": hashed,
        "note": note,
    }
