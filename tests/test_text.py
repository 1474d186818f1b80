"""Tokenizers and the SOT + tokens + EOT layout."""

from __future__ import annotations

import zlib

import huggingface_hub.constants as hf_constants
import pytest
import torch

from vidbench.data.text import (
    ClipTokenizerAdapter,
    HashTokenizer,
    TextTokenizer,
    build_tokenizer,
    load_clip_tokenizer,
    tokenize,
)
from vidbench.errors import ConfigError, MissingWeightsError


class DictTokenizer:
    """Whitespace tokenizer over a fixed vocabulary, for hand-checkable layouts."""

    sot_id = 98
    eot_id = 99
    vocab_size = 100

    def __init__(self) -> None:
        self.vocab = {w: i for i, w in enumerate(["a", "b", "c", "d", "e", "f", "g"], start=1)}

    def encode(self, text: str) -> list[int]:
        return [self.vocab[w] for w in text.split()]


def test_hash_tokenizer_ids_follow_the_crc32_rule() -> None:
    tok = HashTokenizer()
    assert (tok.vocab_size, tok.sot_id, tok.eot_id) == (4096, 4094, 4095)
    # crc32 is fixed by the zlib spec, so this literal holds on every machine and Python version.
    assert zlib.crc32(b"cat") == 2656977832
    assert tok.encode("cat") == [1 + 2656977832 % 4093]
    pieces = ["a", "dog", ",", "2", "0", "cats", "!?", "running"]
    expected = [1 + zlib.crc32(p.encode()) % 4093 for p in pieces]
    assert tok.encode("A  Dog, 20 CATS!? running") == expected
    assert tok.encode("   ") == []


def test_hash_tokenizer_ids_stay_below_the_special_ids() -> None:
    tok = HashTokenizer(vocab_size=8)
    ids = tok.encode(" ".join(f"word{i}" for i in range(200)))
    assert min(ids) >= 1 and max(ids) <= 5
    with pytest.raises(ConfigError, match="vocab_size"):
        HashTokenizer(vocab_size=3)


def test_tokenize_hand_example() -> None:
    ids, mask = tokenize(DictTokenizer(), ["a b c", "", "d e f g a b"], max_words=6)
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [
        [98, 1, 2, 3, 99, 0],
        [98, 99, 0, 0, 0, 0],
        [98, 4, 5, 6, 7, 99],  # six tokens cut to max_words - 2 = 4
    ]
    assert mask.tolist() == [
        [1, 1, 1, 1, 1, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
    ]


def test_tokenize_truncation_keeps_the_head_and_the_eot() -> None:
    tok = DictTokenizer()
    for max_words in (2, 3, 4, 9):
        ids, mask = tokenize(tok, ["a b c d e f g"], max_words=max_words)
        kept = min(7, max_words - 2)
        row = [98, *range(1, kept + 1), 99]
        assert ids[0].tolist() == row + [0] * (max_words - len(row))
        assert int(mask.sum()) == len(row)
        assert int(ids[0].argmax()) == int(mask[0].sum()) - 1  # EOT is the largest id
    with pytest.raises(ConfigError, match="max_words"):
        tokenize(tok, ["a"], max_words=1)
    with pytest.raises(TypeError):
        tokenize(tok, "a b", max_words=4)


def test_build_tokenizer_tiny_is_the_hash_tokenizer() -> None:
    tok = build_tokenizer("tiny")
    assert isinstance(tok, HashTokenizer)
    assert isinstance(tok, TextTokenizer)
    ids, mask = tokenize(tok, ["a man is cooking", "x"], max_words=8)
    assert (ids.argmax(-1) == mask.sum(-1) - 1).all()


def _write_tiny_clip_tokenizer(folder) -> None:
    from transformers import CLIPTokenizer

    vocab = {
        "a</w>": 0,
        "c": 1,
        "a": 2,
        "t</w>": 3,
        "ca": 4,
        "cat</w>": 5,
        ".</w>": 6,
        "<|startoftext|>": 7,
        "<|endoftext|>": 8,
    }
    CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")]).save_pretrained(str(folder))


def test_clip_tokenizer_adapter_from_a_local_folder(tmp_path) -> None:
    _write_tiny_clip_tokenizer(tmp_path / "tok")
    tok = load_clip_tokenizer(str(tmp_path / "tok"))
    assert isinstance(tok, ClipTokenizerAdapter) and isinstance(tok, TextTokenizer)
    assert (tok.sot_id, tok.eot_id, tok.vocab_size) == (7, 8, 9)
    assert tok.encode("A  CAT.") == [0, 5, 6]  # lower-cased, BPE-merged, no special tokens
    ids, mask = tokenize(tok, ["A cat.", "a cat a cat a cat"], max_words=5)
    assert ids.tolist() == [[7, 0, 5, 6, 8], [7, 0, 5, 0, 8]]
    assert mask.tolist() == [[1] * 5, [1] * 5]


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An offline, empty Hugging Face cache (the constants are read at import, so patch them too)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_missing_clip_tokenizer_says_what_to_download(empty_hf_cache) -> None:
    with pytest.raises(MissingWeightsError) as err:
        build_tokenizer("openai/clip-vit-base-patch32")
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg
    assert "huggingface-cli download openai/clip-vit-base-patch32" in msg
    assert "HF_HOME" in msg and "folder path" in msg


def test_missing_or_incomplete_tokenizer_folder(tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_clip_tokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "vocab.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="merges.txt"):
        load_clip_tokenizer(str(tmp_path / "empty"))
