"""Summary scores that embedding benchmarks use: R@sum, nDCG@10 and mAP, both directions.

These let a vidbench row be read next to embedding-benchmark numbers (MTEB's video track reports nDCG@10).

**Relevance.** t2v: each caption query has exactly one relevant video (its own), on single- and multi-caption
datasets alike. v2t: on a single-caption split each video query has one relevant caption; on a
**multi-caption** split a video query ranks **all captions** and every caption of that video is relevant
(binary relevance, so nDCG's ideal ranking puts all of them first). This is the multi-relevant case; R@K's
reference v2t instead ranks caption groups by their best caption (see :mod:`vidbench.eval.metrics`).

**Ties.** The reference R@K rule lets a query tied with ``k`` items contribute every tied position. The
consistent choice for graded scores is the *expected value under a uniformly random order of the tied
items* (McSherry & Najork, ECIR 2008), computed exactly, with each query weighing one. A fully collapsed
model (all scores equal) therefore gets the chance level, never a perfect or a zero score. Without ties
both scores are the textbook ones.

For a relevant item whose tie group has ``t`` items, ``r`` of them relevant, with ``n`` items (``R`` of them
relevant) strictly above, the group's expected contribution to average precision is
``sum_{i=1..t} (r/t) (R + 1 + (i-1)(r-1)/(t-1)) / (n+i)`` (slot ``i`` holds a relevant item with probability
``r/t``; given that, each earlier slot does with probability ``(r-1)/(t-1)``), and to DCG@k
``(r/t) sum_{i: n+i<=k} 1/log2(n+i+1)``. Sums over ``i`` use harmonic numbers, so huge tie groups cost
nothing extra. Scores are reported in percent (0-100), like R@K.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from vidbench.eval.metrics import RECALL_KS, MetricInputError, as_caption_video

__all__ = ["NDCG_K", "SUMMARY_KEYS", "expected_ap_ndcg", "ranking_scores", "rsum"]

NDCG_K = 10
SUMMARY_KEYS: tuple[str, ...] = ("RSum", "t2v_nDCG10", "t2v_mAP", "v2t_nDCG10", "v2t_mAP")
_BLOCK_ELEMENTS = 1 << 22
_EULER_GAMMA = 0.5772156649015329


def rsum(metrics: Mapping[str, float]) -> float:
    """R@1 + R@5 + R@10 of both directions (``t2v_R1`` ... ``v2t_R10`` of a metrics dict), in points."""
    try:
        return float(sum(metrics[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in RECALL_KS))
    except KeyError as exc:
        raise MetricInputError(f"R@sum needs t2v/v2t R@1, R@5 and R@10; {exc.args[0]} is missing") from None


def _harmonic(n: Tensor) -> Tensor:
    """H(n) = 1 + 1/2 + ... + 1/n for n >= 0 (float64), via the digamma function."""
    return torch.digamma(n + 1.0) + _EULER_GAMMA


def _discount_prefix(k: int, device: torch.device) -> Tensor:
    """``c[m] = sum_{p=1..m} 1/log2(p+1)`` for m = 0..k."""
    p = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    return torch.cat([torch.zeros(1, dtype=torch.float64, device=device), torch.cumsum(1.0 / torch.log2(p + 1), 0)])


def expected_ap_ndcg(
    before: Tensor, tied: Tensor, rel_before: Tensor, rel_tied: Tensor, n_relevant: Tensor, k: int = NDCG_K
) -> tuple[Tensor, Tensor]:
    """Expected AP and DCG@k shares of relevant items, one entry per relevant item (see the module docstring).

    Args:
        before: items scored strictly above the relevant item.
        tied: items scored equal to it (itself included), ``>= 1``.
        rel_before: relevant items strictly above it.
        rel_tied: relevant items tied with it (itself included), ``>= 1``.
        n_relevant: relevant items of its query (for the ``1/R`` of AP).
        k: DCG cut-off.

    Returns:
        ``(ap_share, dcg_share)``: summing ``ap_share`` over a query's relevant items gives its expected AP;
        summing ``dcg_share`` gives its expected DCG@k (each item carries ``1/rel_tied`` of its group).
    """
    n, t = before.double(), tied.double()
    rb, r = rel_before.double(), rel_tied.double()
    d = _harmonic(n + t) - _harmonic(n)  # sum_{i=1..t} 1/(n+i)
    pair = torch.where(t > 1, (r - 1.0) / (t - 1.0).clamp_min(1.0), torch.zeros_like(t))
    group_ap = (r / t) * ((rb + 1.0) * d + pair * (t - (n + 1.0) * d))
    ap_share = group_ap / r / n_relevant.double()
    disc = _discount_prefix(k, before.device)
    hi = (before + tied).clamp(max=k).long()
    lo = before.clamp(max=k).long()
    dcg_share = (disc[hi] - disc[lo]) / t
    return ap_share, dcg_share


def _ideal_dcg(n_relevant: Tensor, k: int) -> Tensor:
    disc = _discount_prefix(k, n_relevant.device)
    return disc[n_relevant.clamp(max=k).long()]


def _single_relevant(sim: Tensor, gt: Tensor, k: int) -> tuple[float, float]:
    """Mean nDCG@k and mAP (fractions) of rows with one relevant column ``gt[i]``."""
    ap_sum, ndcg_sum = 0.0, 0.0
    step = max(1, _BLOCK_ELEMENTS // max(1, sim.shape[1]))
    for start in range(0, sim.shape[0], step):
        rows, g = sim[start : start + step], gt[start : start + step]
        own = rows.gather(1, g[:, None])
        before = (rows > own).sum(1)
        tied = (rows == own).sum(1)
        one = torch.ones_like(before)
        ap, dcg = expected_ap_ndcg(before, tied, one - 1, one, one, k)
        ap_sum += float(ap.sum())
        ndcg_sum += float(dcg.sum())  # ideal DCG of one relevant item is 1
    n = sim.shape[0]
    return ndcg_sum / n, ap_sum / n


def _v2t_all_captions(sim: Tensor, cv: Tensor, k: int) -> tuple[float, float]:
    """Mean nDCG@k and mAP over video queries ranking all captions; a video's own captions are relevant."""
    n_text, n_video = sim.shape
    by_video = sim.T  # [V, S]
    n_rel = torch.bincount(cv, minlength=n_video)
    ap = torch.zeros(n_video, dtype=torch.float64, device=sim.device)
    dcg = torch.zeros(n_video, dtype=torch.float64, device=sim.device)
    step = max(1, _BLOCK_ELEMENTS // max(1, n_text))
    for start in range(0, n_text, step):
        stop = min(start + step, n_text)
        vid = cv[start:stop]
        rows = by_video[vid]  # the row of each caption's own video
        own = sim[torch.arange(start, stop, device=sim.device), vid]
        before = (rows > own[:, None]).sum(1)
        tied = (rows == own[:, None]).sum(1)
        # relevant items above / tied: compare with the scores of the same video's own captions
        own_mask = vid[:, None] == cv[None, :]
        rel_before = ((rows > own[:, None]) & own_mask).sum(1)
        rel_tied = ((rows == own[:, None]) & own_mask).sum(1)
        a, g = expected_ap_ndcg(before, tied, rel_before, rel_tied, n_rel[vid], k)
        ap.index_add_(0, vid, a)
        dcg.index_add_(0, vid, g)
    ndcg = dcg / _ideal_dcg(n_rel, k)
    return float(ndcg.mean()), float(ap.mean())


def ranking_scores(
    sim: Tensor,
    caption_video: Tensor | Sequence[int],
    *,
    sim_v2t: Tensor | None = None,
    multi_caption: bool | None = None,
    k: int = NDCG_K,
) -> dict[str, float]:
    """nDCG@k and mAP (percent) of a ``[n_text, n_video]`` score matrix, both directions.

    Args:
        sim: scores, row = caption, column = video (t2v, and v2t unless ``sim_v2t`` is given).
        caption_video: ``[n_text]`` video index of each caption.
        sim_v2t: separate v2t scores in the same layout (a direction-specific post-processing).
        multi_caption: the split's protocol flag; ``None`` infers it (single iff one caption per video).
        k: the nDCG cut-off (10).

    Returns:
        ``{"t2v_nDCG10", "t2v_mAP", "v2t_nDCG10", "v2t_mAP"}`` (the key follows ``k``).

    Example:
        >>> s = ranking_scores(torch.eye(3), torch.arange(3))
        >>> s["t2v_nDCG10"], s["v2t_mAP"]
        (100.0, 100.0)
    """
    cv = as_caption_video(caption_video).to(sim.device)
    if sim.ndim != 2 or cv.shape[0] != sim.shape[0] or not sim.is_floating_point():
        raise MetricInputError(
            f"ranking_scores needs a floating [n_text, n_video] matrix and one video index per row; got "
            f"{tuple(sim.shape)} and {tuple(cv.shape)}"
        )
    v2t = sim if sim_v2t is None else sim_v2t.to(sim.device)
    clean = [torch.nan_to_num(m, nan=-math.inf) for m in (sim, v2t)]  # NaN never ranks above anything
    n_text, n_video = sim.shape
    counts = torch.bincount(cv, minlength=n_video)
    one_to_one = n_text == n_video and bool((counts == 1).all())
    single = one_to_one if multi_caption is None else (not multi_caption and one_to_one)
    t2v_ndcg, t2v_map = _single_relevant(clean[0], cv, k)
    if single:
        caption_of_video = torch.empty_like(cv)
        caption_of_video[cv] = torch.arange(n_text, device=cv.device)
        v2t_ndcg, v2t_map = _single_relevant(clean[1].T, caption_of_video, k)
    else:
        v2t_ndcg, v2t_map = _v2t_all_captions(clean[1], cv, k)
    return {
        f"t2v_nDCG{k}": 100.0 * t2v_ndcg,
        "t2v_mAP": 100.0 * t2v_map,
        f"v2t_nDCG{k}": 100.0 * v2t_ndcg,
        "v2t_mAP": 100.0 * v2t_map,
    }
