"""OpenAI CLIP files (``ViT-B-32.pt``, ``ViT-B-16.pt``, ...) as backbone weights.

What CLIP4Clip, DRL and EERCF load is OpenAI's release: a TorchScript archive whose state dict uses OpenAI's
parameter names. This module reads that state dict on the CPU, infers the architecture from the tensor shapes
(OpenAI's files carry no config), and renames every tensor onto Hugging Face's :class:`~transformers.CLIPModel`.

How the archive is read: ``torch.jit.load(path, map_location="cpu").state_dict()``. That is exactly what the
reference repositories read (so the tensors are the ones their models started from), it handles every
TorchScript serialisation version the archives were written with, and it runs no model code: loading compiles
the archive's TorchScript definitions but never calls ``forward``, and TorchScript cannot execute arbitrary
Python the way an unrestricted pickle can. A plain ``torch.save``-d state dict (OpenAI's non-JIT fallback, or
a converted file) is read with ``torch.load(weights_only=True)``, which refuses anything but tensors and
containers. (``torch.jit`` is deprecated since torch 2.9; should a future torch drop it, the replacement is a
restricted unpickler over the archive's ``data.pkl`` that builds tensors and inert placeholders only.)

Name mapping (OpenAI on the left, ``CLIPModel`` on the right; ``{i}`` a block index)::

    token_embedding.weight                  text_model.embeddings.token_embedding.weight
    positional_embedding        [ctx, W]    text_model.embeddings.position_embedding.weight
    transformer.resblocks.{i}.*             text_model.encoder.layers.{i}.*      (block table below)
    ln_final.*                              text_model.final_layer_norm.*
    text_projection             [W, D]      text_projection.weight   [D, W]  (x @ P  ==  Linear with P^T)
    logit_scale                             logit_scale
    visual.conv1.weight                     vision_model.embeddings.patch_embedding.weight  (no bias in either)
    visual.class_embedding                  vision_model.embeddings.class_embedding
    visual.positional_embedding [1+g², W]   vision_model.embeddings.position_embedding.weight
    visual.ln_pre.*                         vision_model.pre_layrnorm.*   (HF's spelling)
    visual.transformer.resblocks.{i}.*      vision_model.encoder.layers.{i}.*
    visual.ln_post.*                        vision_model.post_layernorm.*
    visual.proj                 [W, D]      visual_projection.weight [D, W]

    block: attn.in_proj_weight [3W, W]  ->  self_attn.q_proj / k_proj / v_proj .weight  (rows 0:W, W:2W, 2W:3W)
           attn.in_proj_bias   [3W]     ->  self_attn.q_proj / k_proj / v_proj .bias
           attn.out_proj.*              ->  self_attn.out_proj.*
           ln_1.* / ln_2.*              ->  layer_norm1.* / layer_norm2.*
           mlp.c_fc.* / mlp.c_proj.*    ->  mlp.fc1.* / mlp.fc2.*

Architecture from shapes (OpenAI's own rule): widths from ``visual.conv1`` and ``ln_final``, layers by counting
blocks, patch size from the conv kernel, image size = patch x sqrt(positions - 1), context length and vocabulary
from the text tables, joint dim from ``text_projection``, **heads = width // 64** (the only thing shapes cannot
tell; every OpenAI model follows it). The ResNet CLIPs (``RN50.pt``, ...) have no HF ``CLIPModel`` equivalent
and are refused by name.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vidbench.errors import ConfigError, MissingWeightsError

# OpenAI's release names (clip.available_models()) and the file each downloads to.
OPENAI_FILES: dict[str, str] = {
    "ViT-B/32": "ViT-B-32.pt",
    "ViT-B/16": "ViT-B-16.pt",
    "ViT-L/14": "ViT-L-14.pt",
    "ViT-L/14@336px": "ViT-L-14-336px.pt",
    "RN50": "RN50.pt",
    "RN101": "RN101.pt",
    "RN50x4": "RN50x4.pt",
    "RN50x16": "RN50x16.pt",
    "RN50x64": "RN50x64.pt",
}
# Scalars OpenAI's archives keep next to the weights (its build_model deletes them too).
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")

_BLOCK_PARTS: dict[str, str] = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_PLAIN: dict[str, str] = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED: dict[str, str] = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}
_TOWERS = (
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
)
_BLOCK_RE = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_REQUIRED = (
    "visual.conv1.weight",
    "visual.positional_embedding",
    "text_projection",
    "positional_embedding",
    "token_embedding.weight",
    "ln_final.weight",
    "visual.proj",
)


@dataclass(frozen=True)
class OpenAIArchitecture:
    """What OpenAI's ``build_model`` reads off the shapes (heads by its width // 64 rule)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_mlp: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_mlp: int

    @property
    def vision_heads(self) -> int:
        return max(1, self.vision_width // 64)

    @property
    def text_heads(self) -> int:
        return max(1, self.text_width // 64)

    @property
    def label(self) -> str:
        size = {768: "B", 1024: "L", 1280: "H"}.get(self.vision_width, f"{self.vision_width}d")
        return f"ViT-{size}/{self.patch_size}"


def is_openai_file(path: str | Path) -> bool:
    """True for a file that looks like an OpenAI CLIP release (``*.pt``), judged by name only."""
    p = Path(path).expanduser()
    return p.suffix == ".pt" and p.is_file()


def find_openai_file(name_or_path: str) -> Path | None:
    """The OpenAI file ``name_or_path`` names: the file itself, or the single OpenAI-named file of a folder
    without an HF ``config.json``. ``None`` when it names neither (an HF folder, a hub id, ``tiny``).

    :raises MissingWeightsError: for a folder holding several OpenAI files (which one is meant is unclear).
    """
    p = Path(name_or_path).expanduser()
    if is_openai_file(p):
        return p
    if p.suffix == ".pt":
        raise MissingWeightsError(
            f"OpenAI CLIP file {p} does not exist.\n  fix: pass the ViT-B-32.pt / ViT-B-16.pt file that "
            "CLIP4Clip/DRL/EERCF load (`clip.load` keeps it in ~/.cache/clip/), or an HF CLIP folder"
        )
    if not p.is_dir() or (p / "config.json").is_file():
        return None
    found = [p / f for f in OPENAI_FILES.values() if (p / f).is_file()]
    if len(found) > 1:
        raise MissingWeightsError(
            f"{p} holds several OpenAI CLIP files ({', '.join(f.name for f in found)}).\n"
            f"  fix: pass the file itself, e.g. model.clip={found[0]}"
        )
    return found[0] if found else None


def _is_torchscript_zip(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in zf.namelist())


def read_openai_state_dict(path: str | Path) -> dict[str, Tensor]:
    """OpenAI's state dict from a TorchScript archive or a plain saved state dict, on the CPU, as float32.

    :raises MissingWeightsError: when the file is missing, unreadable or not a state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"OpenAI CLIP file {path} does not exist.\n  fix: pass the ViT-B-32.pt / ViT-B-16.pt file that "
            "CLIP4Clip/DRL/EERCF use (`clip.load` downloads it to ~/.cache/clip/)"
        )
    try:
        if _is_torchscript_zip(path):
            with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit deprecated; it still reads archives
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise MissingWeightsError(
            f"cannot read OpenAI CLIP file {path}: {err}\n"
            "  fix: re-download it; a truncated download is the usual cause"
        ) from err
    except Exception as err:  # weights_only refusals (pickle.UnpicklingError) and the like
        raise MissingWeightsError(f"{path} is not an OpenAI CLIP archive or state dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise MissingWeightsError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _count_blocks(state: dict[str, Tensor], prefix: str) -> int:
    ids = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if ids and ids != set(range(len(ids))):
        raise ConfigError(f"OpenAI CLIP state dict: blocks {prefix}* are not numbered 0..{len(ids) - 1}: {sorted(ids)}")
    return len(ids)


def infer_architecture(state: dict[str, Tensor], source: str = "state dict") -> OpenAIArchitecture:
    """The architecture of an OpenAI ViT CLIP state dict, from its shapes (see the module docstring)."""
    if any(k.startswith(("visual.layer1.", "visual.attnpool.")) for k in state):
        raise ConfigError(
            f"{source} is a ResNet CLIP (visual.layer1 / visual.attnpool): only the ViT models map onto HF CLIPModel "
            "and are used by the reference code; use ViT-B-32.pt or ViT-B-16.pt"
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ConfigError(f"{source} is not an OpenAI ViT CLIP state dict: it lacks {missing}")
    conv = state["visual.conv1.weight"]
    positions = state["visual.positional_embedding"].shape[0]
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise ConfigError(f"{source}: visual.positional_embedding has {positions} rows, not 1 + a square grid")
    vision_layers = _count_blocks(state, "visual.transformer.resblocks.")
    text_layers = _count_blocks(state, "transformer.resblocks.")
    if not vision_layers or not text_layers:
        raise ConfigError(f"{source}: found {vision_layers} vision and {text_layers} text blocks; need >= 1 of each")
    return OpenAIArchitecture(
        embed_dim=int(state["text_projection"].shape[1]),
        image_size=int(conv.shape[-1]) * grid,
        patch_size=int(conv.shape[-1]),
        vision_width=int(conv.shape[0]),
        vision_layers=vision_layers,
        vision_mlp=int(state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]),
        text_width=int(state["ln_final.weight"].shape[0]),
        text_layers=text_layers,
        text_mlp=int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
    )


def hf_config(arch: OpenAIArchitecture) -> Any:
    """The :class:`~transformers.CLIPConfig` of an OpenAI architecture (QuickGELU, LayerNorm eps 1e-5)."""
    from transformers import CLIPConfig

    text = {
        "hidden_size": arch.text_width,
        "intermediate_size": arch.text_mlp,
        "num_hidden_layers": arch.text_layers,
        "num_attention_heads": arch.text_heads,
        "vocab_size": arch.vocab_size,
        "max_position_embeddings": arch.context_length,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": arch.embed_dim,
        # OpenAI's BPE: <|startoftext|> and <|endoftext|> are the last two ids
        "bos_token_id": arch.vocab_size - 2,
        "eos_token_id": arch.vocab_size - 1,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": arch.vision_width,
        "intermediate_size": arch.vision_mlp,
        "num_hidden_layers": arch.vision_layers,
        "num_attention_heads": arch.vision_heads,
        "image_size": arch.image_size,
        "patch_size": arch.patch_size,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": arch.embed_dim,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.embed_dim)


def _block_targets(rest: str, dst_prefix: str, value: Tensor) -> dict[str, Tensor]:
    """One OpenAI block tensor → its HF tensor(s); the packed q/k/v projection splits in three."""
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        if value.shape[0] % 3:
            raise ConfigError(f"{rest} has {value.shape[0]} rows, not 3 x width")
        kind = "weight" if rest.endswith("weight") else "bias"
        q, k, v = value.chunk(3, dim=0)
        return {f"{dst_prefix}self_attn.{n}_proj.{kind}": t.clone() for n, t in zip("qkv", (q, k, v), strict=True)}
    if rest in _BLOCK_PARTS:
        return {dst_prefix + _BLOCK_PARTS[rest]: value}
    return {}


_HF_BLOCK_RE = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)$")
_BLOCK_PARTS_BACK = {hf: oa for oa, hf in _BLOCK_PARTS.items()}
_PLAIN_BACK = {hf: oa for oa, hf in _PLAIN.items()} | {hf: oa for oa, hf in _TRANSPOSED.items()}


def hf_to_openai(key: str) -> str | None:
    """The OpenAI name of the tensor an HF ``CLIPModel`` key is built from (``None``: no OpenAI counterpart).

    The inverse of :func:`openai_to_hf`'s renaming, for messages that must name a file's own keys: HF's
    ``q_proj``/``k_proj``/``v_proj`` all come from the packed ``attn.in_proj_weight`` / ``in_proj_bias``.
    """
    if key in _PLAIN_BACK:
        return _PLAIN_BACK[key]
    m = _HF_BLOCK_RE.match(key)
    if not m:
        return None
    prefix = ("visual." if m.group(1) == "vision_model" else "") + f"transformer.resblocks.{m.group(2)}."
    rest = m.group(3)
    pm = re.fullmatch(r"self_attn\.[qkv]_proj\.(weight|bias)", rest)
    if pm:
        return prefix + f"attn.in_proj_{pm.group(1)}"
    return prefix + _BLOCK_PARTS_BACK[rest] if rest in _BLOCK_PARTS_BACK else None


def openai_to_hf(
    state: dict[str, Tensor], source: str = "state dict", unmapped: list[str] | None = None
) -> dict[str, Tensor]:
    """Rename an OpenAI ViT CLIP state dict onto HF ``CLIPModel`` names (the packed attention split into q/k/v,
    the two projections transposed). The metadata scalars are dropped.

    :param unmapped: when given, keys without an HF counterpart are appended to it (the caller reports them);
        otherwise they raise.
    :raises ConfigError: naming every key that has no HF counterpart (nothing is dropped silently).
    """
    collect = unmapped is not None
    out: dict[str, Tensor] = {}
    unmapped = unmapped if unmapped is not None else []
    for key, value in state.items():
        if key in METADATA_KEYS:
            continue
        if key in _PLAIN:
            out[_PLAIN[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        m = _BLOCK_RE.match(key)
        mapped = {}
        if m:
            dst = _TOWERS[1][1] if m.group(1) else _TOWERS[0][1]
            mapped = _block_targets(m.group(3), f"{dst}{m.group(2)}.", value)
        if not mapped:
            unmapped.append(key)
        out.update(mapped)
    if unmapped and not collect:
        hint = ""
        if any(k.startswith("visual.conv2") for k in unmapped):
            hint = " (visual.conv2 is CLIP4Clip's linear_patch=3d, which vidbench does not implement)"
        raise ConfigError(
            f"{source}: {len(unmapped)} OpenAI CLIP key(s) have no HF CLIPModel counterpart: {unmapped[:8]}{hint}"
        )
    return out


def build_hf_clip(state: dict[str, Tensor], attn_implementation: str, source: str) -> torch.nn.Module:
    """An HF ``CLIPModel`` holding exactly the weights of an OpenAI state dict (every parameter checked)."""
    from transformers import CLIPModel

    arch = infer_architecture(state, source)
    model = CLIPModel._from_config(hf_config(arch), attn_implementation=attn_implementation)
    mapped = openai_to_hf(state, source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    wrong = [
        f"{k}: {tuple(mapped[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in mapped and mapped[k].shape != v.shape
    ]
    if missing or extra or wrong:
        raise ConfigError(
            f"{source}: the OpenAI weights do not fill an HF CLIPModel of the inferred architecture {arch}: "
            f"missing {missing[:6]}, unexpected {extra[:6]}, shape mismatches {wrong[:6]}"
        )
    model.load_state_dict(mapped, strict=True)
    return model


def load_openai_clip(path: str | Path, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """Read an OpenAI CLIP file and return the equivalent HF ``CLIPModel`` (float32, CPU)."""
    return build_hf_clip(read_openai_state_dict(path), attn_implementation, str(path))


__all__ = [
    "METADATA_KEYS",
    "OPENAI_FILES",
    "OpenAIArchitecture",
    "build_hf_clip",
    "find_openai_file",
    "hf_config",
    "hf_to_openai",
    "infer_architecture",
    "is_openai_file",
    "load_openai_clip",
    "openai_to_hf",
    "read_openai_state_dict",
]
