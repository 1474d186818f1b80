"""Caption tokenizers and the CLIP4Clip text layout (SOT + tokens + EOT, zero padded).

Two tokenizers share one small protocol:

* :class:`HashTokenizer` needs no files. It exists so the tiny random backbone (tests, the synthetic
  demo) runs offline; its ids are stable across processes because they come from crc32, not ``hash``.
* :func:`load_clip_tokenizer` wraps the Hugging Face CLIP BPE tokenizer, read from a local folder or
  the HF cache only (never the network), and fails with :class:`MissingWeightsError` saying what to
  download and where to put it.

Both put SOT and EOT at the two largest ids, so ``argmax(ids)`` is the EOT position, which is what
the reference code relies on (CLIP: SOT 49406, EOT 49407, pad 0).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from vidbench.errors import ConfigError, MissingWeightsError
from vidbench.hub import TINY_VOCAB_SIZE, download_hint, resolve_local_folder

# Letter runs, single digits (CLIP's BPE also splits numbers digit by digit) and runs of
# punctuation; whitespace separates and is dropped.
_WORD_RE = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_+")

# Files that make up a CLIP tokenizer folder: either the fast tokenizer file or the BPE pair.
_TOKENIZER_FILE_SETS: tuple[tuple[str, ...], ...] = (("tokenizer.json",), ("vocab.json", "merges.txt"))


@runtime_checkable
class TextTokenizer(Protocol):
    """What :func:`tokenize` needs: the two special ids, the vocabulary size and plain encoding."""

    sot_id: int
    eot_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without any special token."""
        ...


class HashTokenizer:
    """Offline word-level tokenizer for the tiny backbone.

    Lower-cases the text, splits it into words / digits / punctuation runs and maps each piece to
    ``1 + crc32(piece) % (vocab_size - 3)``. Id 0 stays free for padding; SOT and EOT take the two
    largest ids so that, as with CLIP, ``argmax(ids)`` finds the EOT.
    """

    def __init__(self, vocab_size: int = TINY_VOCAB_SIZE) -> None:
        if vocab_size < 4:
            raise ConfigError(
                f"HashTokenizer needs vocab_size >= 4 (pad, one word, SOT, EOT); got {vocab_size}"
            )
        self.vocab_size = vocab_size
        self.sot_id = vocab_size - 2
        self.eot_id = vocab_size - 1

    def word_id(self, word: str) -> int:
        """Id of one already split, lower-cased piece."""
        return 1 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 3)

    def encode(self, text: str) -> list[int]:
        return [self.word_id(w) for w in _WORD_RE.findall(text.lower())]

    def __repr__(self) -> str:
        return f"HashTokenizer(vocab_size={self.vocab_size})"


class ClipTokenizerAdapter:
    """Exposes a Hugging Face CLIP tokenizer through :class:`TextTokenizer`."""

    def __init__(self, hf_tokenizer: Any, source: str) -> None:
        sot, eot = hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id
        if sot is None or eot is None:
            raise MissingWeightsError(
                f"tokenizer from {source!r} has no <|startoftext|>/<|endoftext|> tokens; "
                "it is not a CLIP tokenizer (expected vocab.json + merges.txt or tokenizer.json "
                "of a CLIP model)"
            )
        self.hf_tokenizer = hf_tokenizer
        self.source = source
        self.sot_id = int(sot)
        self.eot_id = int(eot)
        self.vocab_size = len(hf_tokenizer)

    def encode(self, text: str) -> list[int]:
        # verbose=False: paragraphs longer than 77 tokens are expected (tokenize() truncates them).
        return list(self.hf_tokenizer.encode(text, add_special_tokens=False, verbose=False))

    def __repr__(self) -> str:
        return f"ClipTokenizerAdapter({self.source!r}, vocab_size={self.vocab_size})"


def load_clip_tokenizer(name_or_path: str) -> TextTokenizer:
    """The CLIP BPE tokenizer of a hub model (from the local HF cache) or of a local folder.

    :raises MissingWeightsError: when the files are not available offline.
    """
    from transformers import CLIPTokenizer

    folder = resolve_local_folder(name_or_path, _TOKENIZER_FILE_SETS, "CLIP tokenizer")
    try:
        hf_tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise MissingWeightsError(
            f"cannot read the CLIP tokenizer in {folder}: {err}\n  fix: {download_hint(name_or_path)}"
        ) from err
    return ClipTokenizerAdapter(hf_tokenizer, name_or_path)


