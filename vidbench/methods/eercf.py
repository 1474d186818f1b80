"""EERCF (Tian et al., AAAI 2024): coarse-to-fine video representations and recall-then-rerank retrieval.

Spec methods-eercf-hcq.md Part A. One CLIP ViT pass per frame yields the [CLS] feature and every patch
token; CLIP4Clip's seqTransf turns the [CLS] features into temporal frame features, whose masked mean is
the coarse video vector. Training mixes three kinds of scores (the maths is in
:mod:`vidbench.models.eercf`):

- ``L_weak = sym(ls * (0.5 s_video + 0.5 s_frame_weak + 0.05 s_patch_weak))``;
- ``L_strong = sym(ls * (1.0 s_frame_tib + 0.0 s_patch_tib))``, where the parameter-free text-gated
  interaction block (TIB) re-weights video j by its *own* caption j (weights detached), as the
  reference does in training;
- the Pearson constraint on (text, coarse) and (text, frame TIB), unbiased std, diagonal weight 0.14;
- ``L = 0.8 L_weak + 0.2 L_strong + 0.001 L_intra``; each weighted part is logged as its own term.

Evaluation reports several protocols (each its own leaderboard table):

- ``base``: single stage, the coarse score ``<t Wg, v_bar>`` against every video (index: coarse only);
- ``rerank@k``: recall the top-k videos per text by the coarse score, rerank them with the reference's
  test-time mix ``0.5 s_video + 0.8 s_frame_weak + 0.2 s_frame_tib + 0.2 s_patch_weak`` (configurable,
  ``method.rerank_mix``), where the TIB now re-weights each candidate by the query text. Non-candidates
  keep their coarse score. Needs the patch features in the index (``method.index_patches``);
- ``rerank@k-frames``: the same without the patch terms (index: coarse + frame features), the cheap
  operating point. When the mix has no patch term this is reported as ``rerank@k`` instead.

As in the reference (spec A.5), a rerank protocol's matrix is the logit-scaled coarse score with each
text's candidates overwritten by ``100 + logit_scale * mix`` (:func:`vidbench.eval.two_stage.merge_reranked`),
and its v2t metrics come from that one matrix transposed: there is no separate video-to-text two-stage
procedure, and the constant decides the order within a video's column as the reference's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vidbench.errors import ConfigError, DataError
from vidbench.eval.retrieval import num_items, slice_features
from vidbench.eval.two_stage import rerank_bytes_per_pair, two_stage_scorer
from vidbench.models.eercf import (
    ScoreMix,
    candidate_scores,
    coarse_scores,
    match_flops,
    paired_tib,
    pairwise_similarities,
    patch_mask,
    pearson_constraint,
    symmetric_ce,
    weak_pool,
)
from vidbench.models.pooling import l2_normalize, mean_pool_frames
from vidbench.models.temporal import SeqTransf

from .base import ClipMethod, Features, ScoringProtocol
from .registry import register_method

FRAME_KEYS = ("frames_raw", "frames", "frame_mask")


@dataclass
class EercfRerankMix:
    """EERCF's test-time rerank mix (spec A.5; the reference hard-codes these, unlike its training mix)."""

    video: float = 0.5
    frame_weak: float = 0.8
    frame_tib: float = 0.2
    patch_weak: float = 0.2
    patch_tib: float = 0.0


@dataclass
class EercfMethod:
    name: str = "eercf"
    temporal_layers: int = 4  # seqTransf blocks (cross_num_hidden_layers)
    # training mix (spec A.4): L = weak * sym(weak mix) + strong * sym(strong mix) + pearson * L_intra
    video_weight: float = 0.5
    weakframe_weight: float = 0.5
    weakpatch_weight: float = 0.05
    strongframe_weight: float = 1.0
    strongpatch_weight: float = 0.0
    weak_loss_weight: float = 0.8
    strong_loss_weight: float = 0.2
    pearson_weight: float = 0.001  # cdcl_loss_weight
    pearson_diag: float = 0.14
    pearson_offdiag: float = 0.0
    pearson_video: float = 1.0  # (text, coarse video)
    pearson_frame: float = 1.0  # (text, frame TIB)
    pearson_patch: float = 0.0  # (text, patch TIB)
    frame_weak_temperature: float = 0.01
    patch_temperature: float = 0.01
    frame_tib_temperature: float = 0.1
    mask_padded_frames: bool = False  # False: padded frames enter the softmaxes (reference)
    rerank_k: int = 50  # two-stage: candidates recalled per text by the coarse score
    rerank_mix: EercfRerankMix = field(default_factory=EercfRerankMix)
    index_patches: bool = True  # keep patch features in the test index (needed by the patch rerank terms)


