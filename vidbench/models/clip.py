"""CLIP backbone with the reference (OpenAI CLIP / CLIP4Clip) semantics on top of HF transformers.

The wrapper owns an HF :class:`~transformers.CLIPModel` and exposes exactly what the retrieval
methods use: per-token text features, the EOT feature, per-frame CLS features and (for EERCF) the
per-frame patch features, all projected into the joint space; the trainable ``logit_scale``; and
CLIP4Clip's embedding freeze.

Reference → HF parameter names (OpenAI ``model.pt`` on the left, ``CLIPModel`` on the right)::

    token_embedding                     text_model.embeddings.token_embedding
    positional_embedding                text_model.embeddings.position_embedding
    transformer.resblocks.{i}           text_model.encoder.layers.{i}
      attn.in_proj_weight / _bias         self_attn.{q,k,v}_proj (concatenated q, k, v)
      attn.out_proj                       self_attn.out_proj
      ln_1 / ln_2                         layer_norm1 / layer_norm2
      mlp.c_fc / mlp.c_proj               mlp.fc1 / mlp.fc2
    ln_final                            text_model.final_layer_norm
    text_projection  (x @ P)            text_projection  (Linear, weight = Pᵀ)
    logit_scale                         logit_scale
    visual.conv1                        vision_model.embeddings.patch_embedding
    visual.class_embedding              vision_model.embeddings.class_embedding
    visual.positional_embedding         vision_model.embeddings.position_embedding
    visual.ln_pre                       vision_model.pre_layrnorm   (sic, HF's spelling)
    visual.transformer.resblocks.{i}    vision_model.encoder.layers.{i}
    visual.ln_post                      vision_model.post_layernorm
    visual.proj      (x @ P)            visual_projection  (Linear, weight = Pᵀ)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from vidbench.errors import ConfigError, MissingWeightsError

# Shared offline HF-file resolution (the tokenizer uses the same rules and messages).
from vidbench.hub import TINY_VOCAB_SIZE, download_hint, load_pretrained_offline, resolve_local_folder
from vidbench.models.openai_clip import find_openai_file, load_openai_clip

if TYPE_CHECKING:
    from vidbench.data.text import TextTokenizer

# Reference name → HF name prefix, as in the module docstring (block entries use ``{i}``).
REFERENCE_TO_HF: dict[str, str] = {
    "token_embedding": "text_model.embeddings.token_embedding",
    "positional_embedding": "text_model.embeddings.position_embedding",
    "transformer.resblocks.{i}": "text_model.encoder.layers.{i}",
    "ln_final": "text_model.final_layer_norm",
    "text_projection": "text_projection",
    "logit_scale": "logit_scale",
    "visual.conv1": "vision_model.embeddings.patch_embedding",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding",
    "visual.ln_pre": "vision_model.pre_layrnorm",
    "visual.transformer.resblocks.{i}": "vision_model.encoder.layers.{i}",
    "visual.ln_post": "vision_model.post_layernorm",
    "visual.proj": "visual_projection",
}

# Always trained under CLIP4Clip's freeze rule (the "top" of both towers and the temperature).
_ALWAYS_TRAINED = (
    "text_model.final_layer_norm.",
    "text_projection.",
    "logit_scale",
    "vision_model.post_layernorm.",
    "visual_projection.",
)
_BLOCK_RE = re.compile(r"^(?:text_model|vision_model)\.encoder\.layers\.(\d+)\.")

# Tiny random CLIP for tests and the synthetic demo. projection_dim equals the text width because
# seqTransf runs at the text width on projected frame features (true for every OpenAI checkpoint).
TINY_TEXT_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": TINY_VOCAB_SIZE,
    "max_position_embeddings": 77,
    "bos_token_id": TINY_VOCAB_SIZE - 2,  # HashTokenizer's SOT
    "eos_token_id": TINY_VOCAB_SIZE - 1,  # HashTokenizer's EOT
    "pad_token_id": 0,
}
TINY_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}
TINY_PROJECTION_DIM = 64

# Random-weight backbones at the real ViT-B shapes, for rehearsals of shapes, masks, dtypes and memory at the
# papers' sizes without any weights (benchmarks/bench_protocols.py, tests/test_rehearsal.py). They keep the tiny
# tokenizer's vocabulary (the only width that differs from OpenAI's release: 49,408 token embeddings there).
_VIT_B_TEXT = {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8}
_VIT_B_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "random-vitb32": {
        "text_config": _VIT_B_TEXT,
        "vision_config": {**_VIT_B_VISION, "image_size": 224, "patch_size": 32},
        "projection_dim": 512,
    },
    "random-vitb16": {
        "text_config": _VIT_B_TEXT,
        "vision_config": {**_VIT_B_VISION, "image_size": 224, "patch_size": 16},
        "projection_dim": 512,
    },
}

_WEIGHT_FILE_SETS = (
    ("config.json", "model.safetensors"),
    ("config.json", "model.safetensors.index.json"),
    ("config.json", "pytorch_model.bin"),
    ("config.json", "pytorch_model.bin.index.json"),
)


@dataclass
class TextFeatures:
    """Projected text features. ``tokens`` [B,L,D] (every position), ``eot`` [B,D], ``mask`` [B,L]."""

    tokens: Tensor
    eot: Tensor
    mask: Tensor


@dataclass
class FrameFeatures:
    """Projected frame features. ``cls`` [B,T,D]; ``patches`` [B,T,P,D] or None when not asked for."""

    cls: Tensor
    patches: Tensor | None = None


def tiny_clip_config(overrides: dict[str, Any] | None = None) -> Any:
    """The tiny :class:`~transformers.CLIPConfig`.

    :param overrides: optional ``{"text_config": {...}, "vision_config": {...}, <top-level key>: value}``
        merged over the defaults (e.g. ``{"vision_config": {"image_size": 64}}``).
    """
    from transformers import CLIPConfig

    overrides = dict(overrides or {})
    text = {**TINY_TEXT_CONFIG, **overrides.pop("text_config", {})}
    vision = {**TINY_VISION_CONFIG, **overrides.pop("vision_config", {})}
    top: dict[str, Any] = {"projection_dim": TINY_PROJECTION_DIM, **overrides}
    text.setdefault("projection_dim", top["projection_dim"])
    vision.setdefault("projection_dim", top["projection_dim"])
    if top["projection_dim"] != text["hidden_size"]:
        raise ConfigError(
            f"tiny CLIP: projection_dim ({top['projection_dim']}) must equal text_config.hidden_size "
            f"({text['hidden_size']}) because seqTransf runs at the text width on projected frame features"
        )
    return CLIPConfig(text_config=text, vision_config=vision, **top)


class ClipBackbone(nn.Module):
    """HF CLIP with the text/frame encoders the retrieval methods need.

    :param name: ``"tiny"`` (random tiny CLIP, no files needed), a hub name such as
        ``openai/clip-vit-base-patch32`` (read from the local HF cache only), a local folder
        written by ``save_pretrained`` / ``huggingface-cli download``, or OpenAI's own release: a
        ``ViT-B-32.pt``-style file or a folder holding one (see :mod:`vidbench.models.openai_clip`).
    :param freeze_layer_num: CLIP4Clip's ``--freeze_layer_num`` (see :meth:`apply_freeze`).
    :param attn_implementation: passed to HF (``"sdpa"``; ``"eager"`` for FLOP counting).
    :param tiny_overrides: config overrides for ``"tiny"`` only (see :func:`tiny_clip_config`).
    :raises MissingWeightsError: when a named checkpoint is not available offline.
    """

    def __init__(
        self,
        name: str = "tiny",
        *,
        freeze_layer_num: int = -1,
        attn_implementation: str = "sdpa",
        tiny_overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from transformers import CLIPModel

        self.name = name
        if name == "tiny" or name in RANDOM_SHAPES:
            self.pretrained = False
            if name in RANDOM_SHAPES and tiny_overrides:
                raise ConfigError(f"tiny_overrides only applies to the 'tiny' backbone, not to {name!r}")
            # Random init from the global torch RNG: seed before construction for reproducible runs.
            self.model = CLIPModel._from_config(
                tiny_clip_config(RANDOM_SHAPES.get(name, tiny_overrides)), attn_implementation=attn_implementation
            )
        else:
            if tiny_overrides:
                raise ConfigError(f"tiny_overrides only applies to the 'tiny' backbone, not to {name!r}")
            self.pretrained = True
            openai_file = find_openai_file(name)
            if openai_file is not None:  # OpenAI's own release (ViT-B-32.pt ...), renamed onto CLIPModel
                self.model = load_openai_clip(openai_file, attn_implementation)
            else:
                self.model = _load_pretrained_clip(name, attn_implementation)
        self.apply_freeze(freeze_layer_num)

    # ---------------------------------------------------------------- shapes
    @property
    def label(self) -> str:
        """Short backbone name for results tables: "ViT-B/32", "ViT-B/16", ... or "tiny"."""
        if self.name == "tiny":
            return "tiny"
        vc = self.model.config.vision_config
        size = {768: "B", 1024: "L", 1280: "H"}.get(int(vc.hidden_size), f"{vc.hidden_size}d")
        return f"{'random ' if self.name in RANDOM_SHAPES else ''}ViT-{size}/{vc.patch_size}"

    @property
    def embed_dim(self) -> int:
        """Joint embedding size D (the projection dim)."""
        return int(self.model.config.projection_dim)

    @property
    def text_width(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def text_heads(self) -> int:
        return int(self.model.config.text_config.num_attention_heads)

    @property
    def text_layers(self) -> int:
        return int(self.model.config.text_config.num_hidden_layers)

    @property
    def max_text_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.text_config.vocab_size)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def num_patches(self) -> int:
        vc = self.model.config.vision_config
        return (int(vc.image_size) // int(vc.patch_size)) ** 2

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's log-temperature, trained like the reference and clamped by :meth:`clamp_logit_scale_`."""
        return self.model.logit_scale

    def check_tokenizer(self, tokenizer: TextTokenizer) -> None:
        """Fail early when a tokenizer can emit ids the embedding table does not have."""
        if max(tokenizer.sot_id, tokenizer.eot_id, tokenizer.vocab_size - 1) >= self.vocab_size:
            raise ConfigError(
                f"tokenizer {tokenizer!r} emits ids up to {tokenizer.vocab_size - 1} but backbone "
                f"{self.name!r} has only {self.vocab_size} token embeddings; use the tokenizer that "
                "belongs to the backbone "
                "(model.tokenizer = 'tiny' with backbone 'tiny', the CLIP name otherwise)"
            )

    # ---------------------------------------------------------------- encoders
    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Text features as in OpenAI CLIP: causal mask over length L, **no padding mask**.

        Because attention is causal, every position up to the EOT ignores the padding behind it, so
        the EOT feature is independent of ``L``. ``tokens`` covers all L positions (pad rows
        included; DRL masks them later with ``mask``).

        :param input_ids: [B, L] long, ``SOT ... EOT 0 0`` (see :func:`vidbench.data.text.tokenize`).
        :param attention_mask: [B, L], 1 over SOT..EOT; used only to locate the EOT (sum - 1).
        """
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"encode_text expects input_ids and attention_mask of equal shape [B, L]; got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        length = input_ids.shape[1]
        if length > self.max_text_length:
            raise ConfigError(
                f"text length {length} exceeds the {self.max_text_length} positions of backbone "
                f"{self.name!r}; "
                f"lower max_words to <= {self.max_text_length}"
            )
        lengths = attention_mask.sum(-1)
        if bool((lengths < 1).any()):
            raise ValueError(
                "encode_text: a caption row has an all-zero mask (it must at least hold SOT and EOT)"
            )
        # Explicit position ids: the first L rows of the table, as the reference slices [:L].
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        out = self.model.text_model(input_ids=input_ids, attention_mask=None, position_ids=positions)
        # HF's text last_hidden_state already went through final_layer_norm (ln_final).
        tokens = self.model.text_projection(out.last_hidden_state)
        eot = tokens[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return TextFeatures(tokens=tokens, eot=eot, mask=attention_mask)

    def encode_frames(self, pixels: Tensor, *, return_patches: bool = False) -> FrameFeatures:
        """Encode every frame independently with the vision tower.

        Padding frames (zero images, mask 0) are encoded like real ones, as in the reference; the
        frame mask removes them downstream.

        :param pixels: [B, T, 3, S, S], CLIP-normalised, S = :attr:`image_size`.
        :return: ``cls`` [B,T,D] = visual_projection(post_layernorm(CLS)), the same as HF's pooled
            output + projection; ``patches`` [B,T,P,D] = the same map on every patch token when asked.
        """
        if pixels.dim() != 5 or pixels.shape[2] != 3:
            raise ValueError(f"encode_frames expects pixels [B, T, 3, S, S]; got {tuple(pixels.shape)}")
        size = self.image_size
        if pixels.shape[-2:] != (size, size):
            raise ConfigError(
                f"frames are {pixels.shape[-2]}x{pixels.shape[-1]} but backbone {self.name!r} expects "
                f"{size}x{size}; set the data image size to {size}"
            )
        b, t = pixels.shape[:2]
        out = self.model.vision_model(pixel_values=pixels.reshape(b * t, *pixels.shape[2:]))
        hidden = out.last_hidden_state  # [B*T, 1+P, W]; HF applies post_layernorm only to its pooled CLS
        post_ln = self.model.vision_model.post_layernorm
        proj = self.model.visual_projection
        if not return_patches:
            cls = proj(post_ln(hidden[:, 0]))
            return FrameFeatures(cls=cls.reshape(b, t, -1))
        tokens = proj(post_ln(hidden))
        return FrameFeatures(
            cls=tokens[:, 0].reshape(b, t, -1),
            patches=tokens[:, 1:].reshape(b, t, tokens.shape[1] - 1, -1),
        )

    # ---------------------------------------------------------------- training helpers
    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp ``logit_scale`` to ≤ ln(100) in place; call after every optimiser step."""
        self.logit_scale.clamp_(max=math.log(100.0))

    def apply_freeze(self, freeze_layer_num: int) -> None:
        """CLIP4Clip's ``--freeze_layer_num`` rule (idempotent: every CLIP parameter is re-decided).

        * ``-1``: everything trains.
        * ``k >= 0``: trains the final text LayerNorm, ``text_projection``, ``logit_scale``, the vision
          post-LayerNorm, ``visual_projection`` and the transformer blocks (text and vision) with index
          ``>= k``; freezes the rest. ``k = 0`` (the README setting) therefore freezes only the token and
          text position embeddings, the patch embedding, the class embedding, the vision position
          embedding and the vision pre-LayerNorm.
        """
        if freeze_layer_num < -1:
            raise ConfigError(f"freeze_layer_num must be -1 (train all) or >= 0; got {freeze_layer_num}")
        self.freeze_layer_num = freeze_layer_num
        for name, param in self.model.named_parameters():
            param.requires_grad_(_is_trained(name, freeze_layer_num))


