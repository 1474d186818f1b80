"""Dataset adapters: parse the annotation files users have into a :class:`~vidbench.data.types.SplitIndex`.

Each module exposes ``SPLITS`` and ``load_split(root, split, *, video_root=None)``. ``DEFAULTS`` holds each
dataset's standard sampling settings from the CLIP4Clip-family run scripts (spec/datasets.md §0).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from vidbench.data.datasets import activitynet, didemo, lsmdc, msrvtt, msvd, vatex
from vidbench.data.types import SplitIndex
from vidbench.errors import ConfigError

DATASETS: dict[str, ModuleType] = {
    "msrvtt": msrvtt,
    "msvd": msvd,
    "vatex": vatex,
    "lsmdc": lsmdc,
    "activitynet": activitynet,
    "didemo": didemo,
}

_SHORT = {"max_words": 32, "max_frames": 12, "framerate": 1, "slice_framepos": 2}
_LONG = {"max_words": 64, "max_frames": 64, "framerate": 1, "slice_framepos": 2}

DEFAULTS: dict[str, dict] = {
    "msrvtt": dict(_SHORT),
    "msvd": dict(_SHORT),
    "vatex": dict(_SHORT),
    "lsmdc": dict(_SHORT),
    "activitynet": dict(_LONG),  # window per video: [0, ceil(duration)], set by the adapter
    "didemo": {**_LONG, "window": didemo.WINDOW_S},
}


def get_dataset(dataset: str) -> ModuleType:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}") from None


def load_split(
    dataset: str, root: str | Path, split: str, *, video_root: str | Path | None = None
) -> SplitIndex:
    """Index ``split`` of ``dataset``: annotation files in ``root``, videos anywhere under ``video_root``."""
    module = get_dataset(dataset)
    if split not in module.SPLITS:
        raise ConfigError(
            f"unknown split {split!r} for dataset {dataset!r}; choose one of: {', '.join(module.SPLITS)}"
        )
    return module.load_split(root, split, video_root=video_root)


__all__ = ["DATASETS", "DEFAULTS", "get_dataset", "load_split"]