def build_tokenizer(name: str) -> TextTokenizer:
    """``"tiny"`` gives the offline :class:`HashTokenizer`; anything else a CLIP tokenizer."""
    if name == "tiny":
        return HashTokenizer()
    path = Path(name).expanduser()
    if path.suffix == ".pt" and path.is_file():
        # OpenAI's CLIP archives hold weights only; its BPE lives in the `clip` package, not in the file.
        if all((path.parent / f).is_file() for f in ("vocab.json", "merges.txt")):
            return load_clip_tokenizer(str(path.parent))
        raise MissingWeightsError(
            f"model.clip is the OpenAI archive {path}, which holds no tokenizer.\n"
            "  fix: set model.tokenizer=openai/clip-vit-base-patch32 (from the local HF cache, or a folder with its "
            f"vocab.json + merges.txt), or put those two files next to {path.name}"
        )
    return load_clip_tokenizer(name)


def tokenize(tokenizer: TextTokenizer, texts: Sequence[str], max_words: int) -> tuple[Tensor, Tensor]:
    """Encode captions in the CLIP4Clip layout.

    Each row is ``[SOT] + tokens[: max_words - 2] + [EOT]`` followed by zeros, so ``max_words``
    counts both special tokens and paragraphs are simply cut (:func:`tokenize_counted` says how much).

    :return: ``ids`` and ``mask``, both ``[N, max_words]`` long; ``mask`` is 1 over SOT..EOT.
    """
    ids, mask, _ = tokenize_counted(tokenizer, texts, max_words)
    return ids, mask


def tokenize_counted(
    tokenizer: TextTokenizer, texts: Sequence[str], max_words: int
) -> tuple[Tensor, Tensor, dict[str, int]]:
    """:func:`tokenize`, plus what the cut removed, so truncation is a published part of the protocol.

    The counts (see :func:`truncation_counts`) are over content tokens, SOT and EOT excluded: a caption is
    truncated when it has more than ``max_words - 2`` tokens.
    """
    if max_words < 2:
        raise ConfigError(f"max_words must be >= 2 (it includes SOT and EOT); got {max_words}")
    if isinstance(texts, str):
        raise TypeError("tokenize() takes a sequence of captions, not a single string")
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    mask = torch.zeros(len(texts), max_words, dtype=torch.long)
    lengths: list[int] = []
    for row, text in enumerate(texts):
        tokens = tokenizer.encode(text)
        lengths.append(len(tokens))
        seq = [tokenizer.sot_id, *tokens[: max_words - 2], tokenizer.eot_id]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask, truncation_counts(lengths, max_words)


def truncation_counts(lengths: Sequence[int], max_words: int) -> dict[str, int]:
    """Counts of the ``max_words`` cut from content-token lengths (SOT/EOT excluded).

    ``captions``, ``captions_truncated`` (longer than ``max_words - 2``), ``tokens_dropped`` (tokens past the
    cut, summed), ``tokens`` (all content tokens), ``longest_tokens`` and ``max_words``.
    """
    keep = max_words - 2
    return {
        "captions": len(lengths),
        "captions_truncated": sum(n > keep for n in lengths),
        "tokens_dropped": sum(max(0, n - keep) for n in lengths),
        "tokens": int(sum(lengths)),
        "longest_tokens": max(lengths, default=0),
        "max_words": int(max_words),
    }


def format_text_counts(where: str, counts: dict[str, int]) -> str:
    """One console line: how many captions the ``max_words`` cut shortened and how many tokens it dropped."""
    n, cut = counts["captions"], counts["captions_truncated"]
    total, dropped = counts.get("tokens", 0), counts["tokens_dropped"]
    share = f" ({100 * cut / n:.1f}%)" if n else ""
    tok_share = f" ({100 * dropped / total:.1f}% of {total} tokens)" if total else ""
    line = (
        f"{where} text: {n} captions, {cut}{share} truncated at max_words={counts['max_words']}, "
        f"{dropped} tokens dropped{tok_share}, longest {counts['longest_tokens']} tokens"
    )
    if "ids_without_captions" in counts:
        line += f"; {counts['ids_without_captions']} listed ids without captions left out"
    return line
