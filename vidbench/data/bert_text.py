"""The BERT query tokenisation of HCQ/MMT: ``bert-base-cased``'s vocabulary, but lower-cased and accent-stripped.

The reference loads ``BertTokenizer('bert-base-cased', do_lower_case=True)``: text is lower-cased and
accent-stripped *before* WordPiece runs against the **cased** vocabulary, so a default cased tokenizer
gives other ids. :func:`load_bert_tokenizer` builds the slow (Python) WordPiece tokenizer straight from
the folder's ``vocab.txt`` with lower-casing forced on, and checks it ("A" and "a" must give one id).

A query (a list of words) becomes ids as the reference does it (:meth:`BertQueryTokenizer.encode_words`):
join with spaces, strip, append "." unless it ends in . ? !, ``str.capitalize()``, WordPiece,
``[CLS] + pieces + [SEP]`` cut to ``max_tokens`` with the last kept token overwritten by ``[SEP]``.

Files come from a local folder or the local HF cache only (never the network); when absent the error
says what to download and where to put it (:class:`~vidbench.errors.MissingWeightsError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidbench.errors import ConfigError, MissingWeightsError
from vidbench.hub import download_hint, resolve_local_folder

BERT_NAME = "bert-base-cased"
_VOCAB_FILE_SETS = (("vocab.txt",),)


def _wordpiece_class() -> Any:
    # transformers >= 5 names the slow Python tokenizer BertTokenizerLegacy; before that it is BertTokenizer.
    try:
        from transformers.models.bert import BertTokenizerLegacy

        return BertTokenizerLegacy
    except ImportError:  # pragma: no cover - transformers 4.x
        from transformers import BertTokenizer

        return BertTokenizer


class BertQueryTokenizer:
    """Lower-casing WordPiece over a (cased) BERT vocabulary, with the reference query layout."""

    def __init__(self, vocab_file: str | Path, source: str = "") -> None:
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise MissingWeightsError(f"BERT vocabulary {vocab_file} not found")
        self.source = source or str(vocab_file)
        self.hf_tokenizer = _wordpiece_class()(vocab_file=str(vocab_file), do_lower_case=True, strip_accents=None)
        vocab = self.hf_tokenizer.get_vocab()
        missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in vocab]
        if missing:
            raise MissingWeightsError(f"{vocab_file} lacks the special tokens {missing}; it is not a BERT vocab.txt")
        self.cls_id = int(vocab["[CLS]"])
        self.sep_id = int(vocab["[SEP]"])
        self.pad_id = int(vocab["[PAD]"])
        self.vocab_size = len(vocab)
        if self.hf_tokenizer.tokenize("A Café") != self.hf_tokenizer.tokenize("a cafe"):
            raise ConfigError(f"tokenizer from {self.source} does not lower-case/strip accents; the reference does")

    @staticmethod
    def caption_text(words: Sequence[str]) -> str:
        """The reference's caption string: joined, stripped, final period added, ``str.capitalize()``d."""
        text = " ".join(words).strip()
        if not text:
            text = "."
        if text[-1] not in ".?!":
            text += "."
        return text.capitalize()

    def pieces(self, words: Sequence[str]) -> list[str]:
        """WordPiece tokens of the caption string (no special tokens)."""
        return self.hf_tokenizer.tokenize(self.caption_text(words))

    def encode_words(self, words: Sequence[str], max_tokens: int) -> tuple[list[int], int]:
        """Ids of ``[CLS] + pieces + [SEP]`` cut to ``max_tokens`` (the last one forced to ``[SEP]``).

        :return: the ids and the untruncated length (pieces + 2), for truncation counts.
        """
        if max_tokens < 2:
            raise ConfigError(f"max_tokens must be >= 2 ([CLS] and [SEP]); got {max_tokens}")
        pieces = self.pieces(words)
        ids = [self.cls_id, *self.hf_tokenizer.convert_tokens_to_ids(pieces), self.sep_id][:max_tokens]
        ids[-1] = self.sep_id
        return [int(i) for i in ids], len(pieces) + 2

    def __repr__(self) -> str:
        return f"BertQueryTokenizer({self.source!r}, vocab_size={self.vocab_size})"


def load_bert_tokenizer(name_or_path: str = BERT_NAME) -> BertQueryTokenizer:
    """The query tokenizer of a hub BERT (from the local HF cache) or of a local folder holding ``vocab.txt``.

    :raises MissingWeightsError: when the files are not available offline.
    """
    folder = resolve_local_folder(name_or_path, _VOCAB_FILE_SETS, "BERT tokenizer")
    try:
        return BertQueryTokenizer(folder / "vocab.txt", source=name_or_path)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"cannot read the BERT vocabulary in {folder}: {err}\n  fix: {download_hint(name_or_path)}"
        ) from err
