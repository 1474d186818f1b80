"""Contrastive losses shared by the methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_diagonal(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log softmax(row)[i] with the positive on the diagonal (CLIP4Clip ``CrossEn``)."""
    if logits.shape[0] != logits.shape[1]:
        raise ValueError(f"contrastive logits must be square, got {tuple(logits.shape)}")
    return -torch.diagonal(F.log_softmax(logits, dim=-1)).mean()


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """(CrossEn(S) + CrossEn(S^T)) / 2 over a [B, B] text-by-video logit matrix.

    Duplicate videos in a batch (two captions of one video) count as negatives, as in the reference.
    """
    return (cross_entropy_diagonal(logits) + cross_entropy_diagonal(logits.t())) / 2
