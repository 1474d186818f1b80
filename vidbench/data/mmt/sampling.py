"""Pure functions that turn one video's raw features and captions into fixed-size arrays (the loader rules).

* **Timings.** Row i of an expert with feature width w is centred at ``(i + 0.5)·w``; without a width the
  centre is -1 ("unknown"). Stored ``[start, end]`` timings (s3d, vggish) enter as their mean. The loader
  then shifts every centre by +2, so timed rows get t >= 2, untimed ones exactly 1, and padding 1.
* **Tokens.** Avg and max pools are taken over **all** rows, *before* choosing ``min(N, T)`` rows without
  replacement and keeping them in time order. Training picks them at random; evaluation uses
  ``np.random.RandomState(0)`` for every expert of every video (a fixed pseudo-random subset, not linspace).
* **Missing expert.** zeros ``[T, D]``, t = 1, mask 0, zero pools.
* **Queries.** ``shufk1``: one caption at random (training on MSRVTT); ``indiv``: caption 0 of the
  (possibly index-restricted) list; ``cat``: all captions concatenated in stored order. Words whose
  start time is >= 500 s are dropped (only matters with word timings), then the first W words are kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TIME_SHIFT = 2.0  # the loader's "+2": positions 0 ([CLS]/[AGG]) and 1 (unknown time) stay free
UNKNOWN_TIME = 1.0  # t of untimed experts (centre -1 shifted by +2) and of padding slots
WORD_TIME_LIMIT_S = 500.0


def synthesised_centres(n: int, width: float | None) -> np.ndarray:
    """Centre time (seconds) of each of ``n`` rows with feature width ``width`` (-1 when None)."""
    if width is None:
        return np.full(n, -1.0)
    return (np.arange(n, dtype=np.float64) + 0.5) * width


def stored_centres(times: np.ndarray) -> np.ndarray:
    """Centres of stored ``[N, 2]`` (start, end) timings."""
    return times.mean(axis=1)


def token_times(centres: np.ndarray) -> np.ndarray:
    """The ``features_t`` value of each row: centre + 2."""
    return centres + TIME_SHIFT


def choose_rows(n: int, max_tokens: int, rng: np.random.RandomState | np.random.Generator | None) -> np.ndarray:
    """``min(n, max_tokens)`` distinct row indices in increasing order.

    :param rng: the training generator; None means evaluation: a fresh ``RandomState(0)`` (the reference).
    """
    keep = min(n, max_tokens)
    picker = np.random.RandomState(0) if rng is None else rng
    return np.sort(picker.choice(n, size=keep, replace=False))


@dataclass
class ExpertArrays:
    """One expert of one video: ``features [T, D]``, ``times [T]``, ``mask [T]``, ``avgpool``/``maxpool [D]``."""

    features: np.ndarray
    times: np.ndarray
    mask: np.ndarray
    avgpool: np.ndarray
    maxpool: np.ndarray


def missing_expert(dim: int, max_tokens: int) -> ExpertArrays:
    """A missing expert: zero rows, t = 1, mask 0, zero pools."""
    return ExpertArrays(
        np.zeros((max_tokens, dim), np.float32),
        np.full(max_tokens, UNKNOWN_TIME, np.float32),
        np.zeros(max_tokens, np.float32),
        np.zeros(dim, np.float32),
        np.zeros(dim, np.float32),
    )


def expert_arrays(
    rows: np.ndarray, times: np.ndarray, max_tokens: int, rng: np.random.RandomState | np.random.Generator | None
) -> ExpertArrays:
    """Pool over all rows, then keep ``min(N, T)`` rows in time order and pad to T.

    :param rows: ``[N, D]`` features of a present expert; :param times: ``[N]`` shifted times (centre + 2).
    """
    n, dim = rows.shape
    pick = choose_rows(n, max_tokens, rng)
    feats = np.zeros((max_tokens, dim), np.float32)
    t = np.full(max_tokens, UNKNOWN_TIME, np.float32)
    mask = np.zeros(max_tokens, np.float32)
    feats[: len(pick)] = rows[pick]
    t[: len(pick)] = times[pick]
    mask[: len(pick)] = 1.0
    return ExpertArrays(feats, t, mask, rows.mean(axis=0).astype(np.float32), rows.max(axis=0).astype(np.float32))


def build_query(
    captions: Sequence[Sequence[str]],
    caption_times: Sequence[np.ndarray | None],
    mode: str,
    py_rng: random.Random | None = None,
) -> tuple[list[str], np.ndarray]:
    """The words of one query and their ``[n, 2]`` timings (zeros when none are stored)."""
    times = [t if t is not None else np.zeros((len(c), 2)) for c, t in zip(captions, caption_times, strict=True)]
    if mode == "indiv":
        chosen = [0]
    elif mode == "cat":
        chosen = list(range(len(captions)))
    elif mode == "shufk1":
        chosen = [(py_rng or random).randrange(len(captions))]
    else:
        raise ValueError(f"unknown query mode {mode!r}; use shufk1, indiv or cat")
    words = [w for i in chosen for w in captions[i]]
    t = np.concatenate([times[i] for i in chosen]) if chosen else np.zeros((0, 2))
    return words, t


def crop_words(words: Sequence[str], times: np.ndarray, max_words: int) -> list[str]:
    """Drop words starting at >= 500 s (a lone "." when none is left), then keep the first ``max_words``."""
    kept = [w for w, start in zip(words, times[:, 0], strict=True) if start < WORD_TIME_LIMIT_S]
    if not kept:
        kept = ["."]
    return kept[:max_words]
