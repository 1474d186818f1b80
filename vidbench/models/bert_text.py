"""HCQ's text encoder: a Hugging Face ``BertModel`` (``bert-base-cased``), fine-tuned, read offline.

:class:`BertTextEncoder` returns ``last_hidden_state`` ``[B, W, H]`` for the query ids the data side builds
(:mod:`vidbench.data.bert_text`: ``[CLS] ... [SEP]`` + 0 padding, with its 0/1 mask). It calls BERT as
the reference does: explicit ``position_ids = 0..W-1``, all-zero ``token_type_ids``, the query mask as
``attention_mask``. The pooler is not built: the reference never uses its output (and an unused
parameter would trip DDP).

The reference overrides the checkpoint's dropout: p = 0.2 (MSRVTT 1k-A, full, ActivityNet) or 0.25 (1k-B,
LSMDC) on both hidden and attention dropout (``dropout=`` here).

``name="tiny"`` builds a random tiny BERT (tests): pass ``vocab_size`` of the tiny ``vocab.txt`` the test
wrote, and any :func:`tiny_bert_config` override. Any other name is a hub id (read from the local HF cache
only) or a local folder; when absent, :class:`~vidbench.errors.MissingWeightsError` says what to download
and where to put it.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from vidbench.errors import ConfigError, MissingWeightsError
from vidbench.hub import download_hint, load_pretrained_offline, resolve_local_folder

BERT_NAME = "bert-base-cased"

TINY_BERT_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "type_vocab_size": 2,
}

_WEIGHT_FILE_SETS = (
    ("config.json", "model.safetensors"),
    ("config.json", "model.safetensors.index.json"),
    ("config.json", "pytorch_model.bin"),
    ("config.json", "pytorch_model.bin.index.json"),
)


def tiny_bert_config(vocab_size: int, dropout: float = 0.1, **overrides: Any) -> Any:
    """A tiny random :class:`~transformers.BertConfig` (tests and the offline demo)."""
    from transformers import BertConfig

    cfg = {**TINY_BERT_CONFIG, **overrides}
    return BertConfig(vocab_size=vocab_size, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **cfg)


def _load_pretrained_bert(name: str, dropout: float) -> nn.Module:
    from transformers import BertModel

    folder = resolve_local_folder(name, _WEIGHT_FILE_SETS, "BERT weights")
    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise MissingWeightsError(f"cannot read {config_file}: {err}\n  fix: {download_hint(name)}") from err
    if model_type != "bert":
        raise ConfigError(f"{config_file} describes a {model_type!r} model, not BERT; use e.g. {BERT_NAME}")
    return load_pretrained_offline(
        BertModel,
        folder,
        name,
        "BERT",
        add_pooling_layer=False,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


class BertTextEncoder(nn.Module):
    """``BertModel`` without pooler; :meth:`forward` gives ``last_hidden_state`` ``[B, W, H]``.

    :param name: ``"tiny"``, a hub id such as ``bert-base-cased`` (local HF cache only) or a local folder.
    :param dropout: hidden and attention dropout (the reference's ``txt_bert_params``).
    :param vocab_size: tiny only: the size of the tiny vocabulary the tokenizer uses.
    :param tiny_overrides: tiny only: :data:`TINY_BERT_CONFIG` overrides.
    """

    def __init__(
        self,
        name: str = BERT_NAME,
        *,
        dropout: float = 0.2,
        vocab_size: int | None = None,
        tiny_overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from transformers import BertModel

        self.name = name
        if name == "tiny":
            if vocab_size is None:
                raise ConfigError("the tiny BERT needs vocab_size (the size of the tokenizer's vocab.txt)")
            self.pretrained = False
            self.bert = BertModel(
                tiny_bert_config(vocab_size, dropout, **(tiny_overrides or {})), add_pooling_layer=False
            )
        else:
            if tiny_overrides:
                raise ConfigError(f"tiny_overrides only applies to the 'tiny' BERT, not to {name!r}")
            self.pretrained = True
            self.bert = _load_pretrained_bert(name, dropout)

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.bert.config.vocab_size)

    @property
    def max_length(self) -> int:
        return int(self.bert.config.max_position_embeddings)

    def check_tokenizer(self, vocab_size: int) -> None:
        """Fail early when the tokenizer's vocabulary does not match the embedding table."""
        if vocab_size != self.vocab_size:
            raise ConfigError(
                f"the BERT tokenizer has {vocab_size} entries but BERT {self.name!r} has {self.vocab_size} token "
                "embeddings; use the vocab.txt that belongs to the checkpoint"
            )

    def forward(self, token_ids: Tensor, token_mask: Tensor) -> Tensor:
        """``last_hidden_state`` ``[B, W, H]`` of ``[B, W]`` ids and 0/1 mask (pad rows included)."""
        if token_ids.dim() != 2 or token_mask.shape != token_ids.shape:
            raise ValueError(
                f"expected token_ids and token_mask of equal shape [B, W]; got {tuple(token_ids.shape)} and "
                f"{tuple(token_mask.shape)}"
            )
        width = token_ids.shape[1]
        if width > self.max_length:
            raise ConfigError(f"query length {width} exceeds BERT {self.name!r}'s {self.max_length} positions")
        positions = torch.arange(width, device=token_ids.device).unsqueeze(0).expand_as(token_ids)
        out = self.bert(
            input_ids=token_ids.long(),
            attention_mask=token_mask.long(),
            token_type_ids=torch.zeros_like(token_ids, dtype=torch.long),
            position_ids=positions,
        )
        return out.last_hidden_state


def ensure_local_bert(name: str) -> None:
    """Fail fast (before any data work) when a named BERT checkpoint is not available offline."""
    if name != "tiny":
        resolve_local_folder(name, _WEIGHT_FILE_SETS, "BERT weights")
