"""ClipBackbone on the tiny random CLIP: features, reference text semantics, freezing, loading."""

from __future__ import annotations

import json
import math

import huggingface_hub.constants as hf_constants
import pytest
import torch
from torch import nn

from vidbench.data.text import HashTokenizer, tokenize
from vidbench.errors import ConfigError, MissingWeightsError
from vidbench.models.clip import REFERENCE_TO_HF, ClipBackbone, FrameFeatures, TextFeatures


@pytest.fixture(scope="module")
def tiny() -> ClipBackbone:
    torch.manual_seed(0)
    return ClipBackbone("tiny").eval()


def _captions(max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tokenize(HashTokenizer(), ["a man is cooking pasta", "dog", "two cats play"], max_words)


def test_tiny_properties(tiny: ClipBackbone) -> None:
    assert tiny.name == "tiny" and tiny.pretrained is False
    assert (tiny.embed_dim, tiny.text_width, tiny.image_size, tiny.num_patches) == (64, 64, 32, 16)
    assert tiny.vocab_size == HashTokenizer().vocab_size
    assert isinstance(tiny.logit_scale, nn.Parameter)
    assert any(p is tiny.logit_scale for p in tiny.parameters())
    assert tiny.model.config._attn_implementation == "sdpa"
    tiny.check_tokenizer(HashTokenizer())
    with pytest.raises(ConfigError, match="token embeddings"):
        tiny.check_tokenizer(HashTokenizer(vocab_size=8192))


def test_encode_text_shapes_and_eot(tiny: ClipBackbone) -> None:
    ids, mask = _captions(8)
    with torch.no_grad():
        feats = tiny.encode_text(ids, mask)
    assert isinstance(feats, TextFeatures)
    assert feats.tokens.shape == (3, 8, 64) and feats.eot.shape == (3, 64)
    assert feats.mask is mask
    last = mask.sum(-1) - 1
    for b in range(3):
        assert torch.equal(feats.eot[b], feats.tokens[b, last[b]])
    # HF's own pooled + projected output picks the same row (its eos id is the HashTokenizer EOT).
    with torch.no_grad():
        hf_pooled = tiny.model.get_text_features(input_ids=ids).pooler_output
    torch.testing.assert_close(feats.eot, hf_pooled, rtol=0, atol=1e-6)


def test_eot_feature_ignores_trailing_padding(tiny: ClipBackbone) -> None:
    ids8, mask8 = _captions(8)
    ids12, mask12 = _captions(12)
    assert torch.equal(ids12[:, :8], ids8) and int(ids12[:, 8:].abs().sum()) == 0
    with torch.no_grad():
        short, long = tiny.encode_text(ids8, mask8), tiny.encode_text(ids12, mask12)
    torch.testing.assert_close(short.eot, long.eot, rtol=0, atol=1e-5)
    torch.testing.assert_close(short.tokens, long.tokens[:, :8], rtol=0, atol=1e-5)
    # Causal: a token after the EOT cannot change it.
    changed = ids12.clone()
    changed[:, -1] = 7
    with torch.no_grad():
        other = tiny.encode_text(changed, mask12)
    torch.testing.assert_close(other.eot, long.eot, rtol=0, atol=1e-5)


def test_encode_text_rejects_bad_input(tiny: ClipBackbone) -> None:
    ids, mask = _captions(8)
    with pytest.raises(ConfigError, match="max_words"):
        tiny.encode_text(torch.zeros(1, 78, dtype=torch.long), torch.ones(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match="all-zero mask"):
        tiny.encode_text(ids, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="equal shape"):
        tiny.encode_text(ids, mask[:, :4])


def test_encode_frames_cls_and_patches(tiny: ClipBackbone) -> None:
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 3, 32, 32)
    pixels[1, 2] = 0  # a padding frame is encoded like any other
    with torch.no_grad():
        plain = tiny.encode_frames(pixels)
        full = tiny.encode_frames(pixels, return_patches=True)
        hf_cls = tiny.model.get_image_features(pixel_values=pixels.reshape(6, 3, 32, 32)).pooler_output
    assert isinstance(plain, FrameFeatures) and plain.patches is None
    assert plain.cls.shape == (2, 3, 64) and full.patches.shape == (2, 3, 16, 64)
    torch.testing.assert_close(plain.cls, full.cls, rtol=0, atol=1e-6)
    torch.testing.assert_close(plain.cls.reshape(6, 64), hf_cls, rtol=0, atol=1e-6)
    # Patches: post-LayerNorm + projection of the vision tokens 1..P.
    vm = tiny.model.vision_model
    with torch.no_grad():
        hidden = vm(pixel_values=pixels.reshape(6, 3, 32, 32)).last_hidden_state[:, 1:]
        expected = tiny.model.visual_projection(vm.post_layernorm(hidden)).reshape(2, 3, 16, 64)
    torch.testing.assert_close(full.patches, expected, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="expects 32x32"):
        tiny.encode_frames(torch.zeros(1, 2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, T, 3, S, S\]"):
        tiny.encode_frames(torch.zeros(2, 3, 32, 32))


def test_attn_implementation_passes_through() -> None:
    torch.manual_seed(3)
    eager = ClipBackbone("tiny", attn_implementation="eager").eval()
    torch.manual_seed(3)
    sdpa = ClipBackbone("tiny").eval()
    assert eager.model.config._attn_implementation == "eager"
    assert eager.model.text_model.config._attn_implementation == "eager"
    ids, mask = _captions(10)
    with torch.no_grad():
        torch.testing.assert_close(
            eager.encode_text(ids, mask).tokens, sdpa.encode_text(ids, mask).tokens, rtol=0, atol=1e-5
        )


def test_clamp_logit_scale(tiny: ClipBackbone) -> None:
    model = ClipBackbone("tiny")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    assert model.logit_scale.requires_grad
    with torch.no_grad():
        model.logit_scale.fill_(1.5)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == 1.5


def _frozen(model: ClipBackbone) -> set[str]:
    return {n for n, p in model.model.named_parameters() if not p.requires_grad}


EMBEDDINGS = {
    "text_model.embeddings.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight",
    "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.patch_embedding.weight",
    "vision_model.embeddings.position_embedding.weight",
    "vision_model.pre_layrnorm.weight",
    "vision_model.pre_layrnorm.bias",
}


def test_freeze_rule() -> None:
    model = ClipBackbone("tiny", freeze_layer_num=0)
    assert _frozen(model) == EMBEDDINGS
    model.apply_freeze(1)
    layer0 = {
        n
        for n, _ in model.model.named_parameters()
        if n.startswith(("text_model.encoder.layers.0.", "vision_model.encoder.layers.0."))
    }
    assert len(layer0) == 2 * 16
    assert _frozen(model) == EMBEDDINGS | layer0
    model.apply_freeze(5)  # beyond the depth: every block frozen, the heads still train
    trained = {n for n, p in model.model.named_parameters() if p.requires_grad}
    assert trained == {
        "text_model.final_layer_norm.weight",
        "text_model.final_layer_norm.bias",
        "text_projection.weight",
        "logit_scale",
        "vision_model.post_layernorm.weight",
        "vision_model.post_layernorm.bias",
        "visual_projection.weight",
    }
    model.apply_freeze(-1)
    assert _frozen(model) == set()
    with pytest.raises(ConfigError, match="freeze_layer_num"):
        model.apply_freeze(-2)


def test_reference_name_table_points_at_real_parameters(tiny: ClipBackbone) -> None:
    names = [n for n, _ in tiny.model.named_parameters()]
    for ref, hf in REFERENCE_TO_HF.items():
        prefix = hf.replace("{i}", "1")
        assert any(n == prefix or n.startswith(prefix + ".") for n in names), (ref, hf)


def test_tiny_overrides() -> None:
    model = ClipBackbone("tiny", tiny_overrides={"vision_config": {"image_size": 64}})
    assert (model.image_size, model.num_patches) == (64, 64)
    with pytest.raises(ConfigError, match="projection_dim"):
        ClipBackbone("tiny", tiny_overrides={"projection_dim": 32})
    with pytest.raises(ConfigError, match="tiny_overrides"):
        ClipBackbone("openai/clip-vit-base-patch32", tiny_overrides={"projection_dim": 64})


def test_load_local_checkpoint_folder(tmp_path, tiny: ClipBackbone) -> None:
    tiny.model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = ClipBackbone(str(tmp_path / "ckpt"), freeze_layer_num=0).eval()
    assert loaded.pretrained is True and loaded.name == str(tmp_path / "ckpt")
    assert _frozen(loaded) == EMBEDDINGS
    for (name, a), (_, b) in zip(
        tiny.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    ids, mask = _captions(8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids, mask).eot, tiny.encode_text(ids, mask).eot)


def test_missing_weights_in_an_empty_hf_cache(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingWeightsError) as err:
        ClipBackbone("openai/clip-vit-base-patch16")
    assert "huggingface-cli download openai/clip-vit-base-patch16" in str(err.value)
    assert "HF_HOME" in str(err.value)


def test_missing_or_wrong_checkpoint_folder(tmp_path) -> None:
    with pytest.raises(MissingWeightsError, match="does not exist"):
        ClipBackbone(str(tmp_path / "absent"))
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        ClipBackbone(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a full CLIP model"):
        ClipBackbone(str(folder))
