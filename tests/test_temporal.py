"""seqTransf (reference names, masking, CLIP-text init) and meanP pooling."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vidbench.errors import ConfigError
from vidbench.models.clip import ClipBackbone
from vidbench.models.pooling import l2_normalize, mean_pool_frames
from vidbench.models.temporal import SeqTransf, frame_attention_mask


def _seq(width: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> SeqTransf:
    torch.manual_seed(seed)
    return SeqTransf(width, layers=layers, heads=heads).eval()


def test_defaults_and_shapes() -> None:
    assert SeqTransf(512).heads == 8 and SeqTransf(32).heads == 1
    module = _seq()
    assert module.transformerClip.resblocks[0].mlp.c_fc.out_features == 4 * 64
    x = torch.randn(3, 5, 64)
    out = module(x, torch.ones(3, 5))
    assert out.shape == (3, 5, 64)
    with pytest.raises(ConfigError, match="max_frames"):
        module(torch.randn(1, 78, 64), torch.ones(1, 78))
    with pytest.raises(ValueError, match=r"mask \[B,T\]"):
        module(x, torch.ones(3, 4))


def test_reference_state_dict_loads_strictly() -> None:
    width, layers = 64, 3
    block = {
        "attn.in_proj_weight": (3 * width, width),
        "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width),
        "attn.out_proj.bias": (width,),
        "ln_1.weight": (width,),
        "ln_1.bias": (width,),
        "mlp.c_fc.weight": (4 * width, width),
        "mlp.c_fc.bias": (4 * width,),
        "mlp.c_proj.weight": (width, 4 * width),
        "mlp.c_proj.bias": (width,),
        "ln_2.weight": (width,),
        "ln_2.bias": (width,),
    }
    shapes = {"frame_position_embeddings.weight": (77, width)}
    for i in range(layers):
        shapes.update({f"transformerClip.resblocks.{i}.{k}": s for k, s in block.items()})
    reference = {k: torch.randn(s) for k, s in shapes.items()}
    module = SeqTransf(width, layers=layers)
    module.load_state_dict(reference, strict=True)
    for key, value in reference.items():
        assert torch.equal(module.state_dict()[key], value), key


def test_tf_layer_norm_equals_torch_layer_norm_with_eps_1e12() -> None:
    module = _seq()
    ln = module.transformerClip.resblocks[0].ln_1
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(7, 64) * 3 + 1
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    tf_style = ln.weight * (x - mean) / torch.sqrt(var + 1e-12) + ln.bias
    assert ln.eps == 1e-12
    torch.testing.assert_close(ln(x), tf_style, rtol=0, atol=2e-6)


def test_mask_layout_is_batch_major_then_head() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    m = frame_attention_mask(mask, heads=4, dtype=torch.float32)
    assert m.shape == (8, 3, 3)
    for b in range(2):
        for h in range(4):
            for j in range(3):
                expected = 0.0 if mask[b, j] else -1e6
                assert (m[b * 4 + h, :, j] == expected).all()


def test_padded_frames_change_nothing_in_valid_rows() -> None:
    module = _seq()
    torch.manual_seed(1)
    x = torch.randn(3, 6, 64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    with torch.no_grad():
        out = module(x, mask)
        noisy = x.clone()
        noisy[1, 3:] = torch.randn(3, 64) * 10
        noisy[2, 2:] = 0
        out_noisy = module(noisy, mask)
        alone = module(x[1:2, :3], torch.ones(1, 3))  # video 1 without its padding, on its own
    torch.testing.assert_close(out_noisy[mask.bool()], out[mask.bool()], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1, :3], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_noisy[0], out[0], rtol=0, atol=1e-5)


def test_video_without_valid_frames_is_finite() -> None:
    module = _seq()
    with torch.no_grad():
        out = module(torch.randn(2, 4, 64), torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]]))
    assert torch.isfinite(out).all()


def test_residual_uses_the_frames_without_position_embedding() -> None:
    module = _seq()
    with torch.no_grad():
        for block in module.transformerClip.resblocks:  # make every block the identity
            block.attn.out_proj.weight.zero_()
            block.attn.out_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        x = torch.randn(2, 4, 64)
        out = module(x, torch.ones(2, 4))
    expected = 2 * x + module.frame_position_embeddings.weight[:4]
    torch.testing.assert_close(out, expected.detach(), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def backbone() -> ClipBackbone:
    torch.manual_seed(0)
    return ClipBackbone("tiny")


def test_init_from_clip_text_copies_and_matches_the_text_layer(backbone: ClipBackbone) -> None:
    module = _seq(layers=4, heads=backbone.text_heads)
    untouched = copy.deepcopy(module.transformerClip.resblocks[2:].state_dict())
    module.init_from_clip_text(backbone)
    text = backbone.model.text_model
    assert torch.equal(module.frame_position_embeddings.weight, text.embeddings.position_embedding.weight)
    # The tiny text tower has 2 blocks: blocks 2 and 3 keep their init.
    for key, value in module.transformerClip.resblocks[2:].state_dict().items():
        assert torch.equal(value, untouched[key]), key

    torch.manual_seed(2)
    x = torch.randn(3, 5, 64)
    block = module.transformerClip.resblocks[0]
    layer = text.encoder.layers[0]
    with torch.no_grad():
        ours = block(x.transpose(0, 1)).transpose(0, 1)
        theirs = layer(x, attention_mask=None)
        # Same weights; only the LayerNorm eps differs (1e-12 here, CLIP's 1e-5), a relative change
        # of about eps / (2 var) ~ 5e-6 for unit-variance inputs, hence the tolerance.
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
        same_eps = copy.deepcopy(block)
        same_eps.ln_1.eps = same_eps.ln_2.eps = layer.layer_norm1.eps
        exact = same_eps(x.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(exact, theirs, rtol=0, atol=2e-6)
    assert not torch.allclose(ours, x, atol=1e-3)  # the block is not trivially the identity


def test_init_from_clip_text_rejects_mismatched_shapes(backbone: ClipBackbone) -> None:
    with pytest.raises(ConfigError, match="heads"):
        SeqTransf(64).init_from_clip_text(backbone)  # default 1 head vs the tiny text tower's 4
    with pytest.raises(ConfigError, match="width"):
        SeqTransf(128, heads=4).init_from_clip_text(backbone)


# --------------------------------------------------------------------------- meanP pooling


def test_mean_pool_matches_the_hand_formula() -> None:
    torch.manual_seed(4)
    frames = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0]])
    pooled = mean_pool_frames(frames, mask)
    for b in range(3):
        valid = [frames[b, t] / frames[b, t].norm() for t in range(5) if mask[b, t]]
        mean = torch.stack(valid).mean(0)
        torch.testing.assert_close(pooled[b], mean / mean.norm())
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3))


def test_mean_pool_ignores_padded_frames() -> None:
    torch.manual_seed(5)
    frames = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    changed = frames.clone()
    changed[0, 2:] = torch.randn(2, 8) * 100
    changed[1, 3] = 0
    torch.testing.assert_close(mean_pool_frames(changed, mask), mean_pool_frames(frames, mask))
    torch.testing.assert_close(
        mean_pool_frames(frames[:1, :2], torch.ones(1, 2)), mean_pool_frames(frames, mask)[:1]
    )


def test_all_padded_clip_pools_to_zeros_and_l2_normalize_matches_reference() -> None:
    frames = torch.randn(1, 3, 8)
    assert torch.equal(mean_pool_frames(frames, torch.zeros(1, 3)), torch.zeros(1, 8))
    x = torch.randn(4, 8)
    torch.testing.assert_close(l2_normalize(x), x / x.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(l2_normalize(x, dim=0), F.normalize(x, dim=0))
    half_zero = torch.zeros(2, 8, dtype=torch.float16)
    assert torch.equal(l2_normalize(half_zero), half_zero)  # no NaN in half precision either
