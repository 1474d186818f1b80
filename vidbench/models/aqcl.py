"""Asymmetric-Quantized Contrastive Learning (AQ-CL), HCQ's loss, and its smoothing schedule.

Spec methods-eercf-hcq.md B.4. Per level, with texts in rows and cosine similarities over the batch:

    L_AQ   = CE_rows(cos(t, q(v)) / tau) + CE_rows(cos(q(t), v)^T / tau)
    L_feat = CE_rows(cos(t, v) / tau)    + CE_rows(cos(t, v)^T / tau)

t2v compares raw text with quantised video, v2t quantised text with raw video (the two directions are
summed, not averaged). The level loss ``(1 - w_e) L_AQ + w_e L_feat`` moves from unquantised to quantised
training with ``w_e = cos(e * pi / (2E))`` over epochs e = 1..E. Levels are mixed with weights
(0.125 for the coarse level and 0.875 / L for each fine level in the reference, L = 7).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .losses import cross_entropy_diagonal
from .pooling import l2_normalize


def smoothing_weight(epoch: int, total_epochs: int) -> float:
    """``w_e = cos(e * pi / (2E))`` for the 1-based epoch e (clamped to [0, E]): the weight of the
    unquantised loss. Close to 1 in the first epoch, exactly 0 in the last."""
    if total_epochs < 1:
        raise ValueError(f"smoothing needs at least one epoch, got E = {total_epochs}")
    if epoch >= total_epochs:
        return 0.0  # cos(pi / 2) is 6e-17 in floating point; the last epoch is purely quantised
    return math.cos(max(epoch, 0) * math.pi / (2 * total_epochs))


def level_cosines(a: Tensor, b: Tensor) -> Tensor:
    """``[G, Na, Nb]`` cosine similarities of ``a [Na, G, D]`` and ``b [Nb, G, D]``, level by level."""
    return torch.einsum("igd,jgd->gij", l2_normalize(a.float()), l2_normalize(b.float()))


def _per_level_ce(logits: Tensor) -> Tensor:
    """Row cross-entropy with the diagonal as target, one value per level of ``[G, B, B]``."""
    return torch.stack([cross_entropy_diagonal(g) for g in logits])


def aq_contrastive(text: Tensor, video: Tensor, text_q: Tensor, video_q: Tensor, temperature: float) -> Tensor:
    """Per-level ``L_AQ`` ``[G]``: raw text vs quantised video (t2v) + quantised text vs raw video (v2t)."""
    t2v = level_cosines(text, video_q) / temperature
    v2t = level_cosines(text_q, video) / temperature
    return _per_level_ce(t2v) + _per_level_ce(v2t.transpose(1, 2))


def feature_contrastive(text: Tensor, video: Tensor, temperature: float) -> Tensor:
    """Per-level ``L_feat`` ``[G]``: the same two directions on unquantised embeddings."""
    sims = level_cosines(text, video) / temperature
    return _per_level_ce(sims) + _per_level_ce(sims.transpose(1, 2))


def level_weights(num_fine: int, coarse_weight: float | None = None) -> Tensor:
    """``[L + 1]`` weights: the coarse level first (default 1 / (L + 1)), the rest shared by the L fine
    levels, summing to one. With L = 7 that is the reference's 0.125 and 0.875 / 7."""
    if num_fine < 0:
        raise ValueError(f"number of fine levels must be >= 0, got {num_fine}")
    cw = 1.0 / (num_fine + 1) if coarse_weight is None else float(coarse_weight)
    if num_fine == 0:
        if not math.isclose(cw, 1.0):
            raise ValueError(f"with no fine level the coarse weight must be 1, got {cw}")
        return torch.ones(1)
    if not 0.0 <= cw <= 1.0:
        raise ValueError(f"coarse level weight must be in [0, 1], got {cw}")
    return torch.tensor([cw] + [(1.0 - cw) / num_fine] * num_fine)


def hybrid_aqcl_loss(
    text: Tensor,
    video: Tensor,
    text_q: Tensor,
    video_q: Tensor,
    weights: Tensor,
    *,
    temperature: float,
    smooth: float,
) -> dict[str, Tensor]:
    """HCQ's loss over all levels, as two named terms whose sum is the training loss.

    :param text, video: raw level embeddings ``[B, G, D]`` (G = L + 1, coarse first).
    :param text_q, video_q: their straight-through quantisations ``[B, G, D]``.
    :param weights: ``[G]`` level weights; :param smooth: ``w_e`` (1 = unquantised only, 0 = AQ-CL only).
    :returns: ``loss_aq = (1 - w) sum_l lambda_l L_AQ,l`` and ``loss_feat = w sum_l lambda_l L_feat,l``.
    """
    if not (text.shape == video.shape == text_q.shape == video_q.shape) or text.dim() != 3:
        raise ValueError(
            "AQ-CL expects four [B, G, D] tensors of one shape; got "
            f"{[tuple(t.shape) for t in (text, video, text_q, video_q)]}"
        )
    w = weights.to(device=text.device, dtype=torch.float32)
    aq = (w * aq_contrastive(text, video, text_q, video_q, temperature)).sum()
    feat = (w * feature_contrastive(text, video, temperature)).sum()
    return {"loss_aq": (1.0 - smooth) * aq, "loss_feat": smooth * feat}
