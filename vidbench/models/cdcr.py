"""Channel DeCorrelation Regularisation (CDCR) of DRL, every variant (spec ``methods-clip4clip-drl.md`` §3.4).

Each variant pairs vectors across the two modalities, standardises each set per channel over its rows
(mean 0, *unbiased* std as ``torch.std`` computes it), forms a ``D x D`` cross-correlation ``C`` and applies
the Barlow-Twins form ``alpha1 * sum_k (C_kk - 1)^2 + alpha2 * sum_{k != l} C_kl^2``. The training loss is
``(CrossEn(S) + CrossEn(S^T)) / 2 + cdcr_lambda * L_cdcr`` with ``cdcr_lambda = 0.001``.

Inputs are the features of the *gathered* (global) batch after the similarity step, i.e. L2-normalised
per token/frame and **not** multiplied by the mask, with text b paired to video b (``A == B``):

- **dp** (any variant != 0 with the dp interaction) uses ``text_eot [B, D]`` (normalised EOT vector) and
  ``video_pooled [B, D]`` (normalised mean of normalised frames, ``interaction.dp_video_embedding``);
  row b = (EOT of text b, pooled video b); ``C = za^T zb / B``.
- **1** (ti/wti) uses tokens, frames, both masks and ``generator``: one random valid token of text b and
  one random valid frame of video b (``randint(0, 10000) % n_valid``); ``C = za^T zb / B``.
- **2** (ti) uses tokens, frames, both masks and ``padding``: every valid token (b, i) is paired with frame
  ``argmax_j s[b, b, i, j]`` of its own video, every valid frame (b, j) with token ``argmax_i s[b, b, i, j]``
  of its own text; ``C = (za_t^T zb_t / N_t + za_v^T zb_v / N_v) / 2`` over the N_t / N_v valid rows.
- **3** (wti) uses what 2 uses plus ``text_weights``/``video_weights`` (the WTI softmax weights): same
  pairs, each row's outer product weighted by its token's/frame's weight and divided by the batch size:
  ``C = (sum_n wt_n za_n zb_n^T / B + sum_n wv_n xa_n xb_n^T / B) / 2``.

In 2 and 3 the four sets (tokens, their partner frames, frames, their partner tokens) are standardised
separately, each over its pooled valid rows. The argmax partners come from the masked similarity, so under
the reference ``padding="zero"`` a partner can be a padded position (its normalised feature is used).
Variant 3 divides by the batch size B, not by the row count: the weights of one text sum to 1, so this is
a per-item weighted mean.

Published coefficients (all with ``alpha2 = 0``, i.e. only the diagonal "paired channels should correlate"
term is active; the off-diagonal decorrelation term is off): the DRL README's main command uses
``--cdcr 3 --cdcr_alpha1 0.11 --cdcr_lambda 0.001``; ``scripts/msrvtt.sh`` uses, for ViT-B/32, dp+CDCR
``--cdcr 1`` alpha1 0.14, TI ``--cdcr 2`` alpha1 0.16, WTI ``--cdcr 3`` alpha1 0.14, and for ViT-B/16 WTI
0.11, TI 0.16. README (0.11) and script (0.14) disagree for B/32 WTI. The argparse defaults (alpha1 1.0,
alpha2 0.06) are never used by a published run.

Degenerate channels (zero variance over the rows) divide by zero exactly as in the reference and give
non-finite losses; with real features this does not happen.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidbench.errors import ConfigError, DataError
from vidbench.models.interaction import tokenwise_argmax

__all__ = [
    "argmax_partner_sets",
    "barlow_terms",
    "cdcr_loss",
    "cross_correlation",
    "random_valid_index",
    "standardize",
    "weighted_cross_correlation",
]


def standardize(x: Tensor) -> Tensor:
    """Per channel over rows: ``(x - mean) / std`` with the unbiased (N-1) std, ``[N, D] -> [N, D]``.

    A channel that is constant over the rows (std 0; e.g. every frame of a batch picked the same partner
    token) is left at 0 instead of 0/0: the reference returns NaN there and the NaN poisons every weight
    through the loss. Everywhere the reference is finite the result is identical.
    """
    if x.dim() != 2:
        raise DataError(f"standardize expects [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise DataError(
            f"standardize needs at least 2 rows for an unbiased std, got {x.shape[0]}; "
            "fix: CDCR needs a (global) batch of at least 2 pairs"
        )
    std = x.std(0)
    return (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))


def barlow_terms(c: Tensor, alpha1: float, alpha2: float) -> Tensor:
    """``alpha1 * sum_k (C_kk - 1)^2 + alpha2 * sum_{k != l} C_kl^2`` of a square ``C``."""
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise DataError(f"barlow_terms expects a square [D, D] matrix, got shape {tuple(c.shape)}")
    diag = torch.diagonal(c)
    on = (diag - 1.0).pow(2).sum()
    off = (c - torch.diag_embed(diag)).pow(2).sum()
    return alpha1 * on + alpha2 * off


def cross_correlation(xa: Tensor, xb: Tensor) -> Tensor:
    """``standardize(xa)^T standardize(xb) / N`` for paired rows ``[N, D]``."""
    _check_pairs(xa, xb)
    return standardize(xa).t() @ standardize(xb) / xa.shape[0]


def weighted_cross_correlation(xa: Tensor, xb: Tensor, weights: Tensor, batch_size: int) -> Tensor:
    """``sum_n w_n za_n zb_n^T / batch_size`` (CDCR variant 3): each pair's outer product weighted."""
    _check_pairs(xa, xb)
    if tuple(weights.shape) != (xa.shape[0],):
        raise DataError(f"weights must be [{xa.shape[0]}] (one per row), got shape {tuple(weights.shape)}")
    return (standardize(xa) * weights.to(xa.dtype)[:, None]).t() @ standardize(xb) / batch_size


