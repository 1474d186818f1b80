"""Where vidbench writes derived data: frame caches and manifests, never inside a dataset root.

Dataset folders on clusters are usually shared and read-only, so nothing is written next to the data.
Everything derived goes under one cache root: ``paths.cache_dir`` when set, else ``$VIDBENCH_CACHE``, else
``~/.cache/vidbench``. Frame caches are keyed by content (video paths, sizes, mtimes and sampling
parameters), so one cache root can be shared by several users and runs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def default_cache_root() -> str:
    """``$VIDBENCH_CACHE`` when set and not empty, else ``~/.cache/vidbench`` (expanded)."""
    env = os.environ.get("VIDBENCH_CACHE", "").strip()
    return str(Path(env or "~/.cache/vidbench").expanduser())


def manifest_dir(cache_root: str | Path, dataset: str, data_root: str | Path) -> Path:
    """``<cache root>/manifests/<dataset>-<8 hex of the absolute data root>``: two copies of one dataset
    (or two users' roots in a shared cache) never overwrite each other's manifests."""
    absolute = os.path.abspath(Path(data_root).expanduser())
    tag = hashlib.sha256(absolute.encode()).hexdigest()[:8]
    return Path(cache_root) / "manifests" / f"{dataset}-{tag}"
