"""MaxPool-CLIP: CLIP frames max-pooled over time, scored by cosine, trained with a learned temperature.

A worked example of a method that lives outside vidbench. It implements the contract of
:class:`vidbench.methods.base.RetrievalMethod` (README "Add a method"): a config schema, the encoders
(CLIP text and frames, from :class:`~vidbench.methods.base.ClipMethod`), ``score``, the training loss, its
matching cost and the sentence its protocol gets on the leaderboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vidbench.methods.base import ClipMethod, Features
from vidbench.models.losses import symmetric_infonce
from vidbench.models.pooling import l2_normalize


@dataclass
class MaxPoolClipConfig:
    """The ``method:`` keys of a recipe; an unknown key is an error naming it, as for the built-ins."""

    name: str = "maxpool-clip"
    init_temperature: float = 0.05  # InfoNCE temperature at the start; learned from there
    min_temperature: float = 0.01  # floor, so the logits cannot blow up


class MaxPoolClip(ClipMethod):
    method_name = "maxpool-clip"  # the family written to result.json
    config_schema = MaxPoolClipConfig
    base_protocol_description = (
        "MaxPool-CLIP's protocol: the text's CLIP vector against each video's element-wise maximum over its "
        "frame vectors, cosine similarity, the raw score matrix ranked; the index stores one vector per video; "
        "not transductive."
    )

    def __init__(self, config) -> None:
        super().__init__(config)
        m = self.cfg.method
        if not 0 < m.min_temperature <= m.init_temperature:
            raise ValueError("method.init_temperature must be >= method.min_temperature > 0")
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / m.init_temperature)))

    @property
    def variant(self) -> str:
        return "max-pool"

    @property
    def method_label(self) -> str:
        return "MaxPool-CLIP (example plugin)"

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        return {"text": l2_normalize(self.clip.encode_text(input_ids, attention_mask).eot)}

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor) -> Features:
        frames = self.clip.encode_frames(self.pixels(video, video_mask)).cls  # [B, T, D]
        frames = frames.masked_fill(~video_mask.bool().unsqueeze(-1), float("-inf"))
        return {"video": l2_normalize(frames.amax(dim=1))}

    def score(self, text: Features, video: Features) -> torch.Tensor:
        return text["text"] @ video["video"].t()

    def training_loss(self, text: Features, video: Features) -> dict[str, torch.Tensor]:
        inv_t = self.log_inv_temperature.exp().clamp(max=1.0 / self.cfg.method.min_temperature)
        return {"loss_infonce": symmetric_infonce(inv_t * self.score(text, video))}

    def train_scalars(self) -> dict[str, torch.Tensor | float]:
        return {"temperature": 1.0 / self.log_inv_temperature.exp()}

    def match_flops_per_query(self, n_gallery: int, text: Features, video: Features) -> float:
        """One dot product of length D per gallery video: 2 * N * D."""
        return 2.0 * n_gallery * video["video"].shape[-1]
