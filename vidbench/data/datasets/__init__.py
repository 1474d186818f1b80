"""Dataset adapters: parse the annotation files users have into a :class:`~vidbench.data.types.SplitIndex`.

Each module exposes ``SPLITS`` and ``load_split(root, split, *, video_root=None)`` (``custom`` also takes the
recipe's ``data.custom`` options and accepts any split name). ``DEFAULTS`` holds each
dataset's standard sampling settings from the CLIP4Clip-family run scripts (spec/datasets.md §0).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from vidbench.data.datasets import activitynet, custom, didemo, lsmdc, msrvtt, msvd, vatex
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
# ``data.dataset: custom``: your own annotation files (data.custom; README "Your own dataset"). Kept apart from
# DATASETS, the adapters of a published format with fixed splits and sampling defaults.
CUSTOM = "custom"

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
    if dataset == CUSTOM:
        return custom
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join([*DATASETS, CUSTOM])}") from None


def dataset_name(data: Any) -> str:
    """The dataset as result.json and the leaderboard name it: ``data.custom.name`` for a custom dataset."""
    if data.dataset == CUSTOM:
        return str(((data.get("custom") or {}).get("name")) or "custom")
    return str(data.dataset)


def load_split(
    dataset: str,
    root: str | Path,
    split: str,
    *,
    video_root: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> SplitIndex:
    """Index ``split`` of ``dataset``: annotation files in ``root``, videos anywhere under ``video_root``.

    ``options`` is the recipe's ``data.custom`` section, read by the ``custom`` adapter only.
    """
    module = get_dataset(dataset)
    if module is custom:
        return custom.load_split(root, split, video_root=video_root, options=options)
    if split not in module.SPLITS:
        raise ConfigError(
            f"unknown split {split!r} for dataset {dataset!r}; choose one of: {', '.join(module.SPLITS)}"
        )
    return module.load_split(root, split, video_root=video_root)


__all__ = ["CUSTOM", "DATASETS", "DEFAULTS", "dataset_name", "get_dataset", "load_split"]
