"""Sanity controls run on every test: a shuffled-caption control and the split's standard counts.

Both are pure functions; the caller (``methods/base.py`` and ``runner.py``) records their verdicts in
``result.json`` under ``controls`` and the leaderboard flags a failure. The third control, train/test video
overlap, reads files and lives in :mod:`vidbench.data.overlap`.

**Shuffled captions.** Every caption is replaced by a caption of another video (a random derangement of the
videos, all captions of a video moving together), then scored and ranked against the *original* ground truth
with the reference metric. A ranking that uses only the text falls to chance, ``R@1 = 100/N``; a higher value
means the pipeline sees something other than the text (a position- or id-keyed leak in scoring, a gallery
ordered like the queries, a metric that reads the diagonal). A trained model may score *below* chance (it
ranks the video the borrowed caption describes first), so only the upper side fails.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CHANCE_TOLERANCE_POINTS",
    "STANDARD_COUNTS",
    "counts_check",
    "shuffled_caption_rows",
    "shuffled_verdict",
]

# "Within a few points of 100/N": at least 3 points, more where N is small and the binomial spread is larger.
CHANCE_TOLERANCE_POINTS = 3.0

# (queries, gallery) of each standard test split, from spec/datasets.md (None: the spec gives no exact count).
STANDARD_COUNTS: dict[tuple[str, str], tuple[int | None, int]] = {
    ("msrvtt", "test-1ka"): (1_000, 1_000),
    ("msrvtt", "test-full"): (59_800, 2_990),
    ("msvd", "test"): (27_763, 670),
    ("vatex", "test"): (None, 1_500),  # ~15,000 queries; HGR's exact caption count is unverified
    ("lsmdc", "test"): (1_000, 1_000),
    ("activitynet", "val_1"): (4_917, 4_917),
    ("didemo", "test"): (1_004, 1_004),  # paragraphs: one per video
}


def shuffled_caption_rows(caption_video: Tensor, seed: int = 0) -> Tensor:
    """For each caption ``i``, the index of a caption of another video (``[n_text]`` long tensor).

    Videos are deranged along one random cycle (``v -> next video in a shuffled order``), so no video keeps its
    own captions when there are at least two; caption ``i`` takes the ``j``-th caption of its video's image,
    ``j`` = its own position within its video modulo that video's caption count.
    """
    cv = caption_video.detach().cpu().to(torch.long)
    n_video = int(cv.max()) + 1 if cv.numel() else 0
    if n_video < 2:
        raise ValueError("the shuffled-caption control needs at least two videos")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_video, generator=g)
    image = torch.empty(n_video, dtype=torch.long)
    image[order] = order.roll(-1)
    by_video = torch.argsort(cv, stable=True)  # caption indices grouped by video
    counts = torch.bincount(cv, minlength=n_video)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(cv)
    position[by_video] = torch.arange(cv.numel()) - starts[cv[by_video]]
    target = image[cv]
    return by_video[starts[target] + position % counts[target]]


def shuffled_verdict(shuffled_r1: float, real_r1: float, n_video: int, seed: int) -> dict[str, Any]:
    """The control's record: pass when shuffled t2v R@1 is at most chance plus the tolerance.

    The tolerance is ``max(3 points, 3 binomial standard deviations)`` with one trial per video (captions of
    a video move together, so they are not independent trials).
    """
    p = 1.0 / n_video
    tolerance = max(CHANCE_TOLERANCE_POINTS, 300.0 * math.sqrt(p * (1.0 - p) / n_video))
    chance = 100.0 * p
    return {
        "status": "pass" if shuffled_r1 <= chance + tolerance else "fail",
        "t2v_R1": float(shuffled_r1),
        "real_t2v_R1": float(real_r1),
        "chance_R1": chance,
        "tolerance": tolerance,
        "seed": int(seed),
    }


def counts_check(
    dataset: str,
    split: str,
    n_queries: int,
    n_gallery: int,
    *,
    missing_ids: list[str] | None = None,
    synthetic: bool = False,
) -> dict[str, Any]:
    """Compare the evaluated query and gallery counts with the split's standard ones.

    Returns ``{"status", "queries", "gallery", "standard_queries", "standard_gallery", "missing_ids", "note"}``
    with status ``standard`` (equal), ``short`` (fewer videos than the standard; ``missing_ids`` says which),
    ``different`` (counts differ otherwise) or ``no-standard`` (synthetic or custom data, or a split the spec
    gives no count for).
    """
    missing = list(missing_ids or [])
    out: dict[str, Any] = {"queries": int(n_queries), "gallery": int(n_gallery), "missing_ids": missing[:50]}
    standard = None if synthetic else STANDARD_COUNTS.get((dataset, split))
    if standard is None:
        why = "synthetic data" if synthetic else f"no standard count known for {dataset}/{split}"
        return {**out, "status": "no-standard", "standard_queries": None, "standard_gallery": None, "note": why}
    std_q, std_g = standard
    out.update(standard_queries=std_q, standard_gallery=std_g)
    if n_gallery == std_g and (std_q is None or n_queries == std_q):
        return {**out, "status": "standard", "note": f"{n_queries:,} × {n_gallery:,} as the standard split"}
    if n_gallery < std_g:
        named = f" ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})" if missing else ""
        note = f"{std_g - n_gallery:,} of {std_g:,} test videos missing{named}; queries {n_queries:,}"
        return {**out, "status": "short", "note": note}
    q = "?" if std_q is None else f"{std_q:,}"
    return {**out, "status": "different", "note": f"{n_queries:,} × {n_gallery:,}, standard {q} × {std_g:,}"}