def _is_trained(hf_name: str, freeze_layer_num: int) -> bool:
    if freeze_layer_num < 0 or hf_name.startswith(_ALWAYS_TRAINED):
        return True
    block = _BLOCK_RE.match(hf_name)
    return block is not None and int(block.group(1)) >= freeze_layer_num


def _load_pretrained_clip(name: str, attn_implementation: str) -> nn.Module:
    """Load a full CLIP checkpoint offline, refusing partial or non-CLIP checkpoints."""
    from transformers import CLIPModel

    folder = resolve_local_folder(name, _WEIGHT_FILE_SETS, "CLIP weights")
    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise MissingWeightsError(f"cannot read {config_file}: {err}\n  fix: {download_hint(name)}") from err
    if model_type != "clip":
        raise ConfigError(
            f"{config_file} describes a {model_type!r} model, not a full CLIP model (model_type 'clip', "
            "text + vision towers); use e.g. openai/clip-vit-base-patch32"
        )
    return load_pretrained_offline(CLIPModel, folder, name, "CLIP", attn_implementation=attn_implementation)


def ensure_local_weights(name: str) -> None:
    """Fail fast (before any data work) when a named checkpoint is not available offline."""
    if name != "tiny" and name not in RANDOM_SHAPES and find_openai_file(name) is None:
        resolve_local_folder(name, _WEIGHT_FILE_SETS, "CLIP weights")
