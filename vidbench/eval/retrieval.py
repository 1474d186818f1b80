"""Similarity of every (text, video) pair of a test split, computed block by block under a memory budget.

The method contract makes ``score(text_feats, video_feats) -> [n_text, n_video]`` a pure function of the
pairs, so any block of the matrix can be computed on its own and the blocks tile the full matrix exactly.
Token-wise methods (DRL's WTI) would otherwise build ``[n_text, n_video, L_t, L_v]`` at once, which is
gigabytes on MSVD; here one block's working set is bounded by ``budget_bytes``.

Feature containers are ``dict[str, Tensor]`` whose tensors all share the leading dimension (one entry per
text or video), e.g. ``{"eot": [N, D]}`` or ``{"tokens": [N, L, D], "mask": [N, L]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from vidbench.errors import VidbenchError

__all__ = [
    "Features",
    "ScoringError",
    "choose_block_size",
    "chunked_scores",
    "concat_features",
    "index_select_features",
    "num_items",
    "slice_features",
]

Features = dict[str, Tensor]
ScoreFn = Callable[[Features, Features], Tensor]


class ScoringError(VidbenchError, ValueError):
    """A feature container, a block size or a score function's output is malformed."""


def num_items(feats: Features) -> int:
    """Number of items (the shared leading dimension) in a feature container."""
    if not feats:
        raise ScoringError("feature container is empty: expected at least one named tensor")
    sizes = {}
    for key, value in feats.items():
        if not isinstance(value, Tensor) or value.ndim == 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ScoringError(f"feature {key!r} must be a tensor with a leading item dimension, got {shape}")
        sizes[key] = value.shape[0]
    if len(set(sizes.values())) != 1:
        raise ScoringError(f"feature tensors disagree on the number of items (leading dimension): {sizes}")
    return next(iter(sizes.values()))


def slice_features(feats: Features, start: int, stop: int) -> Features:
    """Items ``start:stop`` of every tensor (views, no copy)."""
    return {key: value[start:stop] for key, value in feats.items()}


def index_select_features(feats: Features, index: Tensor) -> Features:
    """Items at ``index`` (1-D integer tensor) of every tensor, in that order."""
    return {
        key: value.index_select(0, index.to(device=value.device, dtype=torch.long))
        for key, value in feats.items()
    }


def concat_features(parts: Sequence[Features]) -> Features:
    """Concatenate containers along the item dimension; all parts must have the same keys."""
    if not parts:
        raise ScoringError("concat_features needs at least one feature container")
    keys = set(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if set(part) != keys:
            raise ScoringError(
                f"feature container {i} has keys {sorted(part)} but container 0 has {sorted(keys)}"
            )
    return {key: torch.cat([part[key] for part in parts], dim=0) for key in parts[0]}


def choose_block_size(
    n_text: int,
    n_video: int,
    *,
    budget_bytes: int = 2**30,
    bytes_per_pair: int = 4,
    text_chunk: int | None = None,
    video_chunk: int | None = None,
) -> tuple[int, int]:
    """Block shape ``(texts, videos)`` whose working set ``texts * videos * bytes_per_pair`` fits the budget.

    Full video width is preferred (one call per text block), then the width shrinks. A chunk size that is
    given is kept and the other one is fitted to the budget; when both are given they win over the budget
    (e.g. DRL's 32 x 32 for parity).
    """
    if n_text <= 0 or n_video <= 0:
        raise ScoringError(f"nothing to score: {n_text} texts x {n_video} videos")
    if budget_bytes <= 0 or bytes_per_pair <= 0:
        raise ScoringError(
            f"budget_bytes and bytes_per_pair must be positive, got {budget_bytes} and {bytes_per_pair}"
        )
    for name, value in (("text_chunk", text_chunk), ("video_chunk", video_chunk)):
        if value is not None and value <= 0:
            raise ScoringError(f"{name} must be a positive number of items, got {value}")
    if text_chunk is not None and video_chunk is not None:
        return min(text_chunk, n_text), min(video_chunk, n_video)
    max_pairs = budget_bytes // bytes_per_pair
    if text_chunk is not None:
        texts = min(text_chunk, n_text)
        _check_fits(max_pairs, texts, budget_bytes, bytes_per_pair, f"text_chunk={texts}")
        return texts, min(n_video, max_pairs // texts)
    if video_chunk is not None:
        videos = min(video_chunk, n_video)
        _check_fits(max_pairs, videos, budget_bytes, bytes_per_pair, f"video_chunk={videos}")
        return min(n_text, max_pairs // videos), videos
    _check_fits(max_pairs, 1, budget_bytes, bytes_per_pair, "one pair")
    videos = min(n_video, max_pairs)
    return min(n_text, max_pairs // videos), videos


def _check_fits(max_pairs: int, needed: int, budget_bytes: int, bytes_per_pair: int, what: str) -> None:
    if max_pairs < needed:
        raise ScoringError(
            f"budget_bytes={budget_bytes} cannot hold a block of {what} at bytes_per_pair={bytes_per_pair}; "
            "raise the budget or shrink the chunk"
        )


def chunked_scores(
    score_fn: ScoreFn,
    text: Features,
    video: Features,
    *,
    budget_bytes: int = 2**30,
    bytes_per_pair: int = 4,
    text_chunk: int | None = None,
    video_chunk: int | None = None,
    out_device: str | torch.device = "cpu",
) -> Tensor:
    """Full ``[n_text, n_video]`` score matrix, one budget-sized block of ``score_fn`` at a time.

    Args:
        score_fn: pure pairwise scorer ``(text_block, video_block) -> [n_text_block, n_video_block]``.
        text, video: feature containers (see the module docstring).
        budget_bytes: memory allowed for one block's working set.
        bytes_per_pair: the method's working set per (text, video) pair, e.g. ``4`` for a dot product or
            ``L_t * L_v * 4`` for a token-wise interaction.
        text_chunk, video_chunk: optional fixed block sizes (see :func:`choose_block_size`).
        out_device: where the assembled matrix lives (CPU by default, so the GPU only holds one block).

    Returns:
        The score matrix in ``score_fn``'s dtype, computed under ``torch.no_grad``.
    """
    n_text, n_video = num_items(text), num_items(video)
    texts, videos = choose_block_size(
        n_text,
        n_video,
        budget_bytes=budget_bytes,
        bytes_per_pair=bytes_per_pair,
        text_chunk=text_chunk,
        video_chunk=video_chunk,
    )
    out: Tensor | None = None
    with torch.no_grad():
        for t0 in range(0, n_text, texts):
            t1 = min(t0 + texts, n_text)
            text_block = slice_features(text, t0, t1)
            for v0 in range(0, n_video, videos):
                v1 = min(v0 + videos, n_video)
                block = score_fn(text_block, slice_features(video, v0, v1))
                if not isinstance(block, Tensor) or tuple(block.shape) != (t1 - t0, v1 - v0):
                    got = tuple(block.shape) if isinstance(block, Tensor) else type(block).__name__
                    raise ScoringError(
                        f"score_fn returned {got} for a block of {t1 - t0} texts x {v1 - v0} videos; it "
                        "must return a [n_text_block, n_video_block] tensor"
                    )
                if out is None:
                    out = torch.empty(n_text, n_video, dtype=block.dtype, device=out_device)
                out[t0:t1, v0:v1] = block.to(out_device)
    assert out is not None  # n_text, n_video >= 1, so at least one block ran
    return out