@register_method(EercfMethod)
class EERCF(ClipMethod):
    method_name = "eercf"

    def __init__(self, config) -> None:
        super().__init__(config)
        m = self.cfg.method
        for key in ("frame_weak_temperature", "patch_temperature", "frame_tib_temperature"):
            if not float(m[key]) > 0:
                raise ConfigError(f"method.{key} must be > 0, got {m[key]}")
        if int(m.rerank_k) < 1:
            raise ConfigError(f"method.rerank_k must be >= 1 (candidates per text), got {m.rerank_k}")
        self.temporal = SeqTransf.for_clip(self.clip, layers=m.temporal_layers)
        if self.clip.pretrained:
            self.temporal.init_from_clip_text(self.clip)
        dim = self.clip.embed_dim
        # The reference's two extra parameters, both identity at init (spec A.1).
        self.global_mat_weight = nn.Parameter(torch.eye(dim))
        self.frame_logit_weight = nn.Parameter(torch.eye(int(self.cfg.data.max_frames)))
        self.weak_mix = ScoreMix(video=m.video_weight, frame_weak=m.weakframe_weight, patch_weak=m.weakpatch_weight)
        self.strong_mix = ScoreMix(frame_tib=m.strongframe_weight, patch_tib=m.strongpatch_weight)
        self.rerank_mix = ScoreMix.from_mapping(dict(m.rerank_mix))
        self.mask_padded = bool(m.mask_padded_frames)

    # ---- identity -----------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        parts = ["seqTransf", "TIB", "Pearson"]
        if self.mask_padded:
            parts.append("masked-padding")
        return "+".join(parts)

    @property
    def method_label(self) -> str:
        return "EERCF"

    # ---- encoders -----------------------------------------------------------------------------------
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        """``text`` = normalised EOT feature; ``text_g`` = ``text @ global_mat_weight`` (query side, once)."""
        text = l2_normalize(self.clip.encode_text(input_ids, attention_mask).eot)
        return {"text": text, "text_g": text @ self.global_mat_weight}

    def _patches_wanted(self) -> bool:
        m = self.cfg.method
        if self.training:
            return bool(m.weakpatch_weight or m.strongpatch_weight or m.pearson_patch)
        return bool(m.index_patches)

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor) -> Features:
        """Coarse ``[B,D]``; raw and temporal frames ``[B,T,D]``; the frame mask; patches ``[B,T,P,D]``
        (in training when a patch term is on, at test time when ``method.index_patches``). All normalised."""
        feats = self.clip.encode_frames(self.pixels(video, video_mask), return_patches=self._patches_wanted())
        temporal = self.temporal(feats.cls, video_mask)
        out = {
            "coarse": mean_pool_frames(temporal, video_mask),
            "frames_raw": l2_normalize(feats.cls),
            "frames": l2_normalize(temporal),
            "frame_mask": (video_mask != 0).to(torch.uint8),
        }
        if feats.patches is not None:
            out["patches"] = l2_normalize(feats.patches)
        return out

    def frame_mix(self, frames: int) -> torch.Tensor:
        """``frame_logit_weight`` for ``frames`` frames (its top-left block when a clip has fewer)."""
        size = self.frame_logit_weight.shape[0]
        if frames > size:
            raise ConfigError(
                f"clips have {frames} frames but frame_logit_weight is {size}x{size} (data.max_frames at "
                f"construction); build the model with data.max_frames >= {frames}"
            )
        return self.frame_logit_weight[:frames, :frames]

    # ---- training ------------------------------------------------------------------------------------
    def training_loss(self, text: Features, video: Features) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        t = text["text"]
        ls = self.clip.logit_scale.exp()
        fmask = video["frame_mask"] if self.mask_padded else None
        weak: dict[str, torch.Tensor] = {"video": coarse_scores(text["text_g"], video["coarse"])}
        strong: dict[str, torch.Tensor] = {}
        tib: dict[str, torch.Tensor] = {}
        if self.weak_mix.frame_weak or self.strong_mix.frame_tib or m.pearson_frame:
            sims = pairwise_similarities(t, video["frames_raw"])  # [B, B, T]
            if self.weak_mix.frame_weak:
                mask = fmask[None] if fmask is not None else None
                weak["frame_weak"] = weak_pool(sims, m.frame_weak_temperature, mask, self.frame_mix(sims.shape[-1]))
            if self.strong_mix.frame_tib or m.pearson_frame:
                paired = torch.diagonal(sims, dim1=0, dim2=1).t()  # <t_j, r_jf>  [B, T]
                tib["frame"] = paired_tib(paired, video["frames"], m.frame_tib_temperature, fmask)
                strong["frame_tib"] = t @ tib["frame"].t()
        if self.weak_mix.patch_weak or self.strong_mix.patch_tib or m.pearson_patch:
            if "patches" not in video:
                raise DataError("EERCF training needs patch features but encode_video produced none")
            patches = video["patches"].flatten(1, 2)  # [B, T*P, D]
            pmask = patch_mask(fmask, video["patches"].shape[2]) if fmask is not None else None
            qsims = pairwise_similarities(t, patches)  # [B, B, T*P]
            if self.weak_mix.patch_weak:
                weak["patch_weak"] = weak_pool(qsims, m.patch_temperature, pmask[None] if pmask is not None else None)
            if self.strong_mix.patch_tib or m.pearson_patch:
                paired = torch.diagonal(qsims, dim1=0, dim2=1).t()
                tib["patch"] = paired_tib(paired, patches, m.patch_temperature, pmask)
                strong["patch_tib"] = t @ tib["patch"].t()

        terms: dict[str, torch.Tensor] = {}
        if m.weak_loss_weight and self.weak_mix.active():
            terms["loss_weak"] = m.weak_loss_weight * symmetric_ce(ls * self.weak_mix.combine(weak))
        if m.strong_loss_weight and self.strong_mix.active():
            terms["loss_strong"] = m.strong_loss_weight * symmetric_ce(ls * self.strong_mix.combine(strong))
        if m.pearson_weight:
            pairs = [(m.pearson_video, video["coarse"]), (m.pearson_frame, tib.get("frame"))]
            pairs.append((m.pearson_patch, tib.get("patch")))
            intra = sum(
                w * pearson_constraint(t, z, m.pearson_diag, m.pearson_offdiag) for w, z in pairs if w and z is not None
            )
            if isinstance(intra, torch.Tensor):
                terms["loss_pearson"] = m.pearson_weight * intra
        if not terms:
            raise ConfigError("every EERCF loss weight is zero: nothing to train")
        return terms

    # ---- evaluation ----------------------------------------------------------------------------------
    def score(self, text: Features, video: Features) -> torch.Tensor:
        """Single-stage (coarse) scores ``<t Wg, v_bar>``: one D-dim dot product per pair."""
        return coarse_scores(text["text_g"], video["coarse"])

    def match_flops_per_query(self, n_gallery: int, text: Features, video: Features) -> float:
        """``2 N D`` for the coarse pass (see :func:`vidbench.models.eercf.match_flops`)."""
        return match_flops(n_gallery, 0, video["coarse"].shape[-1], 1, 1, ScoreMix(video=1.0))

    def _fine_fn(self, mix: ScoreMix):
        m = self.cfg.method

        def fine(text: Features, cand: Features, coarse_at: torch.Tensor) -> torch.Tensor:
            ref = cand.get("frames_raw", cand.get("patches"))
            t = text["text"].to(ref.dtype) if ref is not None else text["text"]
            frame_mix = self.frame_mix(cand["frames_raw"].shape[-2]) if mix.frame_weak else None
            scores = candidate_scores(
                t,
                cand,
                mix,
                frame_mix=frame_mix.to(t.dtype) if frame_mix is not None else None,
                mask_padded=self.mask_padded,
                frame_weak_temperature=m.frame_weak_temperature,
                frame_tib_temperature=m.frame_tib_temperature,
                patch_temperature=m.patch_temperature,
            )
            scores["video"] = coarse_at
            return mix.combine(scores)

        return fine

    def rerank_protocols(self, video: Features) -> list[tuple[str, ScoreMix, tuple[str, ...]]]:
        """(name, mix, video keys gathered for the candidates) of each two-stage protocol reported."""
        k = int(self.cfg.method.rerank_k)
        full = self.rerank_mix
        if not full.needs_patches():
            return [(f"rerank@{k}", full, _keys_for(full))]
        out = []
        if "patches" in video:
            out.append((f"rerank@{k}", full, _keys_for(full)))
        frames_only = full.without_patches()
        out.append((f"rerank@{k}-frames", frames_only, _keys_for(frames_only)))
        return out

    def protocols(self, text: Features, video: Features) -> list[ScoringProtocol]:
        n = num_items(video)
        k = int(self.cfg.method.rerank_k)
        dim = video["coarse"].shape[-1]
        frames = video["frames_raw"].shape[1]
        per_frame = video["patches"].shape[2] if "patches" in video else self.clip.num_patches
        per_video = _bytes_per_video(video, n)
        ls = float(self.clip.logit_scale.detach().exp())  # the reference's logits carry the trained scale
        protos = [
            ScoringProtocol(
                name="base",
                score=self.score,
                bytes_per_pair=self.score_bytes_per_pair(),
                match_flops=lambda g: self.match_flops_per_query(g, text, video),
                index_bytes_per_video=per_video["coarse"],
                dsl=bool(self.cfg.eval.dsl),
            )
        ]
        for name, mix, keys in self.rerank_protocols(video):
            gathered = sum(per_video[key] for key in keys)
            temporaries = 4 * (6 * (frames + frames * per_frame) + 4 * dim)
            protos.append(
                ScoringProtocol(
                    name=name,
                    postprocess=name,
                    score=two_stage_scorer(self.score, self._fine_fn(mix), k, keys, logit_scale=ls),
                    bytes_per_pair=rerank_bytes_per_pair(n, k, 3 * gathered + temporaries),
                    whole_gallery=True,
                    match_flops=lambda g, mix=mix: match_flops(g, k, dim, frames, per_frame, mix),
                    index_bytes_per_video=per_video["coarse"] + gathered,
                )
            )
        return protos

    @torch.no_grad()
    def measure_efficiency(self, text: Features, video: Features) -> dict[str, Any]:
        """The base figures, plus per protocol: the counted matching FLOPs of one query (the check on the
        formula), the spec-convention FLOPs (A.7, elementwise work included) and ms per query."""
        from vidbench.eval.efficiency import count_flops, time_per_query

        eff = super().measure_efficiency(text, video)
        entries = self.test_results.get("protocols", {})
        ids, mask = self.trainer.datamodule.one_text_sample(self.device)
        query = slice_features(text, 0, 1)
        n = num_items(video)
        mixes = {"base": ScoreMix(video=1.0)} | {name: mix for name, mix, _ in self.rerank_protocols(video)}
        frames = video["frames_raw"].shape[1]
        per_frame = video["patches"].shape[2] if "patches" in video else self.clip.num_patches
        for proto in self.protocols(text, video):
            entry = entries.get(proto.name)
            if entry is None:
                continue
            entry["match_flops_per_query_counted"] = float(count_flops(lambda p=proto: p.score(query, video)).total)
            k = 0 if proto.name == "base" else int(self.cfg.method.rerank_k)
            entry["match_flops_per_query_spec"] = match_flops(
                n, k, video["coarse"].shape[-1], frames, per_frame, mixes[proto.name], convention="spec"
            )
            entry["ms_per_query"] = time_per_query(
                lambda p=proto: p.score(self.encode_text(ids, mask), video), 1, device=self.device
            )
        return eff


def _bytes_per_video(video: Features, n: int) -> dict[str, float]:
    """Bytes each stored feature costs per video (as held in memory: dtype and shape as encoded)."""
    return {key: value.numel() * value.element_size() / n for key, value in video.items()}


def _keys_for(mix: ScoreMix) -> tuple[str, ...]:
    """The video features a rerank mix reads for each candidate."""
    keys = list(FRAME_KEYS) if mix.needs_frames() else []
    if mix.needs_patches():
        keys += ["patches"] if keys else ["frame_mask", "patches"]
    return tuple(keys)


__all__ = ["EERCF", "FRAME_KEYS"]
