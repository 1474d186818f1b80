"""Text-video retrieval metrics: R@1/5/10, median rank (MdR) and mean rank (MnR), both directions.

Two protocols, always recorded separately by callers:

* **reference** (``strict=False``, the default) reproduces the metric code shared by CLIP4Clip and DRL
  (spec/methods-clip4clip-drl.md §4), quirks included, so our numbers are comparable with the papers':

  - single caption per video: ``compute_metrics`` in both directions. A query whose ground-truth (GT) score
    ties with ``k-1`` other scores contributes all ``k`` tied 0-based positions to a pooled list, and the
    median is numpy's (mean of the two middle values for an even count). A fully collapsed model (all
    scores equal) therefore gets R@1 = 100/N, not 100 and not 0.
  - several captions per video: t2v ranks every caption against all videos (``tensor_text_to_video_metrics``,
    lower-middle median like ``torch.median``); v2t scores each (video query, caption group) pair by the
    best caption of the group and feeds that ``[V, V]`` matrix to ``compute_metrics``. That v2t is lenient:
    a video ranks V caption groups, not all captions.

  **Deliberate deviations**, both deterministic where the reference is not or is lossy: (1) multi-caption
  t2v breaks ties optimistically (rank = number of strictly greater scores) where the reference's unstable
  argsort breaks them arbitrarily; without ties the two agree exactly. (2) R@K is computed in float64, where
  the reference multi-caption t2v uses float32 (e.g. 52.94117736816406 there, 52.94117647058823 here).

* **strict** (``strict=True``): one rank per query with pessimistic ties (every other item scoring at least
  the GT score is ranked ahead), numpy median everywhere, and multi-caption v2t ranks **all captions**: a
  video's rank is the position of its best-ranked own caption. This is the protocol of codebases that rank
  individual captions (e.g. collaborative-experts), and it cannot be gamed by constant scores.

NaN scores are a model bug, so :func:`retrieval_metrics` rejects them unless ``allow_nan=True``, which gives
the reference behaviour: a query whose GT score is not finite is dropped (``n_queries_*`` then says how many
queries were actually scored). Ranks are computed with exact comparisons in the input dtype; summaries use
float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor

from vidbench.errors import VidbenchError

__all__ = [
    "MMT_METRIC_KEYS",
    "RECALL_KS",
    "MetricInputError",
    "as_caption_video",
    "averaged_tie_ranks",
    "group_max_similarity",
    "mmt_retrieval_metrics",
    "optimistic_ranks",
    "pessimistic_ranks",
    "population_std_rank",
    "rank_positions_reference",
    "retrieval_metrics",
    "summarize_positions",
    "v2t_all_caption_ranks",
]

RECALL_KS: tuple[int, ...] = (1, 5, 10)
MedianRule = Literal["numpy", "lower"]
# Comparisons are done in row blocks of at most this many elements so that a 60k x 3k matrix never needs a
# full boolean copy of itself.
_BLOCK_ELEMENTS = 1 << 22


class MetricInputError(VidbenchError, ValueError):
    """A similarity matrix, ground-truth vector or caption-to-video mapping is malformed."""


# ----------------------------------------------------------------------------------------------- helpers


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, _BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _count_per_row(sim: Tensor, ref: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """For each row ``i`` of ``sim``, how many entries ``x`` satisfy ``op(x, ref[i])`` (NaN never does)."""
    counts = torch.empty(sim.shape[0], dtype=torch.long, device=sim.device)
    for start, stop in _row_blocks(*sim.shape):
        counts[start:stop] = op(sim[start:stop], ref[start:stop, None]).sum(dim=1)
    return counts


def _check_sim_gt(sim: Tensor, gt: Tensor) -> Tensor:
    if sim.ndim != 2:
        raise MetricInputError(f"sim must be a 2-D [n_query, n_gallery] tensor, got shape {tuple(sim.shape)}")
    if not sim.is_floating_point():
        raise MetricInputError(f"sim must be a floating-point tensor, got dtype {sim.dtype}")
    if gt.ndim != 1 or gt.shape[0] != sim.shape[0]:
        raise MetricInputError(
            f"gt must be 1-D with one gallery index per query ({sim.shape[0]}), got shape {tuple(gt.shape)}"
        )
    if gt.is_floating_point() or gt.is_complex() or gt.dtype == torch.bool:
        raise MetricInputError(f"gt must hold integer gallery indices, got dtype {gt.dtype}")
    gt = gt.to(device=sim.device, dtype=torch.long)
    if gt.numel() and (int(gt.min()) < 0 or int(gt.max()) >= sim.shape[1]):
        raise MetricInputError(
            f"gt indices must lie in [0, {sim.shape[1]}) (the gallery size), "
            f"got min {int(gt.min())}, max {int(gt.max())}"
        )
    return gt


def _gt_scores(sim: Tensor, gt: Tensor) -> Tensor:
    return sim.gather(1, gt[:, None]).squeeze(1)


def _expand_tied_runs(first: Tensor, length: Tensor) -> Tensor:
    """Concatenate ``arange(first[i], first[i] + length[i])`` over ``i`` without a Python loop."""
    if first.numel() == 0:
        return first.new_zeros(0)
    starts = first.repeat_interleave(length)
    run_offset = (torch.cumsum(length, 0) - length).repeat_interleave(length)
    return starts + torch.arange(starts.numel(), device=first.device) - run_offset


def _reference_positions(sim: Tensor, gt: Tensor) -> tuple[Tensor, int]:
    """Pooled tied positions plus the number of queries that contributed (finite GT score)."""
    gt = _check_sim_gt(sim, gt)
    score = _gt_scores(sim, gt)
    # The reference subtracts the GT score from the sorted row and keeps exact zeros; inf - inf is NaN,
    # so a non-finite GT score contributes nothing, exactly like a NaN one.
    keep = torch.isfinite(score)
    sim, score = sim[keep], score[keep]
    greater = _count_per_row(sim, score, torch.gt)
    tied = _count_per_row(sim, score, torch.eq)  # >= 1: the GT entry equals itself
    return _expand_tied_runs(greater, tied), int(keep.sum())


def _optimistic(sim: Tensor, gt: Tensor) -> tuple[Tensor, int]:
    gt = _check_sim_gt(sim, gt)
    score = _gt_scores(sim, gt)
    keep = torch.isfinite(score)
    return _count_per_row(sim[keep], score[keep], torch.gt), int(keep.sum())


def _pessimistic(sim: Tensor, gt: Tensor) -> tuple[Tensor, int]:
    gt = _check_sim_gt(sim, gt)
    score = _gt_scores(sim, gt)
    keep = torch.isfinite(score)
    return _count_per_row(sim[keep], score[keep], torch.ge) - 1, int(keep.sum())


# ------------------------------------------------------------------------------------------- public API


def rank_positions_reference(sim: Tensor, gt: Tensor) -> Tensor:
    """0-based rank positions pooled with the CLIP4Clip ``compute_metrics`` tie rule.

    For query ``i`` let ``g`` be the number of scores strictly greater than the GT score ``sim[i, gt[i]]``
    and ``k`` the number of scores equal to it (GT included). The query contributes the ``k`` positions
    ``g, ..., g+k-1``; a non-finite GT score contributes nothing.

    Args:
        sim: ``[n_query, n_gallery]`` scores, higher is better.
        gt: ``[n_query]`` integer index of each query's ground-truth gallery item.

    Returns:
        1-D long tensor of pooled positions (length = sum of ``k`` over queries with a finite GT score).

    Example:
        >>> rank_positions_reference(torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0]]), torch.tensor([0, 2]))
        tensor([0, 1, 1])
    """
    return _reference_positions(sim, gt)[0]


def optimistic_ranks(sim: Tensor, gt: Tensor) -> Tensor:
    """0-based rank per query, ties resolved in the query's favour (number of strictly greater scores).

    Queries whose GT score is not finite are dropped.
    """
    return _optimistic(sim, gt)[0]


def pessimistic_ranks(sim: Tensor, gt: Tensor) -> Tensor:
    """0-based rank per query, ties counted against the query (other scores ``>=`` the GT score).

    Queries whose GT score is not finite are dropped.
    """
    return _pessimistic(sim, gt)[0]


def group_max_similarity(sim: Tensor, caption_video: Tensor, n_video: int | None = None) -> Tensor:
    """``[V, V]`` video-query x caption-group scores: ``M[v, g] = max(sim[c, v] for captions c of video g)``.

    This is the reference multi-caption v2t matrix (``tensor_video_to_text_sim``); NaN scores count as -inf.
    """
    n_video = sim.shape[1] if n_video is None else n_video
    cv = caption_video.to(device=sim.device, dtype=torch.long)
    clean = torch.nan_to_num(sim, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    grouped = torch.full((n_video, sim.shape[1]), float("-inf"), dtype=sim.dtype, device=sim.device)
    grouped.scatter_reduce_(0, cv[:, None].expand(-1, sim.shape[1]), clean, reduce="amax", include_self=True)
    return grouped.T  # grouped[g, v] -> M[v, g]


def _all_caption(sim: Tensor, caption_video: Tensor) -> tuple[Tensor, int]:
    cv = caption_video.to(device=sim.device, dtype=torch.long)
    n_video = sim.shape[1]
    best_own = group_max_similarity(sim, cv, n_video).diagonal()  # best score among each video's captions
    keep = torch.isfinite(best_own)
    scores_by_video = sim.T  # [V, S]: each row is one video query over all captions
    at_least = _count_per_row(scores_by_video, best_own, torch.ge)
    # Own captions scoring >= the best own score are exactly those tied with it; they are not "ahead".
    own_score = _gt_scores(sim, cv)
    own_tied = torch.bincount(cv, weights=(own_score >= best_own[cv]).double(), minlength=n_video).long()
    return (at_least - own_tied)[keep], int(keep.sum())


def v2t_all_caption_ranks(sim: Tensor, caption_video: Tensor) -> Tensor:
    """Strict video-to-text rank per video: position of its best own caption among **all** captions.

    Ties with other videos' captions count against the video; ties among its own captions do not (one of
    them is the best). Videos whose best own score is not finite are dropped.

    Args:
        sim: ``[n_text, n_video]`` scores.
        caption_video: ``[n_text]`` video index of each caption.
    """
    _validate_mapping(sim, as_caption_video(caption_video))
    return _all_caption(sim, caption_video)[0]


def summarize_positions(pos: Tensor, median: MedianRule = "numpy") -> dict[str, float]:
    """R@1/5/10 (percent), MdR and MnR (1-based) of 0-based rank positions.

    Args:
        pos: 1-D 0-based positions (pooled or one per query).
        median: ``"numpy"`` averages the two middle values of an even count (``np.median``); ``"lower"``
            takes the lower one (``torch.median``).

    Returns:
        ``{"R1", "R5", "R10", "MdR", "MnR", "count"}``; ``count`` is the number of positions summarised.

    Example:
        >>> pos = torch.tensor([0, 3])
        >>> summarize_positions(pos)["MdR"], summarize_positions(pos, median="lower")["MdR"]
        (2.5, 1.0)
    """
    if median not in ("numpy", "lower"):
        raise MetricInputError(f"median must be 'numpy' or 'lower', got {median!r}")
    p = pos.detach().flatten().to(torch.float64)
    n = p.numel()
    if n == 0:
        raise MetricInputError(
            "no rank positions to summarise: every query's ground-truth score was NaN or infinite"
        )
    out = {f"R{k}": 100.0 * float((p < k).sum()) / n for k in RECALL_KS}
    ordered = p.sort().values
    if median == "numpy" and n % 2 == 0:
        mid = 0.5 * (float(ordered[n // 2 - 1]) + float(ordered[n // 2]))
    else:
        mid = float(ordered[(n - 1) // 2])
    out["MdR"] = mid + 1.0
    out["MnR"] = float(p.mean()) + 1.0
    out["count"] = n
    return out


# ---------------------------------------------------------------------------------------- full protocol


def as_caption_video(caption_video: Tensor | Sequence[int]) -> Tensor:
    """1-D long tensor of video indices from a tensor or a list (e.g. ``SplitIndex.caption_video``)."""
    cv = caption_video if isinstance(caption_video, Tensor) else torch.as_tensor(list(caption_video))
    if cv.ndim != 1:
        raise MetricInputError(
            f"caption_video must be 1-D (one video index per caption), got shape {tuple(cv.shape)}"
        )
    if cv.numel() and (cv.is_floating_point() or cv.is_complex() or cv.dtype == torch.bool):
        raise MetricInputError(f"caption_video must hold integer video indices, got dtype {cv.dtype}")
    return cv.to(torch.long)


def _validate_mapping(sim: Tensor, cv: Tensor) -> None:
    if sim.ndim != 2:
        raise MetricInputError(f"sim must be a 2-D [n_text, n_video] tensor, got shape {tuple(sim.shape)}")
    if not sim.is_floating_point():
        raise MetricInputError(f"sim must be a floating-point tensor, got dtype {sim.dtype}")
    n_text, n_video = sim.shape
    if n_text == 0 or n_video == 0:
        raise MetricInputError(f"sim is empty (shape {tuple(sim.shape)}): nothing to rank")
    if cv.shape[0] != n_text:
        raise MetricInputError(
            f"caption_video has {cv.shape[0]} entries but sim has {n_text} rows; pass one video index per "
            "caption (row), in row order"
        )
    lo, hi = int(cv.min()), int(cv.max())
    if lo < 0 or hi >= n_video:
        raise MetricInputError(
            f"caption_video must hold video indices in [0, {n_video}) (sim's columns), got min {lo}, max {hi}"
        )
    counts = torch.bincount(cv.cpu(), minlength=n_video)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        raise MetricInputError(
            f"{empty.numel()} of {n_video} videos have no caption (first: {empty[:5].tolist()}); every "
            "gallery video needs at least one caption, or drop its column from sim"
        )


def _reject_nan(name: str, sim: Tensor) -> None:
    bad = torch.isnan(sim)
    if bool(bad.any()):
        row, col = (int(i) for i in torch.nonzero(bad)[0])
        raise MetricInputError(
            f"{name} holds {int(bad.sum())} NaN scores (first at text {row}, video {col}): the model "
            "produced NaN; fix it, or pass allow_nan=True for the reference behaviour (queries with a NaN "
            "ground-truth score are dropped and n_queries_* shrinks)"
        )


def population_std_rank(pos: Tensor) -> float:
    """Population standard deviation of the 1-based ranks (``np.std(rank + 1)``, the reference's Std_Rank)."""
    p = pos.detach().flatten().to(torch.float64)
    if p.numel() == 0:
        raise MetricInputError("no rank positions to summarise")
    return float(p.std(unbiased=False))


def _prefixed(direction: str, summary: dict[str, float], n_queries: int) -> dict[str, float]:
    keys = (*(f"R{k}" for k in RECALL_KS), "MdR", "MnR", *(("Std_Rank",) if "Std_Rank" in summary else ()))
    out = {f"{direction}_{key}": summary[key] for key in keys}
    out[f"n_queries_{direction}"] = n_queries
    return out


def retrieval_metrics(
    sim: Tensor,
    caption_video: Tensor | Sequence[int],
    *,
    strict: bool = False,
    sim_v2t: Tensor | None = None,
    multi_caption: bool | None = None,
    allow_nan: bool = False,
) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics of a ``[n_text, n_video]`` similarity matrix.

    Args:
        sim: scores, row = caption (text query), column = video; higher is better. Used for t2v, and for v2t
            unless ``sim_v2t`` is given.
        caption_video: ``[n_text]`` index of each caption's video; every video needs at least one caption.
            Captions need not be contiguous or ordered.
        strict: ``False`` = reference protocol, ``True`` = strict protocol (see the module docstring).
        sim_v2t: optional separate scores for v2t in the same ``[n_text, n_video]`` layout (e.g. after a
            direction-specific post-processing such as DSL).
        multi_caption: the dataset's evaluation protocol flag. ``None`` infers it: single-caption iff every
            video has exactly one caption. ``True`` forces the multi-caption reference path even for a 1:1
            mapping (as the reference does for a multi-sentence dataset). Ignored when ``strict``.
        allow_nan: keep the reference behaviour for NaN scores instead of raising.

    Returns:
        ``t2v_R1, t2v_R5, t2v_R10, t2v_MdR, t2v_MnR, v2t_R1, ..., v2t_MnR`` (floats; R@K in percent, ranks
        1-based) and ``n_queries_t2v``, ``n_queries_v2t`` (ints: queries actually scored). The multi-caption
        reference path adds ``t2v_Std_Rank``, the population std of the 1-based t2v ranks, as the reference's
        ``tensor_text_to_video_metrics`` reports it (its single-caption ``compute_metrics`` has none).

    Raises:
        MetricInputError: (a ``ValueError``) on malformed shapes, dtypes or mappings, a video without
            captions, or NaN scores without ``allow_nan``.

    Example:
        >>> m = retrieval_metrics(torch.eye(3), torch.arange(3))
        >>> m["t2v_R1"], m["v2t_MdR"], m["n_queries_t2v"]
        (100.0, 1.0, 3)
    """
    cv = as_caption_video(caption_video)
    _validate_mapping(sim, cv)
    v2t_sim = sim if sim_v2t is None else sim_v2t
    if v2t_sim.shape != sim.shape:
        raise MetricInputError(
            f"sim_v2t must have sim's [n_text, n_video] shape {tuple(sim.shape)}, got {tuple(v2t_sim.shape)}"
        )
    if not v2t_sim.is_floating_point():
        raise MetricInputError(f"sim_v2t must be a floating-point tensor, got dtype {v2t_sim.dtype}")
    if not allow_nan:
        _reject_nan("sim", sim)
        if sim_v2t is not None:
            _reject_nan("sim_v2t", sim_v2t)
    cv = cv.to(sim.device)
    v2t_sim = v2t_sim.to(sim.device)
    n_text, n_video = sim.shape
    one_to_one = n_text == n_video and bool((torch.bincount(cv, minlength=n_video) == 1).all())
    if multi_caption is False and not one_to_one:
        raise MetricInputError(
            "multi_caption=False needs exactly one caption per video, but caption_video maps "
            f"{n_text} captions onto {n_video} videos unevenly; pass multi_caption=True or None"
        )
    single = one_to_one if multi_caption is None else not multi_caption

    if strict:
        t2v_pos, t2v_n = _pessimistic(sim, cv)
        v2t_pos, v2t_n = _all_caption(v2t_sim, cv)
        t2v = summarize_positions(t2v_pos, "numpy")
        v2t = summarize_positions(v2t_pos, "numpy")
    elif single:
        caption_of_video = torch.empty_like(cv)
        caption_of_video[cv] = torch.arange(n_text, device=cv.device)
        t2v_pos, t2v_n = _reference_positions(sim, cv)
        v2t_pos, v2t_n = _reference_positions(v2t_sim.T, caption_of_video)
        t2v = summarize_positions(t2v_pos, "numpy")
        v2t = summarize_positions(v2t_pos, "numpy")
    else:
        t2v_pos, t2v_n = _optimistic(sim, cv)
        grouped = group_max_similarity(v2t_sim, cv, n_video)
        v2t_pos, v2t_n = _reference_positions(grouped, torch.arange(n_video, device=cv.device))
        t2v = summarize_positions(t2v_pos, "lower")
        t2v["Std_Rank"] = population_std_rank(t2v_pos)  # the reference's multi-caption t2v report has it
        v2t = summarize_positions(v2t_pos, "numpy")
    return {**_prefixed("t2v", t2v, t2v_n), **_prefixed("v2t", v2t, v2t_n)}


# ------------------------------------------------------------------------------- MMT / HCQ metric family

MMT_RECALL_KS: tuple[int, ...] = (1, 5, 10, 50)
MMT_METRIC_NAMES: tuple[str, ...] = ("R1", "R5", "R10", "R50", "MdR", "MnR", "GeoMean")
MMT_METRIC_KEYS: tuple[str, ...] = tuple(f"{d}_{m}" for d in ("t2v", "v2t") for m in MMT_METRIC_NAMES)


def averaged_tie_ranks(sim: Tensor, gt: Tensor) -> Tensor:
    """0-based rank per query with ties *averaged*: ``g + (k - 1) / 2`` (float64), where ``g`` counts the
    scores strictly above the ground-truth score and ``k`` those equal to it (the GT entry included), i.e. the
    mean of the tied sorted positions (MMT's ``t2v_metrics`` tie rule, which HCQ uses)."""
    gt = _check_sim_gt(sim, gt)
    score = _gt_scores(sim, gt)
    greater = _count_per_row(sim, score, torch.gt).double()
    tied = _count_per_row(sim, score, torch.eq).double()
    return greater + (tied - 1.0) / 2.0


def _v2t_best_averaged_ranks(sim: Tensor, cv: Tensor) -> Tensor:
    """Per video: the best (smallest) tie-averaged rank of its own captions among **all** captions."""
    n_text, n_video = sim.shape
    by_video = sim.T  # [V, S]: one row per video query
    ranks = torch.empty(n_text, dtype=torch.float64, device=sim.device)
    step = max(1, _BLOCK_ELEMENTS // max(1, n_text))
    for start in range(0, n_text, step):
        stop = min(start + step, n_text)
        rows = by_video[cv[start:stop]]  # the row of each caption's own video
        own = sim[torch.arange(start, stop, device=sim.device), cv[start:stop]]
        greater = (rows > own[:, None]).sum(1).double()
        tied = (rows == own[:, None]).sum(1).double()
        ranks[start:stop] = greater + (tied - 1.0) / 2.0
    best = torch.full((n_video,), float("inf"), dtype=torch.float64, device=sim.device)
    return best.scatter_reduce_(0, cv, ranks, reduce="amin", include_self=True)


def _mmt_summary(ranks: Tensor) -> dict[str, float]:
    r = ranks.detach().flatten().to(torch.float64).cpu()
    n = r.numel()
    # as the reference: R@1 counts ranks equal to 0, R@K (K > 1) ranks below K; a half-tied 0.5 is no R@1 hit
    out = {f"R{k}": 100.0 * float((r == 0).sum() if k == 1 else (r < k).sum()) / n for k in MMT_RECALL_KS}
    ordered = r.sort().values
    mid = float(ordered[(n - 1) // 2]) if n % 2 else 0.5 * (float(ordered[n // 2 - 1]) + float(ordered[n // 2]))
    out["MdR"] = mid + 1.0
    out["MnR"] = float(r.mean()) + 1.0
    recalls = [out["R1"], out["R5"], out["R10"]]
    out["GeoMean"] = 0.0 if min(recalls) <= 0 else math.exp(sum(math.log(x) for x in recalls) / len(recalls))
    return out


def mmt_retrieval_metrics(sim: Tensor, caption_video: Tensor | Sequence[int]) -> dict[str, float]:
    """HCQ's metric family (MMT's ``t2v_metrics`` / ``v2t_metrics``) of a ``[n_text, n_video]`` score matrix.

    - t2v: one rank per caption, a tied score getting the *average* of the tied 0-based positions (so a tie
      at the top is not an R@1 hit: R@K counts ranks ``< K`` and R@1 needs exactly 0).
    - v2t: for each video, the best rank over its captions, each caption ranked among **all** captions (ties
      averaged the same way).
    - R@1, R@5, R@10, R@50 (percent), MdR (numpy median + 1), MnR (mean + 1) and the geometric mean of
      R@1, R@5, R@10 (0 when one of them is 0).

    A pure function of the matrix (any method's scores: HCQ on CLIP, HCQ on MMT features). It is a protocol of
    its own: record it as ``metrics_mmt``, never in a column with the CLIP4Clip-rule ``metrics``.

    Returns:
        ``{t2v_R1, t2v_R5, t2v_R10, t2v_R50, t2v_MdR, t2v_MnR, t2v_GeoMean, v2t_...}`` (floats).

    Raises:
        MetricInputError: malformed shapes or mappings, a video without captions, or NaN scores.

    Example:
        >>> m = mmt_retrieval_metrics(torch.tensor([[1.0, 1.0], [0.0, 2.0]]), torch.arange(2))
        >>> m["t2v_R1"], m["t2v_MnR"]
        (50.0, 1.25)
    """
    cv = as_caption_video(caption_video)
    _validate_mapping(sim, cv)
    _reject_nan("sim", sim)
    cv = cv.to(sim.device)
    t2v = _mmt_summary(averaged_tie_ranks(sim, cv))
    v2t = _mmt_summary(_v2t_best_averaged_ranks(sim, cv))
    return {**{f"t2v_{k}": v for k, v in t2v.items()}, **{f"v2t_{k}": v for k, v in v2t.items()}}
