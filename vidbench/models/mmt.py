"""The MMT video transformer as HCQ uses it (``vid_inp='both'``, ``pos_enc='tint'``, ``out_tok='mxp'``).

Input: the per-expert tensors of :mod:`vidbench.data.mmt` (experts sorted by name), batched:
``features[e] [B, T, D_e]``, ``features_t[e] [B, T]`` (centre seconds + 2; 1 = unknown), ``features_ind[e]
[B, T]`` (1 on real rows) and ``features_maxpool[e] [B, D_e]``.

1. ``ReduceDim_e = L2norm(Linear(D_e -> H))``, one per expert, shared by its ``[AGG]`` input (the maxpool)
   and its temporal rows. Zero (padded / missing) rows map to ``normalize(bias)``: only masks remove them.
2. Token sequence, length ``1 + E·(1 + T)`` (218 for 7 experts × 30, 203 for 2 × 100)::

       slot                     feature               token type       position                     mask
       [CLS]                    zeros                 0                0                            1
       per expert e, sorted:
         [AGG_e]                ReduceDim_e(maxpool)  type(e)          0                            max_t ind_e
         T temporal tokens      ReduceDim_e(rows)     type(e)          long(clamp(t, 0, P-1))       ind_e

   with the token types of :data:`EXPERT_TOKEN_TYPES` and P = ``max_position_embeddings`` (32, or 102
   for ActivityNet), so positions are floor(centre + 2) saturating at P-1.
3. Embedding ``LayerNorm(pos_emb[position] + type_emb[type] + feature)`` then dropout: no word table.
4. Post-LN BERT layers; attention adds ``(1 - mask)·(-10000)`` to the scores, so masked slots are excluded
   only as **keys** (a missing expert's ``[AGG]`` still produces an output); FFN with erf-GELU.

:class:`MmtVideoEncoder` returns :class:`MmtVideoOutput`: all token outputs, the attention mask, the
L2-normalised ``[AGG]`` outputs per expert, their mean over **all** experts (HCQ's coarse video vector,
missing experts included) and the mask HCQ's NetVLAD uses (attention mask with ``[CLS]`` and every
``[AGG]`` zeroed). Parameter names follow the reference (``video_dim_reduce[e].fc``,
``vid_bert.embeddings.position_embeddings``, ``vid_bert.encoder.layer.{i}.attention.self.query``, ...);
its unused pooler is not built. Initialisation as the reference: every Linear / Embedding weight of the
transformer ~ N(0, 0.02²), biases 0, LayerNorm 1/0; ReduceDim keeps PyTorch's default Linear init.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidbench.errors import ConfigError

# Token-type id of each expert (0 is [CLS]); ids are < 10, the config's 19 rows leave the rest unused.
EXPERT_TOKEN_TYPES: dict[str, int] = {
    "s3d": 1,
    "vggish": 2,
    "face": 3,
    "rgb": 5,
    "speech": 6,
    "ocr": 7,
    "scene": 9,
}
MASK_VALUE = -10000.0  # the reference's additive attention mask


@dataclass(frozen=True)
class MmtVideoConfig:
    """The video BERT's ``vid_bert_params`` (defaults: MSRVTT)."""

    hidden_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 32
    type_vocab_size: int = 19
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"video BERT hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )


# The spec's three configs: MSRVTT (all cuts), LSMDC (no dropout), ActivityNet (102 positions for T = 100).
MMT_VIDEO_CONFIGS: dict[str, MmtVideoConfig] = {
    "msrvtt": MmtVideoConfig(),
    "lsmdc": MmtVideoConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "activitynet": MmtVideoConfig(max_position_embeddings=102),
}


def tiny_mmt_config(**overrides: object) -> MmtVideoConfig:
    """A tiny video BERT for tests: 2 layers, width 16, 2 heads, FFN 32 (override any field)."""
    base = MmtVideoConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    return replace(base, **overrides)


