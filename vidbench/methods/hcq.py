"""HCQ (Wang et al., WWW 2022): hybrid contrastive quantisation, here as a head on CLIP features.

Spec methods-eercf-hcq.md Part B, Part D option (b); variant ``HCQ-on-CLIP``. The original model runs on
MMT expert features with BERT text (a separate data path, not this class); the head, the quantisers, the
loss and the code-based retrieval below are independent of the encoders, so that path can reuse them.

Levels (G = L + 1 embeddings of size D per text or video):
- coarse: the text's EOT embedding vs. the masked mean of normalised frame embeddings (CLIP4Clip meanP;
  ``sim_header: seqTransf`` runs the temporal transformer first);
- L fine levels: one GhostVLAD, shared by both modalities, over the word tokens (SOT masked out, as the
  reference masks BERT's [CLS]) and over the frames.

Each level has its own product quantiser (M sub-codebooks x K codewords), shared by text and video.
Training: AQ-CL (raw text vs. quantised video + quantised text vs. raw video) smoothed from the
unquantised loss with ``cos(e pi / 2E)``; the codebooks are learnt by a spherical k-means at the end of every
epoch over the embeddings cached during it (DDP: sums all-reduced, every rank ends with the same codebooks)
and, when the soft-code term or the PQ regulariser is on (``method.update_codebooks``, as the reference), also
by the optimiser, with every codeword renormalised before each step. The temperature is fixed, so CLIP's
logit scale is frozen (unused).

Protocols (each in result.json with its own metrics and costs; every one also carries ``metrics_mmt``, the
metric family HCQ's tables use: MMT's tie-averaged ranks, R@50 and the geometric mean of R@1/5/10, see
:func:`vidbench.eval.metrics.mmt_retrieval_metrics`):
- ``base``: retrieval on codes, what the paper reports: raw text queries, videos stored as G * M uint8
  codes, asymmetric distance computation with per-query look-up tables (vidbench/eval/adc.py). Its v2t
  column ranks texts by the same matrix.
- ``v2t-codes``: the paper's v2t: quantised text vs. raw video (read its v2t column).
- ``dense``: the same model without quantisation (``sum_l w_l cos``), G * D floats per video; the gap to
  ``base`` is what quantisation costs.
- ``faiss`` (``eval_faiss: true``): the gallery exported to a FAISS IndexPQ and searched by FAISS.
With ``export_faiss: true`` the test gallery's FAISS index is written to ``<run_dir>/hcq_index.faiss``
(ids = positions in the test split's video order) with a JSON sidecar describing the query vectors.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from vidbench.config import run_dir
from vidbench.errors import ConfigError
from vidbench.eval.adc import (
    adc_match_flops,
    export_faiss,
    faiss_search,
    to_faiss_index,
)
from vidbench.models.aqcl import hybrid_aqcl_loss, level_weights, smoothing_weight
from vidbench.models.hcq_head import HCQHead
from vidbench.models.pooling import mean_pool_frames
from vidbench.models.quantization import (
    EMPTY_POLICIES,
    KMEANS_STOPS,
    EmbeddingReservoir,
)
from vidbench.models.temporal import SeqTransf

from .base import ClipMethod, Features, ScoringProtocol
from .registry import register_method

log = logging.getLogger(__name__)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass
class HcqMethod:
    """HCQ head on CLIP features (spec methods-eercf-hcq.md Part B; Part D option b)."""

    name: str = "hcq"
    sim_header: str = "meanP"  # frames for the coarse level and GhostVLAD: meanP (CLIP frames) | seqTransf
    temporal_layers: int = 4
    fine_levels: int = 7  # L: GhostVLAD clusters, one fine level each
    ghost_clusters: int = 1
    vlad_mode: str = "reference"  # reference (ghost dropped before softmax, mask x logits) | textbook
    vlad_batch_norm: bool = True
    num_subspaces: int = 32  # M sub-codebooks per level (must divide the embedding size)
    num_codewords: int = 256  # K codewords per sub-codebook (<= 256: one byte per code)
    alpha: float = 1.0  # soft-code sharpness
    quantizer_batch_norm: bool = True  # BatchNorm1d(M) on the codeword similarities (soft codes only)
    temperature: float = 0.05  # AQ-CL tau (0.07 for ActivityNet)
    # loss and score: cls_weight * coarse + vlad_weight * mean over the L fine levels (the reference's
    # per-config pair: 0.125 / 0.875 for its L = 7 configs; L = 1: 2.0 / 2.0; L = 3: 1.3333 / 2.0;
    # L = 15: 1.0667 / 2.0; L = 31: 1.0323 / 2.0)
    cls_weight: float = 0.125
    vlad_weight: float = 0.875
    debias_prior: float = 0.0  # tau+ of the fine levels' debiased InfoNCE (0 in every reference config)
    code_loss_weight: float = 0.0  # soft-code InfoNCE term (0 in every reference config)
    pq_reg_loss_weight: float = 0.0  # sum_d (x_normalized - x_hat)^2 per row (0 in every reference config)
    # codewords are nn.Parameters the optimiser updates (the reference's pq_params.update_codebooks, true in every
    # config), renormalised before each step and re-learnt by the end-of-epoch k-means. Only the two terms above
    # reach them; with both at 0 their gradient is exactly 0 (the reference's Adam then never moves them), so they
    # stay frozen, which also keeps DDP from flagging parameters without gradient.
    update_codebooks: bool = True
    smoothing: bool = True  # (1 - w_e) AQ-CL + w_e unquantised, w_e = cos(e pi / 2E)
    smoothing_epochs: int | None = None  # E; default trainer.max_epochs
    kmeans_iters: int = 10
    kmeans_stop: str = "all"  # all: run every iteration (what the reference effectively does) | converged
    kmeans_tol: float = 1e-5  # kmeans_stop=converged: stop a sub-codebook once MSE(old, new) <= tol
    kmeans_empty: str = "zero"  # zero (reference: dead codeword) | keep (previous codeword)
    kmeans_cache: int = 65536  # embeddings (text + video) cached per level per rank per epoch, uniform sample
    export_faiss: bool = True  # write <run_dir>/hcq_index.faiss for the test gallery
    eval_faiss: bool = False  # extra protocol "faiss": the test gallery searched through FAISS


@register_method(HcqMethod)
class HCQ(ClipMethod):
    method_name = "hcq"

    def __init__(self, config) -> None:
        super().__init__(config)
        m = self.cfg.method
        if m.sim_header not in ("meanP", "seqTransf"):
            raise ConfigError(f"method.sim_header must be meanP or seqTransf, got {m.sim_header!r}")
        self.temporal = None
        if m.sim_header == "seqTransf":
            self.temporal = SeqTransf.for_clip(self.clip, layers=m.temporal_layers)
            if self.clip.pretrained:
                self.temporal.init_from_clip_text(self.clip)
        self.build_hcq(self.clip.embed_dim, f"backbone {self.clip.label}")
        self.clip.logit_scale.requires_grad_(False)  # AQ-CL uses the fixed temperature

    def build_hcq(self, dim: int, what: str) -> None:
        """The HCQ head on ``dim``-d features (``what`` names their encoder in errors), level weights, caches."""
        m = self.cfg.method
        if m.kmeans_empty not in EMPTY_POLICIES:
            raise ConfigError(f"method.kmeans_empty must be one of {EMPTY_POLICIES}, got {m.kmeans_empty!r}")
        if m.kmeans_stop not in KMEANS_STOPS:
            raise ConfigError(f"method.kmeans_stop must be one of {KMEANS_STOPS}, got {m.kmeans_stop!r}")
        if not 0.0 <= m.debias_prior < 1.0:
            raise ConfigError(f"method.debias_prior (tau+) must be in [0, 1), got {m.debias_prior}")
        if m.code_loss_weight < 0 or m.pq_reg_loss_weight < 0:
            raise ConfigError(
                "method.code_loss_weight and method.pq_reg_loss_weight must be >= 0, got "
                f"{m.code_loss_weight} and {m.pq_reg_loss_weight}"
            )
        if m.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if dim % m.num_subspaces:
            raise ConfigError(
                f"method.num_subspaces = {m.num_subspaces} must divide the embedding size {dim} of {what}"
            )
        if (m.export_faiss or m.eval_faiss) and m.num_codewords & (m.num_codewords - 1):
            raise ConfigError(
                f"method.num_codewords = {m.num_codewords}: FAISS export needs a power of two "
                "(or set method.export_faiss=false and method.eval_faiss=false)"
            )
        self.attach_head(  # self.head; its vlad / quantizers keep their state-dict names
            "head",
            HCQHead(
                dim,
                m.fine_levels,
                m.ghost_clusters,
                m.num_subspaces,
                m.num_codewords,
                vlad_mode=m.vlad_mode,
                vlad_batch_norm=m.vlad_batch_norm,
                alpha=m.alpha,
                quantizer_batch_norm=m.quantizer_batch_norm,
                trainable_codebooks=self.codebooks_trained(),
            ),
        )
        self.num_levels = self.head.num_levels
        try:
            weights = level_weights(m.fine_levels, m.cls_weight, m.vlad_weight)
        except ValueError as err:
            raise ConfigError(f"method.cls_weight / method.vlad_weight: {err}") from err
        self.register_buffer("level_w", weights, persistent=False)
        self._caches = [EmbeddingReservoir(m.kmeans_cache) for _ in range(self.num_levels)]
        self._gallery: Features | None = None

    # ---- identity --------------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return "HCQ-on-CLIP" if self.temporal is None else "HCQ-on-CLIP+seqTransf"

    @property
    def method_label(self) -> str:
        m = self.cfg.method
        return f"HCQ on CLIP ({m.sim_header}, L={m.fine_levels}, M={m.num_subspaces}, K={m.num_codewords})"

    # ---- encoders --------------------------------------------------------------------------------------
    def text_parts(self, input_ids: Tensor, attention_mask: Tensor) -> Features:
        """The text encoder's per-sample outputs the head takes: the EOT embedding, the word tokens and their
        mask (SOT masked out)."""
        feats = self.clip.encode_text(input_ids, attention_mask)
        words = feats.mask.clone()
        words[:, 0] = 0
        return {"coarse": feats.eot, "tokens": feats.tokens, "mask": words}

    def video_parts(self, video: Tensor, video_mask: Tensor) -> Features:
        """The video encoder's per-sample outputs: the meanP video embedding, the frames and their mask."""
        frames = self.clip.encode_frames(self.pixels(video, video_mask)).cls
        if self.temporal is not None:
            frames = self.temporal(frames, video_mask)
        return {"coarse": mean_pool_frames(frames, video_mask), "tokens": frames, "mask": video_mask}

    def text_parts_batch(self, batch: dict) -> Features:
        return self.text_parts(batch["input_ids"], batch["attention_mask"])

    def video_parts_batch(self, batch: dict) -> Features:
        return self.video_parts(batch["video"], batch.get("video_mask"))

    def levels(self, parts: Features) -> Tensor:
        """``[B, G, D]``: the coarse vector, then the fine levels over the tokens where the mask is set. The
        GhostVLAD's BatchNorm couples the samples, so this runs on the whole local batch (``finish_parts``)."""
        return self.head.levels(parts["coarse"], parts["tokens"], parts["mask"])

    def text_levels(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.levels(self.text_parts(input_ids, attention_mask))

    def video_levels(self, video: Tensor, video_mask: Tensor) -> Tensor:
        return self.levels(self.video_parts(video, video_mask))

    def _features(self, levels: Tensor) -> Features:
        """Training: sub-normalised levels + straight-through quantisation (+ soft codes / hard reconstructions
        when their loss terms are on); evaluation: levels + codes."""
        m = self.cfg.method
        return self.head.quantize(levels, soft=bool(m.code_loss_weight), hard=bool(m.pq_reg_loss_weight))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Features:
        """Training: sub-normalised levels + straight-through quantisation; evaluation: levels + codes."""
        return self._features(self.text_levels(input_ids, attention_mask))

    def encode_video(self, video: Tensor, video_mask: Tensor) -> Features:
        return self._features(self.video_levels(video, video_mask))

    def encode_parts(self, batch: dict) -> tuple[Features, Features]:
        """Per-sample encoder outputs; the head (VLAD, quantisers) runs in ``finish_parts``."""
        return self.text_parts_batch(batch), self.video_parts_batch(batch)

    def finish_parts(self, text: Features, video: Features) -> tuple[Features, Features]:
        return self._features(self.levels(text)), self._features(self.levels(video))

    def codebooks(self) -> Tensor:
        """``[G, M, K, D/M]``: every level's codebook."""
        return self.head.codebooks()

    # ---- training --------------------------------------------------------------------------------------
    def smoothing(self) -> float:
        """This epoch's weight of the unquantised loss (0 when smoothing is off)."""
        m = self.cfg.method
        if not m.smoothing:
            return 0.0
        return smoothing_weight(self.current_epoch + 1, m.smoothing_epochs or self.cfg.trainer.max_epochs)

    def observe_local_features(self, text: Features, video: Features) -> None:
        """Cache this rank's (local, detached) level embeddings for the end-of-epoch k-means."""
        if self.training:
            self.cache_embeddings(text["levels"], video["levels"])

    def training_loss(self, text: Features, video: Features) -> dict[str, Tensor]:
        m = self.cfg.method
        return hybrid_aqcl_loss(
            text["levels"],
            video["levels"],
            text["quantized"],
            video["quantized"],
            self.level_w,
            temperature=float(m.temperature),
            smooth=self.smoothing(),
            prior=float(m.debias_prior),
            code_weight=float(m.code_loss_weight),
            text_soft=text.get("soft"),
            video_soft=video.get("soft"),
            pq_reg_weight=float(m.pq_reg_loss_weight),
            text_hard=text.get("hard"),
            video_hard=video.get("hard"),
        )

    def codebooks_trained(self) -> bool:
        """Codewords are optimiser-trained parameters: ``method.update_codebooks`` and a loss term reaching them
        (the soft-code term or the PQ regulariser; AQ-CL's straight-through estimator gives them none)."""
        m = self.cfg.method
        return bool(m.update_codebooks) and bool(m.code_loss_weight or m.pq_reg_loss_weight)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """The reference renormalises every codeword before each step; a no-op for frozen codebooks."""
        self.head.renormalize_codebooks()

    def cache_embeddings(self, text_levels: Tensor, video_levels: Tensor) -> None:
        for g, cache in enumerate(self._caches):
            cache.add(torch.cat([text_levels[:, g], video_levels[:, g]]))

    def on_train_epoch_start(self) -> None:
        seed = int(self.cfg.run.seed) * 1_000_003 + self.current_epoch * 7919 + _rank() * 104_729
        for g, cache in enumerate(self._caches):
            cache.reset(seed + g)

    def update_codebooks(self) -> dict[str, float]:
        """End-of-epoch spherical k-means of every level over the cached embeddings of all ranks.

        Every rank must call this (it runs collectives); afterwards all ranks hold identical codebooks.
        Returns summary statistics (vectors used, empty codewords, mean iterations).
        """
        m = self.cfg.method
        return self.head.update_codebooks(
            self._caches, iters=m.kmeans_iters, tol=m.kmeans_tol, empty=m.kmeans_empty, stop=m.kmeans_stop
        )

    def on_train_epoch_end(self) -> None:
        stats = self.update_codebooks()
        stats["smooth_w"] = self.smoothing()
        for name, value in stats.items():
            self.log(f"train/{name}", value, rank_zero_only=True, sync_dist=False)
        super().on_train_epoch_end()  # after the k-means: eval.select_on_test scores the new codebooks

    # ---- evaluation ------------------------------------------------------------------------------------
    def score(self, text: Features, video: Features) -> Tensor:
        """ADC: raw text levels against video codes (the ``base`` protocol)."""
        return self.head.adc_score(text, video, self.level_w)

    def text_code_score(self, text: Features, video: Features) -> Tensor:
        """Quantised text against raw video levels: the paper's v2t direction."""
        return self.head.text_code_score(text, video, self.level_w)

    def dense_score(self, text: Features, video: Features) -> Tensor:
        """Unquantised: ``sum_l w_l cos(t_l, v_l)`` of the sub-normalised levels."""
        return self.head.dense_score(text, video, self.level_w)

    def faiss_score(self, text: Features, video: Features) -> Tensor:
        """The gallery exported to FAISS and searched exhaustively (every video ranked)."""
        n_video = video["codes"].shape[0]
        index = to_faiss_index(self.codebooks(), video["codes"])
        scores, ids = faiss_search(index, text["levels"], self.cfg.method.num_subspaces, self.level_w, n_video)
        out = torch.empty(scores.shape[0], n_video, dtype=scores.dtype, device=scores.device)
        return out.scatter_(1, ids.long(), scores)

    def match_flops_per_query(self, n_gallery: int, text: Features, video: Features) -> float:
        m = self.cfg.method
        return adc_match_flops(n_gallery, self.num_levels, m.num_subspaces, m.num_codewords, self.head.dim)

    def index_bytes_per_video(self, video: Features) -> float:
        """One byte per code: ``(L + 1) * M``."""
        return float(self.num_levels * self.cfg.method.num_subspaces)

    def protocols(self, text: Features, video: Features) -> list[ScoringProtocol]:
        m, g, dim = self.cfg.method, self.num_levels, self.head.dim
        self._gallery = video  # kept for the FAISS export after scoring
        adc_cost = lambda n: self.match_flops_per_query(n, text, video)  # noqa: E731
        dense_cost = lambda n: 2.0 * n * g * dim  # noqa: E731
        out = [
            ScoringProtocol(
                name="base",
                score=self.score,
                bytes_per_pair=12,  # accumulator + one gathered row + its index
                match_flops=adc_cost,
                index_bytes_per_video=self.index_bytes_per_video(video),
                dsl=bool(self.cfg.eval.dsl),
                mmt_metrics=True,
            ),
            ScoringProtocol(
                name="v2t-codes",
                score=self.text_code_score,
                bytes_per_pair=12,
                match_flops=dense_cost,
                index_bytes_per_video=4.0 * g * dim,
                mmt_metrics=True,
            ),
            ScoringProtocol(
                name="dense",
                score=self.dense_score,
                bytes_per_pair=4,
                match_flops=dense_cost,
                index_bytes_per_video=4.0 * g * dim,
                mmt_metrics=True,
            ),
        ]
        if m.eval_faiss:
            out.append(
                ScoringProtocol(
                    name="faiss",
                    score=self.faiss_score,
                    bytes_per_pair=16,
                    whole_gallery=True,
                    match_flops=adc_cost,
                    index_bytes_per_video=float(math.ceil(g * m.num_subspaces * math.log2(m.num_codewords) / 8)),
                    mmt_metrics=True,
                )
            )
        return out

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        gallery, self._gallery = self._gallery, None
        if not self.cfg.method.export_faiss or gallery is None or self.trainer.global_rank != 0:
            return
        path = run_dir(self.cfg) / "hcq_index.faiss"
        export_faiss(
            path,
            self.codebooks(),
            gallery["codes"],
            self.level_w,
            recipe=self.cfg.run.name,
            ids="positions in the test split's video order",
        )
        self.test_results["protocols"]["base"]["faiss_index"] = str(path)
        log.info("wrote the FAISS index of the test gallery to %s", path)
