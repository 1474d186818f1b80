"""HCQ's head: the coarse level plus GhostVLAD fine levels, one product quantiser per level.

Spec methods-eercf-hcq.md Part B.2-B.5. The head takes features, not inputs: a coarse vector ``[B, D]``
and a token sequence ``[B, N, D]`` with its mask (which tokens GhostVLAD aggregates). Where they come from
is the encoders' business: CLIP's EOT vector and word tokens or the mean of CLIP frames and the frames
themselves (HCQ-on-CLIP), or the MoE-mixed BERT text vector and the projected BERT tokens / the mean of the
MMT ``[AGG]`` outputs and the MMT tokens (HCQ as published). One module serves both; the same GhostVLAD
(parameters and BatchNorm statistics) is applied to the text and the video side, as in the reference.

Output containers: in training ``levels`` (each sub-vector normalised, as the quantisers see them) and
``quantized`` (straight-through reconstructions); in evaluation ``levels`` and the uint8-able ``codes``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vidbench.models.pooling import l2_normalize
from vidbench.models.pq_scoring import adc_scores, dense_level_scores
from vidbench.models.quantization import (
    Collective,
    EmbeddingReservoir,
    GhostVLAD,
    ProductQuantizer,
    spherical_kmeans,
    split_normalize,
)


class HCQHead(nn.Module):
    """Coarse + ``fine_levels`` GhostVLAD levels, each quantised by its own ``ProductQuantizer``.

    Children are named ``vlad`` and ``quantizers`` (the state-dict names of every HCQ checkpoint).
    """

    def __init__(
        self,
        dim: int,
        fine_levels: int,
        ghost_clusters: int,
        num_subspaces: int,
        num_codewords: int,
        *,
        vlad_mode: str = "reference",
        vlad_batch_norm: bool = True,
        alpha: float = 1.0,
        quantizer_batch_norm: bool = True,
        trainable_codebooks: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.num_subspaces = dim, num_subspaces
        self.vlad = (
            GhostVLAD(dim, fine_levels, ghost_clusters, mode=vlad_mode, batch_norm=vlad_batch_norm)
            if fine_levels > 0
            else None
        )
        self.num_levels = fine_levels + 1
        self.quantizers = nn.ModuleList(
            ProductQuantizer(
                dim,
                num_subspaces,
                num_codewords,
                alpha=alpha,
                batch_norm=quantizer_batch_norm,
                trainable=trainable_codebooks,
            )
            for _ in range(self.num_levels)
        )

    def levels(self, coarse: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """``[B, G, D]``: ``coarse`` then GhostVLAD over the tokens where ``mask`` is non-zero."""
        out = [coarse.unsqueeze(1)]
        if self.vlad is not None:
            out.append(self.vlad(tokens, mask))
        return torch.cat(out, dim=1)

    def quantize(self, levels: Tensor, *, soft: bool = False, hard: bool = False) -> dict[str, Tensor]:
        """Training: sub-normalised levels and their straight-through quantisation (plus, when asked, the soft
        codes ``[B, G, M, K]`` and hard reconstructions ``[B, G, D]`` for extra loss terms); evaluation:
        levels + codes."""
        if self.training:
            outs = [pq(levels[:, g]) for g, pq in enumerate(self.quantizers)]
            feats = {
                "levels": torch.stack([o.normalized for o in outs], dim=1),
                "quantized": torch.stack([o.quantized for o in outs], dim=1),
            }
            if soft:
                feats["soft"] = torch.stack([o.soft for o in outs], dim=1)
            if hard:
                feats["hard"] = torch.stack([o.hard for o in outs], dim=1)
            return feats
        codes = [pq.encode(levels[:, g]) for g, pq in enumerate(self.quantizers)]
        return {"levels": split_normalize(levels.float(), self.num_subspaces), "codes": torch.stack(codes, dim=1)}

    def forward(self, coarse: Tensor, tokens: Tensor, mask: Tensor) -> dict[str, Tensor]:
        return self.quantize(self.levels(coarse, tokens, mask))

    def codebooks(self) -> Tensor:
        """``[G, M, K, D/M]``: every level's codebook (detached: for scoring and export, not for losses)."""
        return torch.stack([pq.codebook.detach() for pq in self.quantizers])

    def renormalize_codebooks(self) -> None:
        """The reference's per-step ``codebook_normalization``, for codebooks the optimiser moves."""
        for pq in self.quantizers:
            if pq.trainable:
                pq.renormalize_()

    # ---- scores (evaluation containers) ------------------------------------------------------------------
    def adc_score(self, text: dict[str, Tensor], video: dict[str, Tensor], weights: Tensor) -> Tensor:
        """ADC: raw text levels against video codes (the paper's t2v direction)."""
        return adc_scores(text["levels"], self.codebooks(), video["codes"], weights)

    def text_code_score(self, text: dict[str, Tensor], video: dict[str, Tensor], weights: Tensor) -> Tensor:
        """Quantised text against raw video levels (the paper's v2t direction), as ``[n_text, n_video]``."""
        return adc_scores(video["levels"], self.codebooks(), text["codes"], weights).t()

    def dense_score(self, text: dict[str, Tensor], video: dict[str, Tensor], weights: Tensor) -> Tensor:
        """Unquantised ``sum_l w_l cos(t_l, v_l)`` of the sub-normalised levels."""
        return dense_level_scores(text["levels"], video["levels"], weights)

    # ---- codebooks by k-means --------------------------------------------------------------------------
    @torch.no_grad()
    def update_codebooks(self, caches: list[EmbeddingReservoir], **kmeans: Any) -> dict[str, float]:
        """Spherical k-means of every level over the cached embeddings of all ranks (a collective: every rank
        calls it); afterwards all ranks hold the same codebooks. ``kmeans``: options of
        :func:`~vidbench.models.quantization.spherical_kmeans` (iters, tol, empty, ...). Returns statistics."""
        coll = Collective()
        stats = {"kmeans_vectors": 0.0, "kmeans_empty": 0.0, "kmeans_iters": 0.0}
        for pq, cache in zip(self.quantizers, caches, strict=True):
            x = cache.take()
            if x is None:
                x = pq.codebook.new_zeros(0, pq.dim)
            total = coll.sum_(torch.tensor([float(x.shape[0])], device=pq.codebook.device))
            if float(total) == 0:
                continue
            # the reference normalises the codewords before its k-means starts from them; only a trainable
            # codebook (moved by the optimiser since the last step's renormalisation) needs it
            init = l2_normalize(pq.codebook) if pq.trainable else pq.codebook
            result = spherical_kmeans(
                x.reshape(-1, pq.num_subspaces, pq.sub_dim).to(pq.codebook.device),
                init,
                collective=coll,
                **kmeans,
            )
            pq.codebook.copy_(result.codebook)
            stats["kmeans_vectors"] += float(total)
            stats["kmeans_empty"] += result.empty
            stats["kmeans_iters"] += float(result.iterations.float().mean()) / self.num_levels
        return stats
