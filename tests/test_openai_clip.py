"""OpenAI CLIP files as backbone weights: the name mapping, the architecture from shapes, the TorchScript path,
and the imported model's features against OpenAI's forward written from the formulas on the same tensors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests import reference_forward as ref
from vidbench.data.text import build_tokenizer
from vidbench.errors import ConfigError, MissingWeightsError
from vidbench.models.clip import ClipBackbone, ensure_local_weights
from vidbench.models.openai_clip import (
    find_openai_file,
    infer_architecture,
    openai_to_hf,
    read_openai_state_dict,
)
from vidbench.reproduce import clip_override

WIDTH = 128  # OpenAI's heads = width // 64 -> 2 heads in both towers


@pytest.fixture(scope="module")
def state() -> dict[str, Tensor]:
    sd = ref.openai_clip_state(width=WIDTH, layers=2, vision_width=WIDTH, vision_layers=3, embed=96, vocab=512)
    # the three metadata scalars OpenAI's archives carry next to the weights
    sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(512))
    return sd


def _inputs() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.zeros(3, 10, dtype=torch.long)
    for b, n in enumerate((4, 7, 10)):
        ids[b, 0] = 510  # SOT
        ids[b, 1 : n - 1] = torch.randint(1, 500, (n - 2,), generator=g)
        ids[b, n - 1] = 511  # EOT
    mask = (ids != 0).long()
    pixels = torch.randn(2, 3, 3, 32, 32, generator=g)
    return ids, mask, pixels


def _check_against_reference(backbone: ClipBackbone, sd: dict[str, Tensor]) -> None:
    ids, mask, pixels = _inputs()
    with torch.no_grad():
        text = backbone.encode_text(ids, mask)
        frames = backbone.encode_frames(pixels, return_patches=True)
        want_tokens = ref.clip_text_tokens(sd, ids, heads=WIDTH // 64)
        want_image = ref.clip_image_tokens(sd, pixels.flatten(0, 1), heads=WIDTH // 64)
    torch.testing.assert_close(text.tokens, want_tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text.eot, want_tokens[torch.arange(3), mask.sum(-1) - 1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(frames.cls, want_image[:, 0].reshape(2, 3, -1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(frames.patches, want_image[:, 1:].reshape(2, 3, 16, -1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(backbone.logit_scale.detach(), sd["logit_scale"])


def test_architecture_from_shapes(state) -> None:
    arch = infer_architecture(state)
    assert (arch.embed_dim, arch.image_size, arch.patch_size, arch.vision_width, arch.vision_layers) == (
        96,
        32,
        8,
        128,
        3,
    )
    assert (arch.context_length, arch.vocab_size, arch.text_width, arch.text_layers) == (77, 512, 128, 2)
    assert (arch.text_heads, arch.vision_heads, arch.text_mlp, arch.vision_mlp) == (2, 2, 512, 512)


def test_mapping_splits_packed_attention_and_transposes_projections(state) -> None:
    hf = openai_to_hf(state)
    w = state["transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(hf["text_model.encoder.layers.1.self_attn.q_proj.weight"], w[:WIDTH])
    assert torch.equal(hf["text_model.encoder.layers.1.self_attn.k_proj.weight"], w[WIDTH : 2 * WIDTH])
    assert torch.equal(hf["text_model.encoder.layers.1.self_attn.v_proj.weight"], w[2 * WIDTH :])
    b = state["visual.transformer.resblocks.2.attn.in_proj_bias"]
    assert torch.equal(hf["vision_model.encoder.layers.2.self_attn.v_proj.bias"], b[2 * WIDTH :])
    assert torch.equal(hf["visual_projection.weight"], state["visual.proj"].t())
    assert torch.equal(hf["text_projection.weight"], state["text_projection"].t())
    assert "input_resolution" not in hf and len(hf) == len(state) - 3 + 4 * 5  # in_proj w, b -> 3 each; 5 blocks


def test_plain_state_dict_file_equals_openai_forward(tmp_path, state) -> None:
    path = tmp_path / "ViT-T-8.pt"
    torch.save(state, path)
    backbone = ClipBackbone(str(path)).eval()
    assert backbone.pretrained and backbone.text_heads == 2 and backbone.image_size == 32
    _check_against_reference(backbone, state)


class _Holder(nn.Module):
    """A scripted module whose state dict has OpenAI's names, like the JIT archives' ``CLIP`` module."""

    def __init__(self, sd: dict[str, Tensor]) -> None:
        super().__init__()
        for key, value in sd.items():
            *path, leaf = key.split(".")
            module: nn.Module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            if value.is_floating_point() and value.dim() > 0:
                module.register_parameter(leaf, nn.Parameter(value.half()))  # the archives store fp16 weights
            else:
                module.register_buffer(leaf, value.clone())

    def forward(self, x: Tensor) -> Tensor:
        return x


def test_torchscript_archive_in_a_folder_equals_openai_forward(tmp_path, state) -> None:
    scripted = torch.jit.script(_Holder(state))
    folder = tmp_path / "openai"
    folder.mkdir()
    torch.jit.save(scripted, str(folder / "ViT-B-32.pt"))
    assert find_openai_file(str(folder)) == folder / "ViT-B-32.pt"
    ensure_local_weights(str(folder))  # the preflight accepts it
    read = read_openai_state_dict(folder / "ViT-B-32.pt")
    assert set(read) == set(state) and all(v.dtype != torch.float16 for v in read.values())
    backbone = ClipBackbone(str(folder)).eval()
    # the archive holds fp16 weights: compare with the forward on the same fp16-rounded tensors
    rounded = {k: v.half().float() if v.is_floating_point() and v.dim() > 0 else v for k, v in state.items()}
    _check_against_reference(backbone, rounded)


def test_refusals_name_the_problem(tmp_path, state) -> None:
    bad = dict(state)
    bad["visual.conv2.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"visual\.conv2.*linear_patch=3d"):
        openai_to_hf(bad)
    resnet = {"visual.layer1.0.conv1.weight": torch.zeros(1), **state}
    with pytest.raises(ConfigError, match="ResNet CLIP"):
        infer_architecture(resnet)
    partial = {k: v for k, v in state.items() if k != "visual.proj"}
    with pytest.raises(ConfigError, match="visual.proj"):
        infer_architecture(partial)
    two = tmp_path / "two"
    two.mkdir()
    (two / "ViT-B-32.pt").write_bytes(b"x")
    (two / "ViT-B-16.pt").write_bytes(b"x")
    with pytest.raises(MissingWeightsError, match="several OpenAI CLIP files"):
        find_openai_file(str(two))
    with pytest.raises(MissingWeightsError, match=r"OpenAI CLIP file .*nowhere\.pt does not exist"):
        ensure_local_weights(str(tmp_path / "nowhere.pt"))
    broken = tmp_path / "ViT-B-32.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="ViT-B-32.pt"):
        ClipBackbone(str(broken))
    # the archive has no tokenizer: the error says what to set
    torch.save(state, tmp_path / "ViT-B-16.pt")
    with pytest.raises(MissingWeightsError, match="model.tokenizer"):
        build_tokenizer(str(tmp_path / "ViT-B-16.pt"))


def test_clip_dir_falls_back_to_the_openai_file(tmp_path) -> None:
    (tmp_path / "ViT-B-32.pt").write_bytes(b"x")
    assert clip_override("openai/clip-vit-base-patch32", str(tmp_path)) == [f"model.clip={tmp_path / 'ViT-B-32.pt'}"]
    # no OpenAI file for patch16 here: the HF folder name is kept (and the preflight names what is missing)
    assert clip_override("openai/clip-vit-base-patch16", str(tmp_path)) == [
        f"model.clip={tmp_path / 'clip-vit-base-patch16'}"
    ]
    (tmp_path / "clip-vit-base-patch32").mkdir()  # an HF folder wins when both exist
    assert clip_override("openai/clip-vit-base-patch32", str(tmp_path)) == [
        f"model.clip={tmp_path / 'clip-vit-base-patch32'}"
    ]
