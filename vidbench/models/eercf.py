"""EERCF's coarse-to-fine scores, its text-gated interaction block (TIB) and its Pearson constraint.

Spec methods-eercf-hcq.md A.2-A.5 (Tian et al., AAAI 2024). Every function here is a pure function of
already L2-normalised features; nothing is scaled by the logit scale (the method multiplies in training,
and ranks do not depend on it at test time). Notation, per (text t, video v):

- coarse ``s_video = <t Wg, v_bar>``: ``v_bar`` the normalised masked mean of the normalised temporal
  (seqTransf) frames, ``Wg`` = ``global_mat_weight``; ``t Wg`` is part of the query encoding.
- frame similarities ``S_f = <t, r_f>`` against the *raw* CLIP frames ``r``; patch similarities
  ``Q_q = <t, p_q>`` against every patch token of every frame (q = 1..T·P).
- weak pooling ``s = sum_f S_f (softmax(S / tau) W)_f``: frames with ``W = frame_logit_weight``
  (tau 0.01), patches with ``W = I`` (tau 0.01).
- TIB (parameter-free): ``a = softmax(S / tau)``, ``u = normalise(sum_f a_f h_f)``, ``s = <t, u>``; frame
  level aggregates the temporal frames ``h`` with tau 0.1, patch level the patches with tau 0.01.

Padded frames: the reference leaves them inside every softmax (A.3, pitfall C.9); that is what
``mask=None`` does. Passing the frame mask is the named alternative that gives padded frames (and their
patches) zero weight.

Two layouts are used: all pairs of a training batch (``[n_text, n_video, ...]``, small B) and, at test
time, each text against its own gathered candidates (``[n_text, k, ...]``), so reranking never touches
videos outside the candidate lists. The shared maths works on similarity tensors of any leading shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vidbench.errors import ConfigError, DataError
from vidbench.models.pooling import l2_normalize

__all__ = [
    "FRAME_TIB_TEMPERATURE",
    "FRAME_WEAK_TEMPERATURE",
    "PATCH_TEMPERATURE",
    "SCORE_TERMS",
    "ScoreMix",
    "candidate_scores",
    "candidate_similarities",
    "coarse_scores",
    "flatten_patches",
    "masked_softmax",
    "match_flops",
    "paired_tib",
    "pairwise_similarities",
    "patch_mask",
    "pearson_constraint",
    "pearson_correlation",
    "symmetric_ce",
    "tib_pool",
    "weak_pool",
]

FRAME_WEAK_TEMPERATURE = 0.01
PATCH_TEMPERATURE = 0.01
FRAME_TIB_TEMPERATURE = 0.1

SCORE_TERMS = ("video", "frame_weak", "frame_tib", "patch_weak", "patch_tib")
_FRAME_TERMS = ("frame_weak", "frame_tib")
_PATCH_TERMS = ("patch_weak", "patch_tib")


# ------------------------------------------------------------------------------------------------ poolings
def masked_softmax(sims: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """``softmax(sims / temperature)`` over the last dim; with ``mask`` (1 = valid, broadcastable) invalid
    entries get weight 0.

    Half-precision similarities are upcast to float32 *before* the division, so that the 0.01 temperatures
    (logits up to 100) stay precise under autocast.
    """
    logits = _full_precision(sims) / temperature
    if mask is not None:
        logits = logits.masked_fill(mask == 0, float("-inf"))
    return torch.softmax(logits, dim=-1)


def weak_pool(sims: Tensor, temperature: float, mask: Tensor | None = None, mix: Tensor | None = None) -> Tensor:
    """``sum_f sims_f * (softmax(sims / temperature) @ mix)_f`` over the last dim: ``[..., F] -> [...]``.

    ``mix`` is the ``[F, F]`` frame-weight matrix (``frame_logit_weight``; None = identity, as for patches).
    With a ``mask`` the padded entries are left out of the softmax and, after the mix, get weight 0.
    The weighted sum is elementwise on purpose: it is O(F) per pair and not a matrix product (see
    :func:`match_flops` for which operations the FLOP accounting counts).
    """
    weights = masked_softmax(sims, temperature, mask)
    if mix is not None:
        weights = weights @ mix.to(weights.dtype)
    if mask is not None:
        weights = weights * (mask != 0).to(weights.dtype)
    return (_full_precision(sims) * weights).sum(-1)


def _full_precision(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def tib_pool(weights: Tensor, feats: Tensor) -> Tensor:
    """The TIB aggregate ``normalise(sum_f weights_f feats_f)``: ``[..., F]`` x ``[..., F, D] -> [..., D]``."""
    if weights.shape != feats.shape[:-1]:
        raise DataError(f"tib_pool: weights {tuple(weights.shape)} do not match features {tuple(feats.shape)}")
    return l2_normalize(torch.einsum("...f,...fd->...d", weights.to(feats.dtype), feats))


def flatten_patches(patches: Tensor) -> Tensor:
    """``[..., T, P, D] -> [..., T*P, D]`` (frame-major, as the reference flattens them)."""
    return patches.flatten(-3, -2)


def patch_mask(frame_mask: Tensor, patches_per_frame: int) -> Tensor:
    """Frame mask ``[..., T]`` repeated for each patch: ``[..., T*P]``."""
    return frame_mask.unsqueeze(-1).expand(*frame_mask.shape, patches_per_frame).flatten(-2)


# ------------------------------------------------------------------------------------------------ scores
def coarse_scores(text_g: Tensor, coarse: Tensor) -> Tensor:
    """Stage-1 scores ``(t Wg) v_bar^T``: ``[n_text, D]`` x ``[n_video, D] -> [n_text, n_video]``."""
    return text_g @ coarse.t()


def pairwise_similarities(text: Tensor, feats: Tensor) -> Tensor:
    """All pairs ``<t_i, x_vf>``: ``[I, D]`` x ``[V, F, D] -> [I, V, F]``."""
    return torch.einsum("id,vfd->ivf", text, feats)


def candidate_similarities(text: Tensor, feats: Tensor) -> Tensor:
    """Each text against its own candidates: ``[I, D]`` x ``[I, K, F, D] -> [I, K, F]``."""
    return torch.einsum("id,ikfd->ikf", text, feats)


@dataclass(frozen=True)
class ScoreMix:
    """Weights of the five scores (spec A.4 / A.5); a zero weight means the score is not computed."""

    video: float = 0.0
    frame_weak: float = 0.0
    frame_tib: float = 0.0
    patch_weak: float = 0.0
    patch_tib: float = 0.0

    @classmethod
    def from_mapping(cls, weights: Mapping[str, float]) -> ScoreMix:
        unknown = set(weights) - set(SCORE_TERMS)
        if unknown:
            raise ConfigError(f"unknown EERCF score term(s) {sorted(unknown)}; choose from {list(SCORE_TERMS)}")
        return cls(**{k: float(v) for k, v in weights.items()})

    def active(self) -> tuple[str, ...]:
        return tuple(name for name in SCORE_TERMS if getattr(self, name) != 0.0)

    def needs_frames(self) -> bool:
        return any(getattr(self, t) != 0.0 for t in _FRAME_TERMS)

    def needs_patches(self) -> bool:
        return any(getattr(self, t) != 0.0 for t in _PATCH_TERMS)

    def without_patches(self) -> ScoreMix:
        return ScoreMix(self.video, self.frame_weak, self.frame_tib, 0.0, 0.0)

    def combine(self, scores: Mapping[str, Tensor]) -> Tensor:
        """``sum_term weight * scores[term]`` over the active terms."""
        active = self.active()
        missing = [t for t in active if t not in scores]
        if missing:
            raise DataError(f"score mix needs {missing} but only {sorted(scores)} were computed")
        if not active:
            raise ConfigError("the EERCF score mix has no non-zero weight")
        return sum(getattr(self, t) * _full_precision(scores[t]) for t in active)  # type: ignore[return-value]


def candidate_scores(
    text: Tensor,
    candidates: Mapping[str, Tensor],
    mix: ScoreMix,
    *,
    frame_mix: Tensor | None,
    mask_padded: bool = False,
    frame_weak_temperature: float = FRAME_WEAK_TEMPERATURE,
    frame_tib_temperature: float = FRAME_TIB_TEMPERATURE,
    patch_temperature: float = PATCH_TEMPERATURE,
) -> dict[str, Tensor]:
    """Inference-time fine scores ``[I, K]`` of text i against its own K candidates (the TIB re-weights
    every candidate by this text). Only the terms with a non-zero weight in ``mix`` are computed.

    :param text: normalised sentence features ``[I, D]``.
    :param candidates: gathered video features with leading dims ``[I, K]``: ``frames_raw``/``frames``
        ``[I,K,T,D]`` and ``frame_mask`` ``[I,K,T]`` when a frame term is active, ``patches``
        ``[I,K,T,P,D]`` when a patch term is active.
    :param frame_mix: ``frame_logit_weight`` ``[T, T]`` (needed by ``frame_weak``).
    """
    out: dict[str, Tensor] = {}
    frame_mask = candidates.get("frame_mask") if mask_padded else None
    if mix.needs_frames():
        _require(candidates, ("frames_raw", "frames"), "the frame terms")
        sims = candidate_similarities(text, candidates["frames_raw"])  # [I, K, T]
        if mix.frame_weak:
            out["frame_weak"] = weak_pool(sims, frame_weak_temperature, frame_mask, frame_mix)
        if mix.frame_tib:
            u = tib_pool(masked_softmax(sims, frame_tib_temperature, frame_mask), candidates["frames"])
            out["frame_tib"] = torch.einsum("id,ikd->ik", text, u)
    if mix.needs_patches():
        _require(candidates, ("patches",), "the patch terms (set method.index_patches=true)")
        patches = candidates["patches"]
        flat = flatten_patches(patches)
        pmask = patch_mask(frame_mask, patches.shape[-2]) if frame_mask is not None else None
        qsims = candidate_similarities(text, flat)  # [I, K, T*P]
        if mix.patch_weak:
            out["patch_weak"] = weak_pool(qsims, patch_temperature, pmask)
        if mix.patch_tib:
            w = tib_pool(masked_softmax(qsims, patch_temperature, pmask), flat)
            out["patch_tib"] = torch.einsum("id,ikd->ik", text, w)
    return out


def paired_tib(sims_paired: Tensor, feats: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """Training-mode TIB: video j is re-weighted by its own caption j only, with the weights detached
    (spec A.3), so it yields one vector per video and the training score is ``<t_i, u_j>``.

    :param sims_paired: ``<t_j, x_jf>`` ``[B, F]`` (the diagonal of the all-pairs similarities).
    :param feats: what is aggregated, ``[B, F, D]``. Returns ``u`` ``[B, D]``.
    """
    weights = masked_softmax(sims_paired, temperature, mask).detach()
    return tib_pool(weights, feats)


def _require(feats: Mapping[str, Tensor], keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in feats]
    if missing:
        raise DataError(f"EERCF video features lack {missing}, needed by {what}; present: {sorted(feats)}")


# ------------------------------------------------------------------------------------------------ Pearson
def pearson_correlation(a: Tensor, z: Tensor) -> Tensor:
    """``C = za^T zb / B`` with per-channel standardisation over the rows using the *unbiased* std.

    So ``C_dd = (B - 1) / B * r_d`` with ``r_d`` the Pearson correlation of channel d (spec A.4, C.11).
    """
    if a.dim() != 2 or a.shape != z.shape:
        raise DataError(f"Pearson constraint needs paired [B, D] features, got {tuple(a.shape)} and {tuple(z.shape)}")
    if a.shape[0] < 2:
        raise DataError(
            f"Pearson constraint needs at least 2 pairs for an unbiased std, got {a.shape[0]}; raise the batch size"
        )
    a, z = _full_precision(a), _full_precision(z)
    za = (a - a.mean(0)) / a.std(0)
    zb = (z - z.mean(0)) / z.std(0)
    return za.t() @ zb / a.shape[0]


def pearson_constraint(a: Tensor, z: Tensor, diag_weight: float = 0.14, offdiag_weight: float = 0.0) -> Tensor:
    """``diag_weight * sum_d (C_dd - 1)^2 + offdiag_weight * sum_{d != e} C_de^2`` (the reference's "cdcr").

    With the released off-diagonal weight 0 this only pulls each text channel towards correlating with the
    same video channel; it does not decorrelate channels.
    """
    c = pearson_correlation(a, z)
    diag = torch.diagonal(c)
    loss = diag_weight * (diag - 1.0).pow(2).sum()
    if offdiag_weight:
        loss = loss + offdiag_weight * (c.pow(2).sum() - diag.pow(2).sum())
    return loss


def symmetric_ce(logits: Tensor) -> Tensor:
    """``(CE(S) + CE(S^T)) / 2`` with the positives on the diagonal."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


# ------------------------------------------------------------------------------------------------ cost
def match_flops(
    n_gallery: int,
    k: int,
    dim: int,
    frames: int,
    patches_per_frame: int,
    mix: ScoreMix,
    *,
    convention: str = "counted",
) -> float:
    """Matching FLOPs per query: stage 1 over the whole gallery, stage 2 over ``min(k, N)`` candidates.

    ``convention="counted"`` counts exactly what ``torch.utils.flop_counter`` counts on
    :func:`candidate_scores` and the stage-1 product: matrix products (mm / bmm / einsum), 2 FLOPs per
    multiply-add. That is, per query: ``2 N D`` (coarse) plus, per candidate,
    ``2 T D`` (frame similarities, if a frame term is active), ``2 T^2`` (the ``W_F`` frame mix of
    ``frame_weak``), ``2 T D + 2 D`` (TIB aggregate and its dot product, ``frame_tib``), ``2 T P D``
    (patch similarities, if a patch term is active) and ``2 T P D + 2 D`` (``patch_tib``). Softmax,
    exponentials, normalisation, masking, the elementwise weighted sums of the weak poolings, top-k and
    the gather are *not* counted (O(T P) per candidate, against O(T P D) for the products).

    ``convention="spec"`` is the spec's A.7 estimate, which adds elementwise work: the frame TIB costs
    ``2 T D + 5 D`` and the patch terms ``2 T P D + 5 T P``. With D 512, T 12, P 49 a candidate then costs
    about 632 K FLOPs (27 K without patches), and ``2 D + (k / N) * 632 K`` per pair.

    ``k = 0`` gives the single-stage (coarse only) cost ``2 N D``; ``query-side`` work (``t Wg``) belongs
    to the text encoder and is not included.
    """
    if convention not in ("counted", "spec"):
        raise ConfigError(f"match_flops convention must be 'counted' or 'spec', got {convention!r}")
    if n_gallery < 1 or k < 0:
        raise ConfigError(f"match_flops needs n_gallery >= 1 and k >= 0, got {n_gallery} and {k}")
    t, d, tp = frames, dim, frames * patches_per_frame
    spec = convention == "spec"
    per_candidate = 0.0
    if mix.needs_frames():
        per_candidate += 2 * t * d
    if mix.frame_weak:
        per_candidate += 2 * t * t
    if mix.frame_tib:
        per_candidate += 2 * t * d + (5 * d if spec else 2 * d)
    if mix.needs_patches():
        per_candidate += 2 * tp * d + (5 * tp if spec else 0)
    if mix.patch_tib:
        per_candidate += 2 * tp * d + (0 if spec else 2 * d)
    return 2.0 * n_gallery * d + min(k, n_gallery) * per_candidate
