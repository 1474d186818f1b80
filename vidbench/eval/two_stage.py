"""Two-stage retrieval: recall the top-k videos of each text by a cheap score, rerank them by a fine one.

Spec methods-eercf-hcq.md A.5 (EERCF). For a block of texts against the *whole* gallery:

1. ``coarse = coarse_fn(text, video)`` ``[I, N]``; ``candidates = top-k`` of each row (:func:`recall_topk`).
2. The features of each text's candidates are gathered (:func:`gather_candidates`, leading dims
   ``[I, k]``), so the fine scorer only ever sees ``I * k`` (text, video) pairs, never ``I * N``.
3. ``fine = fine_fn(text, candidate_features, coarse_at_candidates)`` ``[I, k]``.
4. :func:`merge_reranked`, the reference's rule (``main_eercf.eval_epoch``): the whole row is the
   logit-scaled coarse score ``ls * coarse``, and each candidate is overwritten by ``100 + ls * fine``.

Ranks within a row (text-to-video) are those of "candidates by fine, then the rest by coarse" whenever the
constant lifts every candidate above the row's non-candidates (always for ``ls <= 100`` and a non-negative
fine score). Columns are another matter: video-to-text metrics come from the transpose of this one
matrix, where a column mixes lifted and unlifted texts, so the constant and the scale decide the order
and no other lift (a per-row margin, say) gives the reference's v2t numbers.

One reference step is not repeated: ``main_eercf.py`` first writes ``100 +`` its training mix, re-selects
the top k of that matrix and only then writes the final mix. The re-selection returns the same k videos
whenever every first-pass candidate value stays above the row's non-candidates (as above), so the
candidates here are the coarse top k directly.

The scorer returned by :func:`two_stage_scorer` is a pure function of (text block, whole gallery): the
caller must give it every video at once (``ScoringProtocol(whole_gallery=True)``) and may chunk texts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from vidbench.errors import ConfigError, DataError

__all__ = [
    "Features",
    "FineFn",
    "gather_candidates",
    "merge_reranked",
    "recall_topk",
    "RERANK_OFFSET",
    "rerank_bytes_per_pair",
    "two_stage_scorer",
    "two_stage_scores",
]

Features = dict[str, Tensor]
FineFn = Callable[[Features, Features, Tensor], Tensor]
ScoreFn = Callable[[Features, Features], Tensor]


def recall_topk(coarse: Tensor, k: int) -> Tensor:
    """Indices ``[I, min(k, N)]`` of each row's highest coarse scores, best first."""
    if coarse.dim() != 2:
        raise DataError(f"recall_topk expects coarse scores [n_text, n_video], got {tuple(coarse.shape)}")
    if k < 1:
        raise ConfigError(f"rerank top-k must be >= 1, got {k}")
    return torch.topk(coarse, min(k, coarse.shape[1]), dim=1, largest=True, sorted=True).indices


def gather_candidates(video: Features, candidates: Tensor, keys: Iterable[str]) -> Features:
    """For each text its candidates' features: ``video[key] [N, ...] -> [I, k, ...]`` for each key."""
    out: Features = {}
    for key in keys:
        if key not in video:
            raise DataError(f"two-stage rerank needs video feature {key!r}; the index holds {sorted(video)}")
        feats = video[key]
        flat = feats.index_select(0, candidates.reshape(-1).to(feats.device))
        out[key] = flat.reshape(*candidates.shape, *feats.shape[1:])
    return out


RERANK_OFFSET = 100.0  # main_eercf.py: the constant added to each candidate's logit-scaled fine score


def merge_reranked(
    coarse: Tensor, candidates: Tensor, fine: Tensor, *, logit_scale: float = 1.0, offset: float = RERANK_OFFSET
) -> Tensor:
    """Final ``[I, N]`` logits by the reference rule: ``ls * coarse`` everywhere, ``offset + ls * fine`` at
    each row's candidates (module docstring: why the v2t metrics need exactly this rule)."""
    if candidates.shape != fine.shape or candidates.shape[0] != coarse.shape[0]:
        raise DataError(
            f"merge_reranked: coarse {tuple(coarse.shape)}, candidates {tuple(candidates.shape)} and fine "
            f"{tuple(fine.shape)} disagree"
        )
    dtype = torch.promote_types(coarse.dtype, fine.dtype)
    ls = float(logit_scale)
    out = coarse.to(dtype) * ls
    return out.scatter(1, candidates, fine.to(dtype) * ls + offset)


def two_stage_scores(
    text: Features,
    video: Features,
    *,
    coarse_fn: ScoreFn,
    fine_fn: FineFn,
    k: int,
    keys: Iterable[str],
    logit_scale: float = 1.0,
) -> Tensor:
    """Recall-then-rerank logits ``[I, N]`` of a text block against the whole gallery (module docstring)."""
    coarse = coarse_fn(text, video)
    candidates = recall_topk(coarse, k)
    gathered = gather_candidates(video, candidates, keys)
    fine = fine_fn(text, gathered, coarse.gather(1, candidates))
    if fine.shape != candidates.shape:
        raise DataError(f"fine_fn returned {tuple(fine.shape)} for candidates {tuple(candidates.shape)}")
    return merge_reranked(coarse, candidates, fine, logit_scale=logit_scale)


def two_stage_scorer(
    coarse_fn: ScoreFn, fine_fn: FineFn, k: int, keys: Iterable[str], logit_scale: float = 1.0
) -> ScoreFn:
    """``(text_block, whole_gallery) -> [I, N]`` for a ``whole_gallery`` scoring protocol; ``logit_scale`` is
    the trained CLIP scale ``exp(logit_scale)`` the reference's logits carry."""
    keys = tuple(keys)
    if k < 1:
        raise ConfigError(f"rerank top-k must be >= 1, got {k}")

    def score(text: Features, video: Features) -> Tensor:
        return two_stage_scores(
            text, video, coarse_fn=coarse_fn, fine_fn=fine_fn, k=k, keys=keys, logit_scale=logit_scale
        )

    return score


def rerank_bytes_per_pair(n_gallery: int, k: int, candidate_bytes: float, row_copies: int = 4) -> int:
    """Working-set bytes per (text, gallery video) pair of one text's two-stage scoring, for chunking.

    Per text: ``row_copies`` float32 rows of N (coarse, scatter temporaries, output) and, for
    ``min(k, N)`` candidates, ``candidate_bytes`` each (gathered features and per-candidate temporaries),
    spread over the N pairs of the row.
    """
    per_text = row_copies * 4 * n_gallery + min(k, n_gallery) * candidate_bytes
    return max(4, math.ceil(per_text / n_gallery))
