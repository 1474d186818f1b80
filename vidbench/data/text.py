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

TINY_VOCAB_SIZE = 4096

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


def download_hint(name: str) -> str:
    """How to make ``name`` available offline; shared by the tokenizer and the backbone errors."""
    return (
        f"on a machine with internet run `huggingface-cli download {name}` (or `hf download {name}`), then "
        "either copy its HF cache folder (~/.cache/huggingface/hub/models--...) to this machine and point "
        "HF_HOME (or HF_HUB_CACHE) at it, or copy the snapshot folder anywhere and pass that folder path "
        "instead of the hub name"
    )


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or Path(name).exists()


def resolve_local_folder(name_or_path: str, file_sets: Sequence[Sequence[str]], what: str) -> Path:
    """Find the folder holding ``what`` for a local path or a hub id, using the local HF cache only.

    :param file_sets: alternatives; the folder must hold every file of at least one of them.
    :raises MissingWeightsError: when the folder or the cached snapshot is absent or incomplete.
    """
    if _looks_like_path(name_or_path):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise MissingWeightsError(
                f"{what} folder {folder} does not exist.\n  fix: pass the folder that holds the files "
                f"{' or '.join('+'.join(s) for s in file_sets)}, "
                "or a hub name such as openai/clip-vit-base-patch32"
            )
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError

        try:
            folder = Path(snapshot_download(name_or_path, local_files_only=True))
        except HFValidationError as err:
            raise MissingWeightsError(
                f"{name_or_path!r} is neither a local folder nor a hub id: {err}"
            ) from err
        except OSError as err:  # LocalEntryNotFoundError and friends: not in the local cache
            raise MissingWeightsError(
                f"{what} {name_or_path!r} is not in the local Hugging Face cache "
                "and vidbench never downloads.\n"
                f"  fix: {download_hint(name_or_path)}"
            ) from err
    if not any(all((folder / f).is_file() for f in fs) for fs in file_sets):
        raise MissingWeightsError(
            f"{what} folder {folder} (for {name_or_path!r}) lacks the files "
            f"{' or '.join('+'.join(s) for s in file_sets)}.\n  fix: {download_hint(name_or_path)}"
        )
    return folder


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
    return load_clip_tokenizer(name)


def tokenize(tokenizer: TextTokenizer, texts: Sequence[str], max_words: int) -> tuple[Tensor, Tensor]:
    """Encode captions in the CLIP4Clip layout.

    Each row is ``[SOT] + tokens[: max_words - 2] + [EOT]`` followed by zeros, so ``max_words``
    counts both special tokens and paragraphs are simply cut.

    :return: ``ids`` and ``mask``, both ``[N, max_words]`` long; ``mask`` is 1 over SOT..EOT.
    """
    if max_words < 2:
        raise ConfigError(f"max_words must be >= 2 (it includes SOT and EOT); got {max_words}")
    if isinstance(texts, str):
        raise TypeError("tokenize() takes a sequence of captions, not a single string")
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    mask = torch.zeros(len(texts), max_words, dtype=torch.long)
    for row, text in enumerate(texts):
        seq = [tokenizer.sot_id, *tokenizer.encode(text)[: max_words - 2], tokenizer.eot_id]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
