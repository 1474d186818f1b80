"""HCQ's coarse text vector: per-expert gated embedding units mixed by text-predicted MoE weights.

From the text BERT's ``[CLS]`` output ``c`` (``[B, H]``), for each expert e (names sorted):

* ``t_e = L2norm(GEU_e(c))`` with ``GEU(x) = L2norm(ContextGating(Linear(x)))`` and
  ``ContextGating(y) = y * sigmoid(BN(Linear(y)))`` (BatchNorm over the batch in training, running
  statistics in eval);
* ``w = softmax_e(Linear_e(Dropout_p(c)))`` (one ``Linear(H -> 1)`` per expert; p is the text BERT's dropout);
* the coarse text vector ``Σ_e w_e t_e`` (``[B, D]``, not unit norm; the PQ layer sub-normalises it).

No MoE weight is masked by expert availability (the reference keeps missing modalities). Module names
follow the reference (``text_GU[e].fc``, ``text_GU[e].cg.fc``, ``text_GU[e].cg.batch_norm``,
``moe_fc_txt[e]``) so its checkpoints map one to one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ContextGating(nn.Module):
    """``y * sigmoid(BN(Linear(y)))`` over the last dim of ``[B, D]``."""

    def __init__(self, dim: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.batch_norm = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.batch_norm(self.fc(x)))


class GatedEmbeddingUnit(nn.Module):
    """``L2norm(ContextGating(Linear(x)))``: ``[B, in_dim] -> [B, out_dim]`` unit vectors."""

    def __init__(self, in_dim: int, out_dim: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.cg = ContextGating(out_dim, batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.cg(self.fc(x)), dim=-1)


class TextExpertHead(nn.Module):
    """Per-expert text embeddings, MoE weights and the coarse text vector from the ``[CLS]`` feature.

    :param experts: expert names (sorted here: the order of the video's ``[AGG]`` tokens).
    :param in_dim: the text BERT width (768 for bert-base); :param out_dim: the joint width (512).
    :param dropout: dropout on ``c`` before the MoE linears (the text BERT's hidden dropout).
    """

    def __init__(self, experts: Sequence[str], in_dim: int, out_dim: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.experts = sorted(experts)
        self.text_GU = nn.ModuleDict({e: GatedEmbeddingUnit(in_dim, out_dim) for e in self.experts})  # noqa: N815
        self.moe_fc_txt = nn.ModuleDict({e: nn.Linear(in_dim, 1) for e in self.experts})
        self.moe_txt_dropout = nn.Dropout(dropout)

    def expert_embeddings(self, cls: Tensor) -> Tensor:
        """``[B, E, out_dim]`` unit vectors ``t_e`` in expert order."""
        return torch.stack([F.normalize(self.text_GU[e](cls), dim=-1) for e in self.experts], dim=1)

    def moe_weights(self, cls: Tensor) -> Tensor:
        """``[B, E]`` softmax weights over the experts."""
        dropped = self.moe_txt_dropout(cls)
        logits = torch.cat([self.moe_fc_txt[e](dropped) for e in self.experts], dim=-1)
        return torch.softmax(logits, dim=-1)

    def forward(self, cls: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(coarse [B, D], per-expert [B, E, D], weights [B, E])`` with ``coarse = Σ_e w_e t_e``."""
        embeddings = self.expert_embeddings(cls)
        weights = self.moe_weights(cls)
        return (weights.unsqueeze(-1) * embeddings).sum(dim=1), embeddings, weights
