"""CLIP4Clip's ``seqTransf`` temporal transformer (also DRL's and EERCF's ``agg_module``).

Parameter names match the reference state dict (``frame_position_embeddings.weight``,
``transformerClip.resblocks.{i}.attn.in_proj_weight``, ``...ln_1.weight``, ``...mlp.c_fc.weight``,
...), so a reference checkpoint loads with ``load_state_dict(strict=True)``.

LayerNorm: the reference uses a TF-style LayerNorm, ``w * (x - mean) / sqrt(var + 1e-12) + b`` with
the biased variance. That is exactly ``nn.LayerNorm(eps=1e-12)``; the two agree to float rounding
(about 1e-7, checked in tests/test_temporal.py), so the built-in kernel is used.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vidbench.errors import ConfigError

if TYPE_CHECKING:
    from vidbench.models.clip import ClipBackbone

TF_LAYER_NORM_EPS = 1e-12
MASK_NEG = -1e6  # finite, so a video with no valid frame gives uniform attention instead of NaN


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``z * sigmoid(1.702 z)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: ``x += MHA(LN1(x))``, ``x += c_proj(QuickGELU(c_fc(LN2(x))))``; input is [T, B, D]."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn = nn.MultiheadAttention(width, heads)  # no dropout, sequence-first like the reference
        self.ln_1 = nn.LayerNorm(width, eps=TF_LAYER_NORM_EPS)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width, eps=TF_LAYER_NORM_EPS)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """:param attn_mask: additive [B·H, T, T] float mask (batch-major, head-minor), or None."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TransformerClip(nn.Module):
    """The stack of blocks; only here so the reference names ``transformerClip.resblocks.{i}`` hold."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def frame_attention_mask(mask: Tensor, heads: int, dtype: torch.dtype) -> Tensor:
    """Additive key mask: [B,T] (1 = valid) → [B·H, T, T] with -1e6 on padded keys.

    Rows are ordered batch-major then head (``repeat_interleave`` on dim 0), the layout
    ``nn.MultiheadAttention`` expects; the pre-2021-07 reference used ``repeat`` and mixed masks
    across videos.
    """
    t = mask.shape[1]
    additive = (1.0 - mask.to(dtype)[:, None, :]) * MASK_NEG  # [B, 1, T]
    return additive.expand(-1, t, -1).repeat_interleave(heads, dim=0)


class SeqTransf(nn.Module):
    """Temporal transformer over per-frame features with a residual to the raw frames.

    ``out = TransformerClip(x + P[:T], key mask) + x`` where ``x`` are the frame features [B,T,D].
    Only keys are masked: padded query rows are computed but meaningless, and callers mask them.

    :param width: feature width (CLIP's text width, which equals the joint dim for OpenAI CLIP).
    :param layers: number of blocks (``cross_num_hidden_layers``, 4 in every published run).
    :param heads: attention heads; default ``max(1, width // 64)`` as in the reference.
    :param max_positions: rows of the frame position table. The reference sizes it by the CLIP's context
        length (``cross_config.max_position_embeddings = context_length``, 77 for OpenAI's CLIPs), so
        methods build it with :meth:`for_clip`, and a checkpoint of a CLIP with another context loads.
    """

    def __init__(
        self, width: int, layers: int = 4, heads: int | None = None, max_positions: int = 77
    ) -> None:
        super().__init__()
        heads = max(1, width // 64) if heads is None else heads
        if width % heads != 0:
            raise ConfigError(f"seqTransf width {width} is not divisible by heads {heads}")
        self.width = width
        self.layers = layers
        self.heads = heads
        self.max_positions = max_positions
        self.frame_position_embeddings = nn.Embedding(max_positions, width)
        self.transformerClip = TransformerClip(width, layers, heads)

    @classmethod
    def for_clip(cls, backbone: ClipBackbone, layers: int = 4) -> SeqTransf:
        """The reference's seqTransf for this CLIP: its text width and heads, a position table of its context
        length (the text tower's ``max_position_embeddings``)."""
        width, heads, positions = backbone.text_width, backbone.text_heads, backbone.max_text_length
        return cls(width, layers=layers, heads=heads, max_positions=positions)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """:param x: frame features [B,T,D]; :param mask: [B,T], 1 = valid frame. Returns [B,T,D]."""
        if x.dim() != 3 or mask.shape != x.shape[:2]:
            raise ValueError(
                f"SeqTransf expects x [B,T,D] and mask [B,T]; got {tuple(x.shape)}, {tuple(mask.shape)}"
            )
        t = x.shape[1]
        if t > self.max_positions:
            raise ConfigError(
                f"{t} frames exceed seqTransf's {self.max_positions} frame positions; lower max_frames"
            )
        positions = torch.arange(t, device=x.device)
        h = x + self.frame_position_embeddings(positions)[None]
        attn_mask = frame_attention_mask(mask, self.heads, h.dtype)
        h = self.transformerClip(h.transpose(0, 1), attn_mask).transpose(0, 1)
        return h + x

    @torch.no_grad()
    def init_from_clip_text(self, backbone: ClipBackbone) -> None:
        """CLIP4Clip's initialisation trick: start from CLIP's text transformer.

        Copies the first ``max_positions`` rows of the text position embedding into
        ``frame_position_embeddings`` and text blocks ``0..layers-1`` into the resblocks (q/k/v
        projections concatenated into ``in_proj``; ``layer_norm1/2`` → ``ln_1/ln_2``;
        ``mlp.fc1/fc2`` → ``c_fc/c_proj``). Rows or blocks the text tower lacks (a text table
        shorter than ``max_positions``, or fewer than ``layers`` text blocks, as in the tiny
        backbone with 2) keep their random init.

        The blocks here use QuickGELU and LayerNorm eps 1e-12; the copy reproduces the text layer's
        function only when its activation is ``quick_gelu`` (all OpenAI checkpoints) and up to the
        LayerNorm eps difference.
        """
        text_cfg = backbone.model.config.text_config
        if backbone.text_width != self.width:
            raise ConfigError(
                f"seqTransf width {self.width} differs from CLIP text width {backbone.text_width}; "
                "build it with width=backbone.text_width"
            )
        if backbone.text_heads != self.heads:
            raise ConfigError(
                f"seqTransf has {self.heads} heads but the CLIP text tower has {backbone.text_heads}; "
                "copying "
                "weights across head counts changes the function: build it with heads=backbone.text_heads"
            )
        if text_cfg.hidden_act != "quick_gelu":
            warnings.warn(
                f"CLIP text activation is {text_cfg.hidden_act!r}, seqTransf uses QuickGELU: "
                "the copied blocks "
                "start close to, not equal to, the text layers",
                stacklevel=2,
            )
        text = backbone.model.text_model
        pos = text.embeddings.position_embedding.weight
        rows = min(pos.shape[0], self.max_positions)
        self.frame_position_embeddings.weight[:rows].copy_(pos[:rows])
        for src, dst in zip(text.encoder.layers, self.transformerClip.resblocks, strict=False):
            attn = src.self_attn
            dst.attn.in_proj_weight.copy_(
                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            )
            dst.attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            dst.attn.out_proj.weight.copy_(attn.out_proj.weight)
            dst.attn.out_proj.bias.copy_(attn.out_proj.bias)
            _copy_layer_norm(src.layer_norm1, dst.ln_1)
            _copy_layer_norm(src.layer_norm2, dst.ln_2)
            dst.mlp.c_fc.weight.copy_(src.mlp.fc1.weight)
            dst.mlp.c_fc.bias.copy_(src.mlp.fc1.bias)
            dst.mlp.c_proj.weight.copy_(src.mlp.fc2.weight)
            dst.mlp.c_proj.bias.copy_(src.mlp.fc2.bias)


def _copy_layer_norm(src: nn.LayerNorm, dst: nn.LayerNorm) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)
