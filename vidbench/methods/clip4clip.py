"""CLIP4Clip (Luo et al. 2021) with the parameter-free meanP head or the seqTransf head.

Spec methods-clip4clip-drl.md 2.2-2.4. The text is its EOT embedding; each frame is its CLS embedding.
seqTransf depends on the video alone, so it runs once per video at encode time (the reference recomputes
it inside every text-block x video-block similarity call, with the same result). Scores are cosine
similarities of the normalised text vector and the normalised masked mean of normalised frames; the logit
scale multiplies them in training (and the reference applies it at test time too, which changes no rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidbench.models.pooling import l2_normalize, mean_pool_frames
from vidbench.models.temporal import SeqTransf

from .base import ClipMethod, Features
from .registry import register_method


@dataclass
class Clip4ClipMethod:
    name: str = "clip4clip"
    sim_header: str = "meanP"  # meanP | seqTransf
    temporal_layers: int = 4


@register_method(Clip4ClipMethod)
class Clip4Clip(ClipMethod):
    method_name = "clip4clip"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.sim_header = self.cfg.method.sim_header
        if self.sim_header not in ("meanP", "seqTransf"):
            raise ValueError(f"method.sim_header must be meanP or seqTransf, got {self.sim_header!r}")
        self.temporal = None
        if self.sim_header == "seqTransf":
            self.temporal = SeqTransf.for_clip(self.clip, layers=self.cfg.method.temporal_layers)
            if self.clip.pretrained:
                self.temporal.init_from_clip_text(self.clip)

    @property
    def variant(self) -> str:
        return self.sim_header

    @property
    def method_label(self) -> str:
        return f"CLIP4Clip ({self.sim_header})"

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        return {"text": self.clip.encode_text(input_ids, attention_mask).eot}

    def frame_features(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        frames = self.clip.encode_frames(self.pixels(video, video_mask)).cls
        if self.temporal is not None:
            frames = self.temporal(frames, video_mask)
        return frames

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor) -> Features:
        return {"video": mean_pool_frames(self.frame_features(video, video_mask), video_mask)}

    def score(self, text: Features, video: Features) -> torch.Tensor:
        return l2_normalize(text["text"]) @ video["video"].t()

    def match_flops_per_query(self, n_gallery: int, text: Features, video: Features) -> float:
        """One dot product of length D per gallery video: 2 * N * D."""
        return 2.0 * n_gallery * video["video"].shape[-1]
