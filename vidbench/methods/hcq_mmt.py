"""HCQ as published (Wang et al., WWW 2022): MMT expert features + the MMT video transformer, BERT text.

Spec hcq-original.md §2-§4 with methods-eercf-hcq.md Part B. The encoders differ from HCQ-on-CLIP, the
head is the same :class:`~vidbench.models.hcq_head.HCQHead` (same state-dict names ``vlad.*`` and
``quantizers.*``), and so are the AQ-CL loss, the smoothing, the end-of-epoch k-means and the test-time
protocols (``base`` = ADC on video codes, ``v2t-codes``, ``dense``), inherited from :class:`HCQ`:

- text: ``BertTextEncoder`` (``text_bert``) gives ``[B, W, 768]``; the coarse vector is the MoE mix of the
  per-expert gated embedding units of ``[CLS]`` (``text_experts``), the fine levels aggregate
  ``text_vlad_proj`` of every position with the ``[CLS]`` slot masked out (``[SEP]`` stays in);
- video: ``MmtVideoEncoder`` (``video_mmt``) over the sorted experts; the coarse vector is the mean of the
  normalised ``[AGG]`` outputs of all experts (missing ones included), the fine levels aggregate the
  transformer outputs with ``[CLS]`` and every ``[AGG]`` masked out.

Optimiser and schedule are the reference's: Adam (``optim.lr``, ``optim.weight_decay``, ``optim.betas``,
``optim.eps``) in one group, StepLR stepped after every ``method.lr_step_epochs`` epochs by
``method.lr_gamma``; no warm-up. The result record names it ``method: hcq``, ``variant: HCQ-MMT``,
``backbone: MMT experts + BERT`` and its label ``HCQ`` (the paper rows of results/reference/papers.csv).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from vidbench.data.bert_text import load_bert_tokenizer
from vidbench.data.mmt import get_preset
from vidbench.errors import ConfigError
from vidbench.models.bert_text import BertTextEncoder
from vidbench.models.gating import TextExpertHead
from vidbench.models.mmt import MMT_VIDEO_CONFIGS, MmtVideoEncoder, tiny_mmt_config

from .base import Features, RetrievalMethod
from .hcq import HCQ, HcqMethod
from .optim import build_optimizer
from .registry import register_method

BACKBONE = "MMT experts + BERT"


@dataclass
class HcqMmtMethod(HcqMethod):
    """HCQ as published: MMT expert features + the MMT video transformer, BERT text (spec hcq-original.md).

    The HCQ head keys are HcqMethod's (``sim_header`` / ``temporal_layers`` do not apply here).
    """

    name: str = "hcq_mmt"
    bert: str = "bert-base-cased"  # hub id (local HF cache), local folder, or "tiny" (tests)
    tokenizer: str | None = None  # folder or hub id holding vocab.txt; default: bert
    text_dropout: float = 0.2  # text BERT hidden + attention dropout (0.25 for 1k-B and LSMDC)
    video_bert: str = "msrvtt"  # MMT video transformer config: msrvtt | lsmdc | activitynet | tiny
    video_dropout: float | None = None  # override the config's hidden + attention dropout
    lr_step_epochs: int = 1  # StepLR after every step_epochs epochs (ActivityNet: 2)
    lr_gamma: float = 0.95  # StepLR factor (ActivityNet: 0.85)


@register_method(HcqMmtMethod)
class HcqMmt(HCQ):
    """HCQ's head on the MMT video transformer and BERT (see the module docstring)."""

    method_name = "hcq"

    def __init__(self, config) -> None:
        RetrievalMethod.__init__(self, config)  # not HCQ's / ClipMethod's: no CLIP here
        cfg, m = self.cfg, self.cfg.method
        if cfg.data.mmt is None:
            raise ConfigError(
                "method hcq_mmt runs on the MMT expert features: the recipe needs a data.mmt section "
                "(see recipes/data/mmt-*.yaml)"
            )
        preset = get_preset(cfg.data.dataset, cfg.data.mmt.cut)
        experts = preset.expert_dims
        self.query_tokenizer = load_bert_tokenizer(m.tokenizer or m.bert)
        self.text_bert = BertTextEncoder(
            m.bert,
            dropout=m.text_dropout,
            vocab_size=self.query_tokenizer.vocab_size if m.bert == "tiny" else None,
        )
        self.text_bert.check_tokenizer(self.query_tokenizer.vocab_size)
        if m.video_bert == "tiny":
            video_cfg = tiny_mmt_config()
        elif m.video_bert in MMT_VIDEO_CONFIGS:
            video_cfg = MMT_VIDEO_CONFIGS[m.video_bert]
        else:
            raise ConfigError(
                f"method.video_bert = {m.video_bert!r}; choose one of {sorted(MMT_VIDEO_CONFIGS)} or 'tiny'"
            )
        if m.video_dropout is not None:
            video_cfg = replace(
                video_cfg, hidden_dropout_prob=m.video_dropout, attention_probs_dropout_prob=m.video_dropout
            )
        dim = video_cfg.hidden_size
        hidden = self.text_bert.hidden_size
        self.text_experts = TextExpertHead(list(experts), hidden, dim, dropout=m.text_dropout)
        self.text_vlad_proj = nn.Linear(hidden, dim)
        self.video_mmt = MmtVideoEncoder(experts, video_cfg)
        self.build_hcq(dim, f"the MMT video transformer ({m.video_bert})")

    # ---- identity --------------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return "HCQ-MMT"

    @property
    def method_label(self) -> str:
        return "HCQ"

    @property
    def backbone_label(self) -> str:
        return BACKBONE

    # ---- encoders --------------------------------------------------------------------------------------
    def text_parts(self, input_ids: Tensor, attention_mask: Tensor) -> Features:
        """The MoE-mixed coarse text vector, the projected BERT tokens and the word mask (CLS masked out)."""
        hidden = self.text_bert(input_ids, attention_mask)
        coarse, _, _ = self.text_experts(hidden[:, 0])
        words = attention_mask.clone()
        words[:, 0] = 0
        return {"coarse": coarse, "tokens": self.text_vlad_proj(hidden), "mask": words}

    def video_parts(self, video: dict[str, Any], video_mask: Tensor | None = None) -> Features:
        """The mean of the MMT ``[AGG]`` outputs, the video tokens and the mask GhostVLAD aggregates."""
        out = self.video_mmt(video["features"], video["features_t"], video["features_ind"], video["features_maxpool"])
        return {"coarse": out.coarse, "tokens": out.tokens, "mask": out.vlad_mask}

    def encode_text_batch(self, batch: dict[str, Any]) -> Features:
        return self.encode_text(batch["token_ids"], batch["token_mask"])

    def encode_video_batch(self, batch: dict[str, Any]) -> Features:
        return self.encode_video(batch, None)

    def text_parts_batch(self, batch: dict[str, Any]) -> Features:
        return self.text_parts(batch["token_ids"], batch["token_mask"])

    def video_parts_batch(self, batch: dict[str, Any]) -> Features:
        return self.video_parts(batch, None)

    # ---- training --------------------------------------------------------------------------------------
    def train_scalars(self) -> dict[str, Tensor | float]:
        return {}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """No CLIP logit scale to clamp (the temperature is fixed)."""

    def optimiser_record(self) -> dict[str, Any]:
        o, m = self.cfg.optim, self.cfg.method
        return {
            "optimizer": str(o.optimizer),
            "schedule": f"step_lr({int(m.lr_step_epochs)}, {float(m.lr_gamma)})",
            "lr": float(o.lr),
        }

    def configure_optimizers(self):
        o, m = self.cfg.optim, self.cfg.method
        params = [p for p in self.parameters() if p.requires_grad]
        group = {"params": params, "lr": o.lr, "weight_decay": o.weight_decay}
        optimizer = build_optimizer(o.optimizer, [group], betas=o.betas, eps=o.eps)  # adam, as HCQ's train.py
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=m.lr_step_epochs, gamma=m.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
