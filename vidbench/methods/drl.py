"""DRL (Wang et al. 2022): token-wise interaction (TI / WTI) and channel decorrelation (CDCR).

Spec methods-clip4clip-drl.md section 3. Text keeps every token feature with its mask; video keeps its
frames after the aggregation module (seqTransf, shared with CLIP4Clip, or none). In training the features
are gathered over the global batch first, and the WTI weight heads run on the gathered, unnormalised
features (so with ``trainer.gather_grad=reference`` they get the reference's full gradient while the
encoders get 1/W). The logit scale multiplies the scores in training only. At test time each item's tokens
are normalised, masked and weighted once at encode time, and ``tokenwise_scores_blocked`` scores the split
without building ``[n_text, n_video, L_t, L_v]``.

Interaction ``dp`` is DRL's CLIP4Clip-meanP-equivalent baseline (EOT vector vs mean of frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidbench.models.cdcr import cdcr_loss
from vidbench.models.interaction import (
    WTIHead,
    dp_similarity,
    dp_video_embedding,
    l2_normalize,
    prepare_tokens,
    select_eot,
    tokenwise_scores_blocked,
    tokenwise_similarity,
)
from vidbench.models.losses import symmetric_infonce
from vidbench.models.temporal import SeqTransf

from .base import ClipMethod, Features, ScoringProtocol
from .registry import register_method

_INTERACTIONS = {"dp": "DP", "ti": "TI", "wti": "WTI"}
_AGGREGATIONS = {"none": "None", "seqTransf": "seqTransf"}


@dataclass
class DRLMethod:
    name: str = "drl"
    interaction: str = "wti"  # dp | ti | wti
    agg_module: str = "seqTransf"  # none | seqTransf
    temporal_layers: int = 4
    wti_arch: int = 2  # 1: Linear; 2: Linear-ReLU-Linear (published); 3: two hidden layers
    padding: str = "zero"  # zero: padded similarities are 0 inside the max (reference) | neg_inf
    cdcr: int = 3  # 0 off; 1 random token/frame pairs; 2 argmax pairs (TI); 3 weighted argmax pairs (WTI)
    cdcr_alpha1: float = 0.11  # diagonal weight (README main command; the script uses 0.14)
    cdcr_alpha2: float = 0.0  # off-diagonal weight (0 in every published config)
    cdcr_lambda: float = 0.001
    two_stage_k: int = 0  # >0: also report protocol two-stage@k (mean-pooled recall, TI/WTI re-rank of the top k)


@register_method(DRLMethod)
class DRL(ClipMethod):
    method_name = "drl"

    def __init__(self, config) -> None:
        super().__init__(config)
        m = self.cfg.method
        if m.interaction not in _INTERACTIONS:
            raise ValueError(f"method.interaction must be one of {sorted(_INTERACTIONS)}, got {m.interaction!r}")
        if m.agg_module not in _AGGREGATIONS:
            raise ValueError(f"method.agg_module must be one of {sorted(_AGGREGATIONS)}, got {m.agg_module!r}")
        self.interaction, self.padding = m.interaction, m.padding
        self.temporal = None
        if m.agg_module == "seqTransf":
            self.temporal = SeqTransf.for_clip(self.clip, layers=m.temporal_layers)
            if self.clip.pretrained:
                self.temporal.init_from_clip_text(self.clip)
        if self.interaction == "wti":
            # reference attribute names, so a DRL checkpoint's head weights map one to one
            self.text_weight_fc = WTIHead(self.clip.embed_dim, arch=m.wti_arch)
            self.video_weight_fc = WTIHead(self.clip.embed_dim, arch=m.wti_arch)

    @property
    def variant(self) -> str:
        m = self.cfg.method
        parts = [_INTERACTIONS[m.interaction], _AGGREGATIONS[m.agg_module]]
        if m.cdcr:
            parts.append("CDCR")
        return "+".join(parts)

    @property
    def method_label(self) -> str:
        return f"DRL ({self.variant})"

    # ---- encoders: raw features in training (the loss works on the gathered batch), prepared at test time
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        out = self.clip.encode_text(input_ids, attention_mask)
        tokens, mask = out.tokens, attention_mask
        if self.training:
            return {"tokens": tokens, "mask": mask}
        if self.interaction == "dp":
            return {"eot": l2_normalize(select_eot(tokens, mask))}
        feats = {"tokens": prepare_tokens(tokens, mask), "mask": mask}
        if self.interaction == "wti":
            feats["weights"] = self.text_weight_fc(tokens, mask)
        return feats

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor) -> Features:
        frames = self.clip.encode_frames(self.pixels(video, video_mask)).cls
        if self.temporal is not None:
            frames = self.temporal(frames, video_mask)
        if self.training:
            return {"frames": frames, "mask": video_mask}
        if self.interaction == "dp":
            return {"video": dp_video_embedding(frames, video_mask)}
        feats = {"frames": prepare_tokens(frames, video_mask), "mask": video_mask}
        if self.interaction == "wti":
            feats["weights"] = self.video_weight_fc(frames, video_mask)
        return feats

    # ---- scores ------------------------------------------------------------------------------------------
    def score(self, text: Features, video: Features) -> torch.Tensor:
        if self.interaction == "dp":
            return text["eot"] @ video["video"].t()
        return tokenwise_scores_blocked(
            text, video, mode=self.interaction, padding=self.padding, budget_bytes=self.cfg.eval.budget_mb * 2**20
        )

    def training_loss(self, text: Features, video: Features) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        t, tm, v, vm = text["tokens"], text["mask"], video["frames"], video["mask"]
        if self.interaction == "dp":
            eot = select_eot(t, tm)
            sim = dp_similarity(eot, v, vm)
            cdcr_inputs = {"text_eot": l2_normalize(eot), "video_pooled": dp_video_embedding(v, vm)}
        else:
            wt = self.text_weight_fc(t, tm) if self.interaction == "wti" else None
            wv = self.video_weight_fc(v, vm) if self.interaction == "wti" else None
            sim = tokenwise_similarity(
                t, tm, v, vm, mode=self.interaction, text_weights=wt, video_weights=wv, padding=self.padding
            )
            cdcr_inputs = {
                "text_tokens": l2_normalize(t),
                "text_mask": tm,
                "video_frames": l2_normalize(v),
                "video_mask": vm,
                "text_weights": wt,
                "video_weights": wv,
                "padding": self.padding,
            }
        terms = {"loss_infonce": symmetric_infonce(self.clip.logit_scale.exp() * sim)}
        if m.cdcr:
            raw = cdcr_loss(m.cdcr, alpha1=m.cdcr_alpha1, alpha2=m.cdcr_alpha2, **cdcr_inputs)
            terms["loss_cdcr"] = m.cdcr_lambda * raw
        return terms

    def match_flops_per_query(self, n_gallery: int, text: Features, video: Features) -> float:
        """dp: 2*N*D. TI/WTI: the blocked scorer's matmul on valid positions only, 2*D*mean(L_t)*sum(L_v)
        scaled to N videos (padding is skipped exactly, so padded positions cost nothing)."""
        if self.interaction == "dp":
            return 2.0 * n_gallery * video["video"].shape[-1]
        d = video["frames"].shape[-1]
        mean_lt = text["mask"].sum(-1).float().mean().item()
        mean_lv = video["mask"].sum(-1).float().mean().item()
        return 2.0 * d * mean_lt * mean_lv * n_gallery

    # ---- two-stage serving protocol (issue 19): mean-pooled recall, then the method's own score on the top k
    def protocols(self, text: Features, video: Features) -> list[ScoringProtocol]:
        """The base protocol, plus ``two-stage@k`` when ``method.two_stage_k > 0`` (TI/WTI only): what a
        million-video index serves, so the test reports its accuracy cost next to the exact score."""
        protos = super().protocols(text, video)
        k = int(self.cfg.method.get("two_stage_k", 0) or 0)
        if k <= 0 or self.interaction == "dp":
            return protos
        from vidbench.eval.two_stage import rerank_bytes_per_pair, two_stage_scorer

        n, frames, d = video["frames"].shape
        keys = tuple(key for key in ("frames", "mask", "weights") if key in video)
        per_video = sum(video[key][0].numel() * video[key].element_size() for key in keys)
        exact_cost = self.match_flops_per_query(1, text, video)
        protos.append(
            ScoringProtocol(
                name=f"two-stage@{k}",
                postprocess=f"two-stage@{k}",
                score=two_stage_scorer(pooled_scores, self._rerank_candidates, k, keys),
                bytes_per_pair=rerank_bytes_per_pair(n, k, 3 * per_video),
                whole_gallery=True,
                match_flops=lambda g: 2.0 * g * d + min(k, g) * exact_cost,
                index_bytes_per_video=4.0 * d + per_video,
            )
        )
        return protos

    def _rerank_candidates(self, text: Features, cand: Features, coarse_at: torch.Tensor) -> torch.Tensor:
        """``[I, k]``: each text against its own candidates with the method's exact (TI/WTI) score."""
        rows = []
        for i in range(coarse_at.shape[0]):
            one = {key: value[i : i + 1] for key, value in text.items()}
            rows.append(self.score(one, {key: value[i] for key, value in cand.items()}))
        return torch.cat(rows)


def mean_pooled(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit mean of the valid (already L2-normalised) tokens: the recall vector of the two-stage protocol."""
    m = mask.to(tokens.dtype).unsqueeze(-1)
    return l2_normalize((tokens * m).sum(1) / m.sum(1).clamp(min=1))


def pooled_scores(text: Features, video: Features) -> torch.Tensor:
    """Stage 1 of ``two-stage@k``: mean-pooled text tokens against mean-pooled frames, ``[n_text, n_video]``."""
    return mean_pooled(text["tokens"], text["mask"]) @ mean_pooled(video["frames"], video["mask"]).t()
