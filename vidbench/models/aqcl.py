"""Asymmetric-Quantized Contrastive Learning (AQ-CL), HCQ's loss, and its smoothing schedule.

Spec methods-eercf-hcq.md B.4. Per level, with texts in rows and cosine similarities over the batch:

    L_AQ   = CE_rows(cos(t, q(v)) / tau) + CE_rows(cos(q(t), v)^T / tau)
    L_feat = CE_rows(cos(t, v) / tau)    + CE_rows(cos(t, v)^T / tau)

t2v compares raw text with quantised video, v2t quantised text with raw video (the two directions are
summed, not averaged). The level loss ``(1 - w_e) L_AQ + w_e L_feat`` moves from unquantised to quantised
training with ``w_e = cos(e * pi / (2E))`` over epochs e = 1..E. Levels are mixed as
``w_cls * coarse + w_vlad * mean_l fine_l`` with the config's pair (0.125 / 0.875 in the main configs).
The fine levels use the reference's debiased InfoNCE (prior tau+ = 0 in every config, which is InfoNCE).
Two more terms exist in the reference with weight 0 in its configs, here for ablations: the soft-code term
and the quantisation regulariser (:func:`hybrid_aqcl_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

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
    """Row cross-entropy with the diagonal as target over ``[..., B, B]``: one value per leading index."""
    if logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"contrastive logits must be square, got {tuple(logits.shape)}")
    return -torch.diagonal(F.log_softmax(logits, dim=-1), dim1=-2, dim2=-1).mean(-1)


def _level_pair_loss(logits: Tensor, temperature: float, prior: float) -> Tensor:
    """One-direction losses ``[G, ...]`` of ``[G, ..., B, B]`` logits (rows = queries): InfoNCE on the coarse
    level 0, the debiased InfoNCE with prior ``tau+`` on the fine levels, as the reference. With ``prior = 0``
    the two are the same cross-entropy (up to the debiased form's ``exp(-N / tau)`` floor, far below float
    precision), so the plain cross-entropy is used then."""
    if prior == 0.0 or logits.shape[0] == 1:
        return _per_level_ce(logits)
    fine = debiased_infonce(logits[1:], temperature, prior)
    return torch.cat([_per_level_ce(logits[:1]), fine])


def aq_contrastive(
    text: Tensor, video: Tensor, text_q: Tensor, video_q: Tensor, temperature: float, prior: float = 0.0
) -> Tensor:
    """Per-level ``L_AQ`` ``[G]``: raw text vs quantised video (t2v) + quantised text vs raw video (v2t)."""
    t2v = level_cosines(text, video_q) / temperature
    v2t = level_cosines(text_q, video) / temperature
    return _level_pair_loss(t2v, temperature, prior) + _level_pair_loss(v2t.transpose(1, 2), temperature, prior)


def feature_contrastive(text: Tensor, video: Tensor, temperature: float, prior: float = 0.0) -> Tensor:
    """Per-level ``L_feat`` ``[G]``: the same two directions on unquantised embeddings."""
    sims = level_cosines(text, video) / temperature
    return _level_pair_loss(sims, temperature, prior) + _level_pair_loss(sims.transpose(1, 2), temperature, prior)


def level_weights(num_fine: int, cls_weight: float = 0.125, vlad_weight: float = 0.875) -> Tensor:
    """``[L + 1]`` per-level weights from the reference's pair ``(w_cls, w_vlad)``: ``[w_cls, w_vlad / L, ...]``.

    Loss and score are both ``w_cls * coarse + w_vlad * mean_l fine_l``; the pair is a per-config setting in the
    reference (0.125 / 0.875 in the main L = 7 configs; L = 1: 2.0 / 2.0, L = 3: 1.3333 / 2.0, L = 15:
    1.0667 / 2.0, L = 31: 1.0323 / 2.0), not derived from L. With L = 0 only ``w_cls`` is used.
    """
    if num_fine < 0:
        raise ValueError(f"number of fine levels must be >= 0, got {num_fine}")
    cw, vw = float(cls_weight), float(vlad_weight)
    if not (math.isfinite(cw) and math.isfinite(vw)) or cw < 0 or vw < 0:
        raise ValueError(f"level weights must be finite and >= 0, got cls {cw} and vlad {vw}")
    if num_fine == 0:
        if cw == 0:
            raise ValueError("with no fine level the coarse weight must be > 0")
        return torch.tensor([cw])
    if cw + vw == 0:
        raise ValueError("the coarse and fine weights are both 0: nothing would be learnt or scored")
    return torch.tensor([cw] + [vw / num_fine] * num_fine)


def debiased_infonce(logits: Tensor, temperature: float, prior: float) -> Tensor:
    """HCQ's debiased InfoNCE over ``[..., B, B]`` logits ``s / tau`` (rows = queries, positives on the
    diagonal), one direction: ``[...]`` losses.

    ``pos = exp(s_ii / tau)``, ``neg_j = exp(s_ij / tau)`` (j != i), ``N = B - 1``,
    ``Ng = clamp((-prior * N * pos + sum_j neg_j) / (1 - prior), min=exp(-N / tau))`` and
    ``loss = mean_i -log(pos / (pos + Ng))``. With ``prior = 0`` it is the row cross-entropy except for the
    clamp. Computed in float64 with every row shifted by its maximum (``exp(s / tau)`` overflows float32 for a
    small tau); the shift cancels in the ratio and is applied to the clamp's floor too.
    """
    if not 0.0 <= prior < 1.0:
        raise ValueError(f"debiasing prior tau+ must be in [0, 1), got {prior}")
    b = logits.shape[-1]
    if logits.shape[-2] != b or b < 2:
        raise ValueError(f"debiased InfoNCE needs square [..., B, B] logits with B >= 2, got {tuple(logits.shape)}")
    x = logits.double()
    shift = x.amax(dim=-1, keepdim=True)
    e = torch.exp(x - shift)
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    pos = torch.diagonal(e, dim1=-2, dim2=-1)
    neg = e.masked_fill(eye, 0.0).sum(-1)
    n = b - 1
    floor = torch.exp(-n / temperature - shift.squeeze(-1))
    ng = torch.maximum((-prior * n * pos + neg) / (1.0 - prior), floor)
    return (-torch.log(pos / (pos + ng))).mean(-1).to(logits.dtype)


def code_similarities(text_soft: Tensor, video_soft: Tensor) -> Tensor:
    """``[G, M, Bt, Bv]`` soft-code inner products ``S[g, m, i, j] = sum_k s_t[i, g, m, k] * s_v[j, g, m, k]``
    of soft codes ``[B, G, M, K]`` (one sub-codebook at a time: the reference's code term)."""
    return torch.einsum("igmk,jgmk->gmij", text_soft.float(), video_soft.float())


def code_contrastive(text_soft: Tensor, video_soft: Tensor, temperature: float, prior: float = 0.0) -> Tensor:
    """Per-level code term ``[G]``: on every sub-codebook's soft-code similarities / tau, InfoNCE (coarse level)
    or the debiased InfoNCE (fine levels), both directions summed, averaged over the M sub-codebooks."""
    logits = code_similarities(text_soft, video_soft) / temperature  # [G, M, B, B]
    both = _level_pair_loss(logits, temperature, prior) + _level_pair_loss(logits.transpose(-1, -2), temperature, prior)
    return both.mean(1)


def pq_regularizer(normalized: Tensor, hard: Tensor) -> Tensor:
    """Per-level quantisation regulariser ``[G]``: the mean over rows of ``sum_d (x_normalized - x_hat)^2`` for
    ``[B, G, D]`` inputs (gradient flows to the encoder only: codewords are buffers)."""
    return (normalized.float() - hard.float()).pow(2).sum(-1).mean(0)


def hybrid_aqcl_loss(
    text: Tensor,
    video: Tensor,
    text_q: Tensor,
    video_q: Tensor,
    weights: Tensor,
    *,
    temperature: float,
    smooth: float,
    prior: float = 0.0,
    code_weight: float = 0.0,
    text_soft: Tensor | None = None,
    video_soft: Tensor | None = None,
    pq_reg_weight: float = 0.0,
    text_hard: Tensor | None = None,
    video_hard: Tensor | None = None,
) -> dict[str, Tensor]:
    """HCQ's loss over all levels, as named terms whose sum is the training loss.

    :param text, video: raw (sub-normalised) level embeddings ``[B, G, D]`` (G = L + 1, coarse first).
    :param text_q, video_q: their straight-through quantisations ``[B, G, D]``.
    :param weights: ``[G]`` level weights (:func:`level_weights`); :param smooth: ``w_e`` (1 = unquantised
        only, 0 = AQ-CL only). :param prior: the debiasing prior tau+ of the fine levels (0 in every config).
    :param code_weight, text_soft, video_soft: the soft-code term and the soft codes ``[B, G, M, K]`` it needs.
    :param pq_reg_weight, text_hard, video_hard: the quantisation regulariser and the hard reconstructions
        ``[B, G, D]`` it needs. Both terms have weight 0 in the reference configs and are left out then.
    :returns: ``loss_aq = (1 - w) sum_l lambda_l L_AQ,l``, ``loss_feat = w sum_l lambda_l L_feat,l``; with a
        non-zero weight also ``loss_code = (1 - w) c sum_l lambda_l L_code,l`` and
        ``loss_pq_reg = (1 - w) r mean_l (reg_l(text) + reg_l(video)) / 2`` (unweighted mean over levels).
    """
    if not (text.shape == video.shape == text_q.shape == video_q.shape) or text.dim() != 3:
        raise ValueError(
            "AQ-CL expects four [B, G, D] tensors of one shape; got "
            f"{[tuple(t.shape) for t in (text, video, text_q, video_q)]}"
        )
    w = weights.to(device=text.device, dtype=torch.float32)
    aq = (w * aq_contrastive(text, video, text_q, video_q, temperature, prior)).sum()
    feat = (w * feature_contrastive(text, video, temperature, prior)).sum()
    out = {"loss_aq": (1.0 - smooth) * aq, "loss_feat": smooth * feat}
    if code_weight:
        if text_soft is None or video_soft is None:
            raise ValueError("the code term (code_loss_weight > 0) needs the soft codes of text and video")
        code = (w * code_contrastive(text_soft, video_soft, temperature, prior)).sum()
        out["loss_code"] = (1.0 - smooth) * code_weight * code
    if pq_reg_weight:
        if text_hard is None or video_hard is None:
            raise ValueError("the PQ regulariser (pq_reg_loss_weight > 0) needs the hard reconstructions")
        reg = ((pq_regularizer(text, text_hard) + pq_regularizer(video, video_hard)) / 2).mean()
        out["loss_pq_reg"] = (1.0 - smooth) * pq_reg_weight * reg
    return out
