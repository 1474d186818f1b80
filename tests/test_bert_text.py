"""HCQ's text side on a tiny random BERT: the encoder call, offline loading, GEU / MoE against the formulas."""

from __future__ import annotations

import json

import huggingface_hub.constants as hf_constants
import pytest
import torch

from tests.mmt_fixtures import write_tiny_bert_vocab
from vidbench.data.bert_text import BertQueryTokenizer, load_bert_tokenizer
from vidbench.errors import ConfigError, MissingWeightsError
from vidbench.models.bert_text import BertTextEncoder
from vidbench.models.gating import TextExpertHead


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> BertQueryTokenizer:
    return BertQueryTokenizer(write_tiny_bert_vocab(tmp_path_factory.mktemp("bert") / "vocab.txt"))


@pytest.fixture(scope="module")
def encoder(tok) -> BertTextEncoder:
    torch.manual_seed(0)
    return BertTextEncoder("tiny", dropout=0.25, vocab_size=tok.vocab_size).eval()


def _batch(tok: BertQueryTokenizer, captions: list[list[str]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(captions), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, words in enumerate(captions):
        seq, _ = tok.encode_words(words, width)
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def test_encoder_config_and_padding_independence(tok, encoder) -> None:
    assert encoder.bert.config.hidden_dropout_prob == 0.25 == encoder.bert.config.attention_probs_dropout_prob
    assert encoder.bert.pooler is None and not any("pooler" in n for n, _ in encoder.named_parameters())
    encoder.check_tokenizer(tok.vocab_size)
    with pytest.raises(ConfigError, match="token embeddings"):
        encoder.check_tokenizer(tok.vocab_size + 1)
    ids, mask = _batch(tok, [["a", "man", "cooks"], ["someone", "opens", "a", "door", "slowly"]], 12)
    with torch.no_grad():
        out = encoder(ids, mask)
        # padding ids are masked as keys: changing them leaves the real positions unchanged
        noisy = ids.clone()
        noisy[mask == 0] = 7
        out_noisy = encoder(noisy, mask)
        # a wider padding does not change the real positions either (explicit positions 0..W-1)
        wide_ids, wide_mask = _batch(tok, [["a", "man", "cooks"], ["someone", "opens", "a", "door", "slowly"]], 20)
        out_wide = encoder(wide_ids, wide_mask)
    assert out.shape == (2, 12, encoder.hidden_size)
    real = mask.bool()
    torch.testing.assert_close(out[real], out_noisy[real])
    torch.testing.assert_close(out[real], out_wide[:, :12][real])
    # the mask matters: unmasking the padding changes the [CLS] output
    with torch.no_grad():
        unmasked = encoder(ids, torch.ones_like(mask))
    assert not torch.allclose(unmasked[:, 0], out[:, 0])


def test_encoder_loads_a_saved_folder_offline(tmp_path, tok, encoder) -> None:
    folder = tmp_path / "bert"
    encoder.bert.save_pretrained(folder)
    loaded = BertTextEncoder(str(folder), dropout=0.2).eval()
    assert loaded.pretrained and loaded.bert.config.hidden_dropout_prob == 0.2
    ids, mask = _batch(tok, [["a", "man"]], 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), encoder(ids, mask))


def test_missing_or_wrong_weights_have_clear_messages(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(MissingWeightsError, match=r"not in the local Hugging Face cache.*\n.*fix: .*bert-base-cased"):
        BertTextEncoder("bert-base-cased")
    with pytest.raises(MissingWeightsError, match=r"not in the local Hugging Face cache"):
        load_bert_tokenizer("bert-base-cased")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        BertTextEncoder(str(tmp_path / "nowhere"))
    clip_like = tmp_path / "clip"
    clip_like.mkdir()
    (clip_like / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (clip_like / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="not BERT"):
        BertTextEncoder(str(clip_like))
    with pytest.raises(ConfigError, match="vocab_size"):
        BertTextEncoder("tiny")


def test_tokenizer_loads_from_a_folder(tmp_path) -> None:
    write_tiny_bert_vocab(tmp_path / "vocab.txt")
    tok = load_bert_tokenizer(str(tmp_path))
    assert tok.encode_words(["A", "MAN"], 8)[0] == tok.encode_words(["a", "man"], 8)[0]


def _brute_force_head(head: TextExpertHead, cls: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's formulas with explicit loops (BN: biased batch variance in training, running stats in eval)."""
    b = cls.shape[0]
    t = torch.zeros(b, len(head.experts), head.text_GU[head.experts[0]].fc.out_features)
    logits = torch.zeros(b, len(head.experts))
    for j, e in enumerate(head.experts):
        gu = head.text_GU[e]
        x = cls @ gu.fc.weight.T + gu.fc.bias
        g = x @ gu.cg.fc.weight.T + gu.cg.fc.bias
        bn = gu.cg.batch_norm
        if train:
            mean, var = g.mean(0), g.var(0, unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        g = (g - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
        y = x * (1 / (1 + torch.exp(-g)))
        for i in range(b):
            t[i, j] = y[i] / y[i].norm()
            logits[i, j] = cls[i] @ head.moe_fc_txt[e].weight[0] + head.moe_fc_txt[e].bias[0]
    w = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    coarse = torch.zeros(b, t.shape[-1])
    for i in range(b):
        for j in range(len(head.experts)):
            coarse[i] += w[i, j] * t[i, j]
    return coarse, w


def test_text_expert_head_matches_formulas() -> None:
    torch.manual_seed(0)
    head = TextExpertHead(["vggish", "face", "s3d"], in_dim=12, out_dim=6, dropout=0.0)
    assert head.experts == ["face", "s3d", "vggish"]
    for gu in head.text_GU.values():  # non-trivial BN affine and running statistics
        torch.nn.init.normal_(gu.cg.batch_norm.weight)
        torch.nn.init.normal_(gu.cg.batch_norm.bias)
        gu.cg.batch_norm.running_mean.normal_()
        gu.cg.batch_norm.running_var.uniform_(0.5, 2.0)
    cls = torch.randn(5, 12)
    head.eval()
    with torch.no_grad():
        coarse, per_expert, weights = head(cls)
    ref_coarse, ref_w = _brute_force_head(head, cls, train=False)
    torch.testing.assert_close(coarse, ref_coarse)
    torch.testing.assert_close(weights, ref_w)
    torch.testing.assert_close(per_expert.norm(dim=-1), torch.ones(5, 3))
    head.train()
    with torch.no_grad():
        ref_coarse_train, _ = _brute_force_head(head, cls, train=True)
        coarse_train, _, _ = head(cls)
    torch.testing.assert_close(coarse_train, ref_coarse_train)
    assert not torch.allclose(coarse_train, coarse)  # batch vs running statistics do differ


def test_moe_dropout_applies_in_training_only() -> None:
    torch.manual_seed(0)
    head = TextExpertHead(["a", "b"], in_dim=8, out_dim=4, dropout=0.5)
    cls = torch.randn(3, 8)
    head.eval()
    w_eval = head.moe_weights(cls)
    assert torch.equal(w_eval, head.moe_weights(cls))
    torch.testing.assert_close(w_eval.sum(-1), torch.ones(3))
    head.train()
    assert not torch.allclose(head.moe_weights(cls), w_eval)