def random_valid_index(mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One random valid position per row ``[N]``: the ``(r % n_valid)``-th valid one, ``r ~ U{0..9999}``.

    This is the reference's ``randint_like(n_valid, 0, 10000) % n_valid`` (for prefix masks the k-th valid
    position is position k). ``r`` is drawn on the CPU from ``generator`` so a seeded generator reproduces
    the choice on any device.
    """
    valid = mask != 0
    counts = valid.sum(-1)
    if bool((counts == 0).any()):
        rows = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise DataError(f"rows {rows} have no valid position (mask all zero); CDCR cannot pick one")
    r = torch.randint(0, 10000, (mask.shape[0],), generator=generator).to(mask.device)
    k = r % counts
    # position of the k-th valid entry: the number of positions whose running count is still <= k
    return (valid.long().cumsum(-1) <= k[:, None]).sum(-1)


def _check_pairs(xa: Tensor, xb: Tensor) -> None:
    if xa.dim() != 2 or xa.shape != xb.shape:
        raise DataError(
            f"paired sets must both be [N, D] with the same shape, got {tuple(xa.shape)} and {tuple(xb.shape)}"
        )


def _check_batch(text_tokens: Tensor, text_mask: Tensor, video_frames: Tensor, video_mask: Tensor) -> None:
    for name, x, m in (("text_tokens", text_tokens, text_mask), ("video_frames", video_frames, video_mask)):
        if x.dim() != 3 or tuple(m.shape) != tuple(x.shape[:2]):
            raise DataError(f"{name} must be [B, L, D] with a [B, L] mask, got {tuple(x.shape)} / {tuple(m.shape)}")
    if text_tokens.shape[0] != video_frames.shape[0]:
        raise DataError(
            f"CDCR pairs text b with video b: got {text_tokens.shape[0]} texts and {video_frames.shape[0]} videos"
        )
    if text_tokens.shape[-1] != video_frames.shape[-1]:
        raise DataError(f"feature dims differ: {text_tokens.shape[-1]} vs {video_frames.shape[-1]}")


def argmax_partner_sets(
    text_tokens: Tensor, text_mask: Tensor, video_frames: Tensor, video_mask: Tensor, *, padding: str = "zero"
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The variant 2/3 pairs as flat row sets, in (item, position) order over valid rows.

    Returns ``(t_rows [N_t, D], t_partners [N_t, D], v_rows [N_v, D], v_partners [N_v, D], t_valid, v_valid)``
    where ``t_partners`` holds frame ``argmax_j s[b, b, i, j]`` of video b for every valid token (b, i)
    and ``v_partners`` token ``argmax_i s[b, b, i, j]`` of text b for every valid frame (b, j);
    ``t_valid``/``v_valid`` are the boolean masks ``[B, L]`` that select the rows.
    """
    t2v_idx, v2t_idx = tokenwise_argmax(text_tokens, text_mask, video_frames, video_mask, padding=padding)
    rows = torch.arange(text_tokens.shape[0], device=text_tokens.device)
    t_valid = text_mask != 0
    v_valid = video_mask != 0
    t_rows = text_tokens[t_valid]
    t_partners = video_frames[rows[:, None], t2v_idx][t_valid]
    v_rows = video_frames[v_valid]
    v_partners = text_tokens[rows[:, None], v2t_idx][v_valid]
    return t_rows, t_partners, v_rows, v_partners, t_valid, v_valid