class ReduceDim(nn.Module):
    """``L2norm(Linear(x))`` over the last dim."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.fc(x), dim=-1)


class _Embeddings(nn.Module):
    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, features: Tensor, positions: Tensor, types: Tensor) -> Tensor:
        x = self.position_embeddings(positions) + self.token_type_embeddings(types) + features
        return self.dropout(self.layer_norm(x))


class _SelfAttention(nn.Module):
    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _split(self, x: Tensor) -> Tensor:
        b, n, h = x.shape
        return x.view(b, n, self.heads, h // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + additive_mask
        probs = self.dropout(torch.softmax(scores, dim=-1))
        out = (probs @ v).transpose(1, 2)
        return out.reshape(x.shape)


class _AddNorm(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``, the post-LN sub-layer output."""

    def __init__(self, cfg: MmtVideoConfig, in_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.layer_norm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _AddNorm(cfg, cfg.hidden_size)

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        return self.output(self.self(x, additive_mask), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU


class _Layer(nn.Module):
    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.intermediate = _Intermediate(cfg)
        self.output = _AddNorm(cfg, cfg.intermediate_size)

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        attended = self.attention(x, additive_mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class VideoBert(nn.Module):
    """BERT over given token features: embeddings without a word table, post-LN layers, no pooler."""

    def __init__(self, cfg: MmtVideoConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, features: Tensor, positions: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """``[B, L, H]`` outputs of ``[B, L, H]`` features, ``[B, L]`` long positions / types and 0/1 mask."""
        additive = (1.0 - mask.to(features.dtype))[:, None, None, :] * MASK_VALUE
        return self.encoder(self.embeddings(features, positions, types), additive)


@dataclass
class MmtVideoOutput:
    """What HCQ's heads take from the video transformer.

    ``tokens`` [B, L, H] all outputs; ``attention_mask`` [B, L]; ``agg`` [B, E, H] L2-normalised
    ``[AGG]`` outputs in expert order; ``coarse`` [B, H] their mean over all experts; ``vlad_mask`` [B, L]
    the attention mask with ``[CLS]`` and every ``[AGG]`` zeroed; ``agg_positions`` the E slot indices.
    """

    tokens: Tensor
    attention_mask: Tensor
    agg: Tensor
    coarse: Tensor
    vlad_mask: Tensor
    agg_positions: list[int]


class MmtVideoEncoder(nn.Module):
    """ReduceDim per expert + the token sequence + :class:`VideoBert` (see the module docstring).

    :param expert_dims: ``{expert: raw dim}``; the sequence follows the sorted names.
    :param config: :class:`MmtVideoConfig` (e.g. ``MMT_VIDEO_CONFIGS["msrvtt"]``, :func:`tiny_mmt_config`).
    :param token_types: expert -> token-type id (default :data:`EXPERT_TOKEN_TYPES`).
    """

    def __init__(
        self,
        expert_dims: dict[str, int],
        config: MmtVideoConfig | None = None,
        token_types: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or MmtVideoConfig()
        self.experts = sorted(expert_dims)
        types = token_types or EXPERT_TOKEN_TYPES
        unknown = [e for e in self.experts if e not in types]
        if unknown:
            raise ConfigError(f"no token type for experts {unknown}; known: {sorted(types)}")
        too_big = [e for e in self.experts if not 0 < types[e] < self.config.type_vocab_size]
        if too_big:
            raise ConfigError(f"token types of {too_big} fall outside 1..{self.config.type_vocab_size - 1}")
        self.token_types = {e: int(types[e]) for e in self.experts}
        hidden = self.config.hidden_size
        self.video_dim_reduce = nn.ModuleDict({e: ReduceDim(int(expert_dims[e]), hidden) for e in self.experts})
        self.vid_bert = VideoBert(self.config)

    def sequence_length(self, tokens_per_expert: int) -> int:
        return 1 + len(self.experts) * (1 + tokens_per_expert)

    def build_sequence(
        self,
        features: dict[str, Tensor],
        features_t: dict[str, Tensor],
        features_ind: dict[str, Tensor],
        features_maxpool: dict[str, Tensor],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int]]:
        """``(features [B, L, H], positions [B, L], types [B, L], mask [B, L], [AGG] slots)``."""
        missing = [e for e in self.experts if e not in features]
        if missing:
            raise ValueError(f"the batch lacks experts {missing}; the encoder was built for {self.experts}")
        first = features[self.experts[0]]
        b, device, dtype = first.shape[0], first.device, first.dtype
        max_pos = self.config.max_position_embeddings - 1
        feats = [torch.zeros(b, 1, self.config.hidden_size, device=device, dtype=dtype)]
        positions = [torch.zeros(b, 1, dtype=torch.long, device=device)]
        types = [torch.zeros(b, 1, dtype=torch.long, device=device)]
        mask = [torch.ones(b, 1, dtype=torch.long, device=device)]
        agg_slots, slot = [], 1
        for e in self.experts:
            reduce = self.video_dim_reduce[e]
            rows, t, ind = features[e], features_t[e], features_ind[e]
            n = rows.shape[1]
            agg_slots.append(slot)
            slot += 1 + n
            feats += [reduce(features_maxpool[e]).unsqueeze(1), reduce(rows)]
            positions += [
                torch.zeros(b, 1, dtype=torch.long, device=device),
                t.clamp(min=0, max=max_pos).long(),
            ]
            types.append(torch.full((b, 1 + n), self.token_types[e], dtype=torch.long, device=device))
            mask += [ind.max(dim=1, keepdim=True).values.long(), ind.long()]
        return torch.cat(feats, 1), torch.cat(positions, 1), torch.cat(types, 1), torch.cat(mask, 1), agg_slots

    def forward(
        self,
        features: dict[str, Tensor],
        features_t: dict[str, Tensor],
        features_ind: dict[str, Tensor],
        features_maxpool: dict[str, Tensor],
    ) -> MmtVideoOutput:
        feats, positions, types, mask, agg_slots = self.build_sequence(
            features, features_t, features_ind, features_maxpool
        )
        tokens = self.vid_bert(feats, positions, types, mask)
        agg = F.normalize(tokens[:, agg_slots], dim=-1)
        vlad_mask = mask.clone()
        vlad_mask[:, [0, *agg_slots]] = 0
        return MmtVideoOutput(tokens, mask, agg, agg.mean(dim=1), vlad_mask, agg_slots)