def cdcr_loss(
    variant: int,
    *,
    text_tokens: Tensor | None = None,
    text_mask: Tensor | None = None,
    video_frames: Tensor | None = None,
    video_mask: Tensor | None = None,
    text_weights: Tensor | None = None,
    video_weights: Tensor | None = None,
    text_eot: Tensor | None = None,
    video_pooled: Tensor | None = None,
    alpha1: float,
    alpha2: float,
    padding: str = "zero",
    generator: torch.Generator | None = None,
) -> Tensor:
    """``L_cdcr`` (unscaled by ``cdcr_lambda``) for ``--cdcr variant``; see the module docstring.

    ``variant == 0`` means CDCR is off and returns a zero scalar. Passing ``text_eot``/``video_pooled``
    selects the dp pairing (any non-zero variant, as in the reference's dp interaction); otherwise the
    token/frame arguments are used. ``padding`` picks the argmax rule of variants 2/3 (reference: "zero").
    """
    if variant not in (0, 1, 2, 3):
        raise ConfigError(f"cdcr variant must be 0 (off), 1, 2 or 3, got {variant!r}")
    if padding not in ("zero", "neg_inf"):
        raise ConfigError(f"padding must be 'zero' or 'neg_inf', got {padding!r}")
    dp = text_eot is not None or video_pooled is not None
    if variant == 0:
        present = [x for x in (text_eot, video_pooled, text_tokens, video_frames) if x is not None]
        return torch.zeros((), device=present[0].device if present else None)

    if dp:
        if text_eot is None or video_pooled is None:
            raise ConfigError("the dp pairing needs both text_eot [B, D] and video_pooled [B, D]")
        if text_tokens is not None or video_frames is not None:
            raise ConfigError("pass either text_eot/video_pooled (dp) or text_tokens/video_frames (ti/wti), not both")
        return barlow_terms(cross_correlation(text_eot, video_pooled), alpha1, alpha2)

    if text_tokens is None or text_mask is None or video_frames is None or video_mask is None:
        raise ConfigError(f"cdcr variant {variant} needs text_tokens, text_mask, video_frames and video_mask")
    _check_batch(text_tokens, text_mask, video_frames, video_mask)

    if variant == 1:
        rows = torch.arange(text_tokens.shape[0], device=text_tokens.device)
        t_pick = text_tokens[rows, random_valid_index(text_mask, generator)]
        v_pick = video_frames[rows, random_valid_index(video_mask, generator)]
        return barlow_terms(cross_correlation(t_pick, v_pick), alpha1, alpha2)

    t_rows, t_partners, v_rows, v_partners, t_valid, v_valid = argmax_partner_sets(
        text_tokens, text_mask, video_frames, video_mask, padding=padding
    )
    if variant == 2:
        c = (cross_correlation(t_rows, t_partners) + cross_correlation(v_rows, v_partners)) / 2.0
        return barlow_terms(c, alpha1, alpha2)

    if text_weights is None or video_weights is None:
        raise ConfigError("cdcr variant 3 (wti) needs text_weights and video_weights (the WTI softmax weights)")
    if tuple(text_weights.shape) != tuple(text_mask.shape) or tuple(video_weights.shape) != tuple(video_mask.shape):
        raise DataError(
            f"weights must match the masks: text {tuple(text_weights.shape)} vs {tuple(text_mask.shape)}, "
            f"video {tuple(video_weights.shape)} vs {tuple(video_mask.shape)}"
        )
    batch = text_tokens.shape[0]
    c = (
        weighted_cross_correlation(t_rows, t_partners, text_weights[t_valid], batch)
        + weighted_cross_correlation(v_rows, v_partners, video_weights[v_valid], batch)
    ) / 2.0
    return barlow_terms(c, alpha1, alpha2)
