"""Checkpoints trained with the reference code, loaded into vidbench's methods (``--ckpt``, ``import-checkpoint``).

Formats recognised by their keys (never by file name):

- **vidbench**: a Lightning checkpoint (``state_dict`` with ``clip.model.*``), or one written by
  ``vidbench import-checkpoint`` (which also carries ``vidbench_import``: the original origin, path, sha256).
- **clip4clip / drl / eercf**: CLIP4Clip's ``pytorch_model.bin.<epoch>`` and its forks' files, a state dict of
  the whole model: OpenAI CLIP under ``clip.*``; seqTransf as ``frame_position_embeddings.weight`` +
  ``transformerClip.resblocks.{i}.*``; DRL's WTI heads ``text_weight_fc.*`` / ``video_weight_fc.*``; EERCF's
  ``global_mat_weight`` / ``frame_logit_weight``. A ``module.`` prefix (a DDP-wrapped save) is stripped.
  Key sets alone cannot tell CLIP4Clip from DRL's DP/TI variants (same parameters): such a file fits both, and
  the recipe decides the origin.
- **hcq**: HCQ's trainer checkpoint (``checkpoint-epoch<N>.pth`` / ``trained_model.pth``, its best model: a dict with
  ``state_dict``, ``config``, ``epoch``, ...) holding the head as HCQ names it: ``ghost_vlad.clusters``
  ``[D, K+G]``, ``ghost_vlad.clusters2`` ``[1, D, K]``, ``ghost_vlad.batch_norm.*``, ``cls_pq_layer._C_k``
  ``[M, K, D/M]`` and ``vlad_pq_layers.{l}._C_k`` (with ``_C_v``, the same tensor in HCQ's "VQ" mode) and their
  ``BatchNorm.*`` statistics. HCQ's published model encodes MMT expert features with BERT; for the HCQ-on-CLIP
  variant the encoders are expected in CLIP4Clip's layout (``clip.*``, optional seqTransf), the convention a
  CLIP-fed HCQ head in the reference code base would follow. HCQ as published (MMT encoders) is recognised by
  ``txt_bert.*`` / ``vid_bert.*`` / ``text_GU.*`` / ``moe_fc_txt.*`` / ``text_vlad_proj.*`` /
  ``video_dim_reduce.*`` and maps onto ``hcq_mmt``: ``txt_bert.*`` (Hugging Face BERT) -> ``text_bert.bert.*``,
  ``text_GU.* / moe_fc_txt.*`` -> ``text_experts.*``, ``video_dim_reduce.* / vid_bert.*`` -> ``video_mmt.*``
  (the MMT BERT already uses the reference's names), ``text_vlad_proj.*`` unchanged. Two BERT poolers
  (``txt_bert.pooler.*``, ``vid_bert.pooler.*``) and older transformers' ``txt_bert.embeddings.position_ids``
  (when it is the plain 0..N-1 it always is) are dropped with a note: the reference forward never reads them.
  A file of one HCQ variant offered to the other's recipe is refused, naming the family that fits.

Reading is safe: ``torch.load(weights_only=True)``; globals that are not tensors or plain containers (HCQ's
``ConfigParser`` config, numpy scalars, paths) become inert placeholders, so no code from the file runs.

Mapping onto the recipe's method is all or nothing: every parameter and buffer of the method must come from
the file with the right shape, and every tensor of the file must land somewhere (bar the unused ones named
above). Otherwise the error lists the missing, left-over and mis-shaped keys, says the likely cause (wrong
method, wrong variant, other backbone, other frame count or codebook size) and names the recipes whose
configuration fits the file.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vidbench.errors import FileProblemError
from vidbench.models.openai_clip import METADATA_KEYS, hf_to_openai, openai_to_hf
from vidbench.results.schema import CHECKPOINT_ORIGINS

ORIGINS: tuple[str, ...] = CHECKPOINT_ORIGINS
IMPORT_KEY = "vidbench_import"  # what `vidbench import-checkpoint` adds to the converted file

_HCQ_MMT_PREFIXES = ("vid_bert.", "txt_bert.", "text_GU.", "moe_fc_txt.", "text_vlad_proj.", "video_dim_reduce.")
# the same encoders under vidbench's names (HcqMmt's attributes)
_HCQ_MMT_VIDBENCH = ("text_bert.", "text_experts.", "text_vlad_proj.", "video_mmt.")
# reference tensors the reference forward never reads: dropped with a note rather than reported as left over
_UNUSED_POOLERS = ("txt_bert.pooler.", "vid_bert.pooler.")
_MMT_FAMILY = "method hcq_mmt (recipes/hcq-mmt/)"
_CLIP_FAMILY = "method hcq (recipes/hcq/)"
_CROSS_PREFIXES = ("cross.", "similarity_dense.")
_PQ_RE = re.compile(r"^(cls_pq_layer|vlad_pq_layers\.(\d+))\.(.+)$")


class CheckpointError(FileProblemError):
    """A checkpoint cannot be read, is of no known format, or does not fit the recipe's method."""


@dataclass
class ImportedCheckpoint:
    """A checkpoint mapped onto a method: the state dict to load and what the result record says."""

    origin: str
    path: Path
    sha256: str
    state_dict: dict[str, Tensor]
    source: dict[str, str] | None = None  # for a converted file: the reference file it came from
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The result record's ``checkpoint`` entry (contract: origin, path, sha256; ``source`` when converted)."""
        out: dict[str, Any] = {"origin": self.origin, "path": str(self.path), "sha256": self.sha256}
        if self.source:
            out["source"] = dict(self.source)
        return out


# ------------------------------------------------------------------------------------------------ reading
def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _Opaque:
    """Stands in for any non-tensor global of a checkpoint (a config object, a numpy scalar, a path)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} from a checkpoint>"


def _placeholder(qualified: str) -> type:
    module, _, name = qualified.rpartition(".")
    return type(name, (_Opaque,), {"__module__": module, "__qualname__": name})


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled content of ``path`` (CPU), read with torch's weights-only unpickler and placeholders.

    :raises CheckpointError: for a missing or unreadable file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file", "pass the path of an existing checkpoint")
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        with torch.serialization.safe_globals([_placeholder(q) for q in unsafe]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, zip errors, EOFError ...
        raise CheckpointError(
            path,
            f"cannot read it as a PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
            "pass a file written by torch.save (CLIP4Clip's pytorch_model.bin.<epoch>, HCQ's trained_model.pth, "
            "vidbench's last.ckpt); a truncated copy is the usual cause",
        ) from err


def _tensors_only(d: Any) -> dict[str, Tensor] | None:
    if isinstance(d, dict) and d and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items()):
        return dict(d)
    return None


def _strip_module(state: dict[str, Tensor]) -> dict[str, Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


@dataclass
class Detected:
    """What a file is: its format (``origins``: every family whose layout it has), its reference-named state
    dict, and the facts that decide which recipe fits."""

    origins: tuple[str, ...]
    state: dict[str, Tensor]
    container: dict[str, Any]
    seqtransf_layers: int = 0
    wti_arch: int | None = None
    eercf_frames: int | None = None
    hcq: tuple[int, int, int] | None = None  # (fine levels L, sub-codebooks M, codewords K)
    hcq_encoders: str | None = None  # "mmt" (HCQ as published) or "clip" (HCQ on CLIP), for HCQ files
    patch_size: int | None = None
    trained_recipe: str | None = None  # vidbench checkpoints know their recipe
    import_meta: dict[str, str] | None = None

    def describe(self) -> str:
        parts = [f"format {'/'.join(self.origins)}"]
        if self.patch_size:
            parts.append(f"CLIP patch {self.patch_size}")
        if self.hcq_encoders == "mmt":  # no CLIP, so no seqTransf to speak of
            parts.append("MMT video transformer + BERT text encoders (HCQ as published)")
        else:
            parts.append(f"seqTransf with {self.seqtransf_layers} blocks" if self.seqtransf_layers else "no seqTransf")
        if self.wti_arch:
            parts.append(f"WTI heads (wti_arch {self.wti_arch})")
        if self.eercf_frames:
            parts.append(f"EERCF heads for {self.eercf_frames} frames")
        if self.hcq:
            parts.append("HCQ head L={} M={} K={}".format(*self.hcq))
        if self.trained_recipe:
            parts.append(f"trained by vidbench with recipe {self.trained_recipe}")
        return ", ".join(parts)


def _count(state: dict[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _wti_arch(state: dict[str, Tensor]) -> int | None:
    if "text_weight_fc.weight" in state:
        return 1
    linears = _count(state, r"^text_weight_fc\.(\d+)\.weight$")
    return linears or None


def _hcq_shape(state: dict[str, Tensor], pq_prefix: str, fine_re: str) -> tuple[int, int, int] | None:
    if pq_prefix not in state:
        return None
    m, k, _ = state[pq_prefix].shape
    return _count(state, fine_re), int(m), int(k)


def detect(obj: Any, path: Path) -> Detected:
    """Recognise the format of an unpickled checkpoint by its keys.

    :raises CheckpointError: when it matches no known format (the message lists its top-level keys).
    """
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        inner = _strip_module(dict(obj["state_dict"]))
        # Lightning's checkpoints say so; vidbench's methods without CLIP (HCQ on MMT features) have no clip.*
        lightning = "pytorch-lightning_version" in obj or IMPORT_KEY in obj
        if lightning or any(k.startswith("clip.model.") for k in inner):
            cfg = (obj.get("hyper_parameters") or {}).get("config") or {}
            recipe = (cfg.get("run") or {}).get("name") if isinstance(cfg, dict) else None
            meta = obj.get(IMPORT_KEY) if isinstance(obj.get(IMPORT_KEY), dict) else None
            origins = (meta["origin"],) if meta and meta.get("origin") in ORIGINS else ("vidbench",)
            det = Detected(origins, inner, obj, trained_recipe=recipe, import_meta=meta)
            _vidbench_facts(det)
            return det
        if any(k.startswith(("cls_pq_layer.", "ghost_vlad.")) for k in inner):
            det = Detected(("hcq",), inner, obj)
            det.hcq = _hcq_shape(inner, "cls_pq_layer._C_k", r"^vlad_pq_layers\.(\d+)\._C_k$")
            _clip_family_facts(det)
            det.hcq_encoders = "mmt" if any(k.startswith(_HCQ_MMT_PREFIXES) for k in inner) else "clip"
            return det
    state = _tensors_only(obj)
    if state is not None:
        state = _strip_module(state)
        if any(k.startswith("clip.") for k in state):
            if "global_mat_weight" in state:
                origins: tuple[str, ...] = ("eercf",)
            elif any(k.startswith(("text_weight_fc.", "video_weight_fc.")) for k in state):
                origins = ("drl",)
            else:
                origins = ("clip4clip", "drl")
            det = Detected(origins, state, {})
            _clip_family_facts(det)
            return det
        if "visual.conv1.weight" in state or "visual.layer1.0.conv1.weight" in state:
            raise CheckpointError(
                path,
                "this is an OpenAI CLIP backbone (ViT-B-32.pt-style weights), not a trained retrieval model",
                f"pass it as the backbone instead: model.clip={path}",
            )
    keys = sorted(obj)[:12] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        path,
        f"not a checkpoint format vidbench knows (top level: {keys})",
        "pass vidbench's last.ckpt, CLIP4Clip/DRL/EERCF's pytorch_model.bin.<epoch> (a state dict with clip.*), "
        "or HCQ's checkpoint-epoch<N>.pth / trained_model.pth",
    )


def _clip_family_facts(det: Detected) -> None:
    s = det.state
    if "clip.visual.conv1.weight" in s:
        det.patch_size = int(s["clip.visual.conv1.weight"].shape[-1])
    det.seqtransf_layers = _count(s, r"^transformerClip\.resblocks\.(\d+)\.")
    det.wti_arch = _wti_arch(s)
    if "frame_logit_weight" in s:
        det.eercf_frames = int(s["frame_logit_weight"].shape[0])


def _vidbench_facts(det: Detected) -> None:
    s = det.state
    if "clip.model.vision_model.embeddings.patch_embedding.weight" in s:
        det.patch_size = int(s["clip.model.vision_model.embeddings.patch_embedding.weight"].shape[-1])
    det.seqtransf_layers = _count(s, r"^temporal\.transformerClip\.resblocks\.(\d+)\.")
    det.wti_arch = _wti_arch(s)
    if "frame_logit_weight" in s:
        det.eercf_frames = int(s["frame_logit_weight"].shape[0])
    det.hcq = _hcq_shape(s, "quantizers.0.codebook", r"^quantizers\.(\d+)\.codebook$")
    if det.hcq:
        det.hcq = (det.hcq[0] - 1, det.hcq[1], det.hcq[2])
        det.hcq_encoders = "mmt" if any(k.startswith(_HCQ_MMT_VIDBENCH) for k in s) else "clip"


# ------------------------------------------------------------------------------------------------ mapping
def _map_reference(state: dict[str, Tensor], leftover: list[str], notes: list[str]) -> dict[str, Tensor]:
    """Reference names → vidbench names (the method's state dict keys, contract 2)."""
    out: dict[str, Tensor] = {}
    clip = {k[len("clip.") :]: v for k, v in state.items() if k.startswith("clip.")}
    clip = {k: v.float() if v.is_floating_point() else v for k, v in clip.items() if k not in METADATA_KEYS}
    unmapped: list[str] = []
    for k, v in openai_to_hf(clip, "clip.*", unmapped).items():
        out[f"clip.model.{k}"] = v
    leftover.extend(f"clip.{k}" for k in unmapped)
    for key, value in state.items():
        if key.startswith("clip."):
            continue
        value = value.float() if value.is_floating_point() else value
        if key == "frame_position_embeddings.weight" or key.startswith("transformerClip."):
            out[f"temporal.{key}"] = value
        elif key.startswith(_HCQ_MMT_PREFIXES):
            _map_hcq_mmt(key, value, out, leftover, notes)
        elif key.startswith(("text_weight_fc.", "video_weight_fc.")) or key in (
            "global_mat_weight",
            "frame_logit_weight",
        ):
            out[key] = value
        elif key == "ghost_vlad.clusters":
            out["vlad.assignment"] = value
        elif key == "ghost_vlad.clusters2":
            out["vlad.centers"] = value.reshape(value.shape[-2], value.shape[-1]).t().contiguous()
        elif key.startswith("ghost_vlad.batch_norm."):
            out["vlad.bn." + key[len("ghost_vlad.batch_norm.") :]] = value
        elif m := _PQ_RE.match(key):
            level = 0 if m.group(2) is None else int(m.group(2)) + 1
            rest = m.group(3)
            if rest == "_C_k":
                out[f"quantizers.{level}.codebook"] = value
            elif rest == "_C_v":
                k_key = key[: -len("_C_v")] + "_C_k"
                if k_key in state and not torch.equal(state[k_key], state[key]):
                    leftover.append(key)
                    notes.append(
                        f"{key} differs from {k_key}: HCQ's dual-codebook ('SX') mode, which vidbench does not "
                        "implement (it uses one codebook per level, HCQ's 'VQ' mode)"
                    )
            elif rest.startswith("BatchNorm."):
                out[f"quantizers.{level}.bn.{rest[len('BatchNorm.') :]}"] = value
            else:
                leftover.append(key)
        else:
            leftover.append(key)
    return out


def _map_hcq_mmt(key: str, value: Tensor, out: dict[str, Tensor], leftover: list[str], notes: list[str]) -> None:
    """One tensor of HCQ's MMT/BERT encoders under HcqMmt's names (the module docstring lists the rules).

    The reference's text BERT is Hugging Face's ``BertModel`` as is, so only the wrapper prefix changes; the gated
    units, MoE linears, ReduceDim layers and the MMT BERT were built in vidbench with the reference's own names.
    """
    if key.startswith(_UNUSED_POOLERS):
        if not any(n.startswith("BERT poolers") for n in notes):
            notes.append("BERT poolers (txt_bert.pooler.*, vid_bert.pooler.*) dropped: the reference never uses them")
        return
    if key == "txt_bert.embeddings.position_ids":
        if torch.equal(value.reshape(-1), torch.arange(value.numel(), dtype=value.dtype)):
            return  # a constant buffer older transformers saved; vidbench passes the same positions explicitly
        leftover.append(key)
        notes.append(f"{key} is not 0..N-1: the text BERT was run with other positions than the reference's")
        return
    if key.startswith("txt_bert."):
        out["text_bert.bert." + key[len("txt_bert.") :]] = value
    elif key.startswith(("text_GU.", "moe_fc_txt.")):
        out["text_experts." + key] = value
    elif key.startswith(("video_dim_reduce.", "vid_bert.")):
        out["video_mmt." + key] = value
    else:  # text_vlad_proj.*
        out[key] = value


def file_key(key: str) -> str:
    """The name a reference file gives the tensor vidbench calls ``key`` (the inverse of ``_map_reference``).

    Keys already in a file's own naming (left-over file keys), and keys without a reference counterpart, come
    back unchanged, so every key a refusal shows is one the user can look up in the file.
    """
    if key.startswith("clip.model."):
        name = hf_to_openai(key[len("clip.model.") :])
        return f"clip.{name}" if name else key
    if key.startswith("temporal."):
        return key[len("temporal.") :]
    if key.startswith("text_bert.bert."):
        return "txt_bert." + key[len("text_bert.bert.") :]
    if key.startswith(("text_experts.", "video_mmt.")):
        return key.split(".", 1)[1]
    if key == "vlad.assignment":
        return "ghost_vlad.clusters"
    if key == "vlad.centers":
        return "ghost_vlad.clusters2"
    if key.startswith("vlad.bn."):
        return "ghost_vlad.batch_norm." + key[len("vlad.bn.") :]
    m = re.match(r"^quantizers\.(\d+)\.(codebook|bn\.(.+))$", key)
    if m:
        level = int(m.group(1))
        layer = "cls_pq_layer" if level == 0 else f"vlad_pq_layers.{level - 1}"
        return f"{layer}._C_k" if m.group(2) == "codebook" else f"{layer}.BatchNorm.{m.group(3)}"
    return key


def _shown(key: str, in_file_names: bool) -> str:
    """A key as a refusal shows it: the file's own name, vidbench's beside it when they differ."""
    if not in_file_names:
        return key
    name = file_key(key)
    return name if name == key else f"{name} (vidbench: {key})"


def _cause(key: str, det: Detected, missing: bool, recipe_temporal: bool = False, recipe_mmt: bool = False) -> str:
    """The likely reason one key is missing from (or left over in) the file (``recipe_temporal``: the recipe's
    method has a seqTransf; ``recipe_mmt``: it is HCQ on MMT features)."""
    if key.startswith(_HCQ_MMT_PREFIXES + _HCQ_MMT_VIDBENCH):
        if missing and det.hcq_encoders == "mmt":
            return "HCQ's MMT/BERT encoders with other experts or depth than the recipe's, or an incomplete file"
        if missing:
            what = "HCQ on CLIP" if det.hcq_encoders == "clip" else f"format {'/'.join(det.origins)}"
            return f"HCQ's MMT/BERT encoders, which the file lacks: it is {what}, not an HCQ-on-MMT checkpoint"
        if recipe_mmt:
            return "HCQ's MMT/BERT encoders of another layout (other experts or depth) than the recipe's"
        return f"HCQ's MMT/BERT encoders: an HCQ-on-MMT-features checkpoint, not HCQ on CLIP; use {_MMT_FAMILY}"
    if missing and det.hcq_encoders == "mmt" and key.startswith(("clip.", "temporal.")):
        return f"CLIP encoders, which an HCQ-on-MMT-features checkpoint does not have; use {_MMT_FAMILY}"
    if recipe_mmt and not missing and key.startswith(("clip.", "temporal.")):
        return f"CLIP encoders: an HCQ-on-CLIP checkpoint, but the recipe is HCQ on MMT features; use {_CLIP_FAMILY}"
    if key.startswith(_CROSS_PREFIXES):
        return (
            "the cross encoder of CLIP4Clip's tightTransf (a run without --loose_type); vidbench has only loose heads"
        )
    if key.startswith("clip.visual.conv2"):
        return "CLIP4Clip's linear_patch=3d, which vidbench does not implement"
    if key.startswith("temporal.") and recipe_temporal and det.seqtransf_layers:
        return f"the file's seqTransf has {det.seqtransf_layers} blocks: set method.temporal_layers to match"
    if key.startswith("temporal."):
        return (
            "the recipe uses seqTransf but the file has none (meanP / agg_module None)"
            if missing
            else ("the file has a seqTransf but the recipe is meanP / agg_module none")
        )
    if "transformerClip" in key:
        return (
            "the file's seqTransf has another depth than method.temporal_layers"
            if missing
            else ("the file has seqTransf blocks the recipe does not (meanP, or fewer temporal_layers)")
        )
    if key.startswith(("text_weight_fc", "video_weight_fc")):
        if not missing:
            return "WTI heads the recipe does not use (a recipe without WTI, or another wti_arch)"
        return (
            "WTI heads of another wti_arch" if det.wti_arch else "the file has no WTI heads (CLIP4Clip, or DRL dp/ti)"
        )
    if key in ("global_mat_weight", "frame_logit_weight"):
        return "EERCF's heads: the file is not EERCF" if missing else "EERCF's heads: the recipe is not EERCF"
    if key.startswith(("vlad.", "quantizers.", "ghost_vlad.", "cls_pq_layer.", "vlad_pq_layers.")):
        return (
            "HCQ's head: the file is not HCQ, or has another number of levels"
            if missing
            else ("HCQ's head: the recipe is not HCQ, or has fewer levels (method.fine_levels)")
        )
    if key.startswith("clip."):
        return "another CLIP architecture" if missing else "a CLIP parameter vidbench's CLIPModel does not have"
    return "not part of the recipe's method"


_INCOMPLETE = (
    "absent from the file, although every tensor it does hold has the recipe's shape: the file is incomplete "
    "or edited (a tensor deleted or renamed), not another architecture"
)


def _incomplete(missing: list[str], leftover: list[str], shapes: list[str], det: Detected, recipe: str) -> bool:
    """A few missing keys, nothing left over, every shape matching, and the file's layout (family, variant,
    backbone, head sizes) the recipe's own: the file lacks tensors rather than being of another kind."""
    if leftover or shapes or not missing or len(missing) > 4:
        return False
    facts = _own_facts(recipe)
    return facts is not None and _fits(det, facts)


def _own_facts(recipe: str) -> dict[str, Any] | None:
    """The refusing recipe's method facts, when ``recipe`` names a recipe file."""
    from vidbench.config import find_recipe

    try:
        return _recipe_facts(find_recipe(recipe))
    except Exception:  # a run name that is not a recipe: no facts, no claim
        return None


def _shape_cause(key: str) -> str:
    if key == "frame_logit_weight":
        return "EERCF's frame weights are [max_frames, max_frames]: set data.max_frames to the file's frame count"
    if key.startswith("clip."):
        return "the file's CLIP is another backbone (width/patch/vocabulary): use a recipe with its backbone"
    if key.startswith("quantizers."):
        return "another codebook size: method.num_subspaces (M) / method.num_codewords (K)"
    if key.startswith("vlad."):
        return "another number of GhostVLAD clusters (method.fine_levels / ghost_clusters)"
    if key.startswith(_HCQ_MMT_VIDBENCH):
        return "another text BERT / MMT transformer size (method.bert, method.video_bert) or expert dimension"
    return "another width or variant"


@functools.lru_cache(maxsize=512)
def _recipe_facts(path: Path) -> dict[str, Any] | None:
    """The method-relevant settings of a recipe, composed without validation (fast)."""
    from omegaconf import OmegaConf

    from vidbench.config import _compose_file
    from vidbench.methods.registry import method_schema

    try:
        raw = _compose_file(path)
        method = raw.get("method") or {}
        name = method.get("name")
        m = OmegaConf.merge(OmegaConf.structured(method_schema(str(name))), method)
        clip = str(OmegaConf.select(raw, "model.clip", default="") or "")
        frames = OmegaConf.select(raw, "data.max_frames", default=None)
    except Exception:  # a malformed recipe is not this module's business
        return None
    patch = 8 if clip == "tiny" else 16 if "patch16" in clip else 32 if "patch32" in clip else None
    facts: dict[str, Any] = {"method": name, "patch": patch, "frames": frames}
    if name == "clip4clip":
        facts["seqtransf"] = m.temporal_layers if m.sim_header == "seqTransf" else 0
    elif name == "drl":
        facts["seqtransf"] = m.temporal_layers if m.agg_module == "seqTransf" else 0
        facts["wti_arch"] = m.wti_arch if m.interaction == "wti" else None
    elif name == "eercf":
        facts["seqtransf"] = m.temporal_layers
    elif name == "hcq":
        facts["seqtransf"] = m.temporal_layers if m.sim_header == "seqTransf" else 0
        facts["hcq"] = (m.fine_levels, m.num_subspaces, m.num_codewords)
    elif name == "hcq_mmt":  # no CLIP: the patch and seqTransf checks have nothing to compare
        facts.update(seqtransf=0, patch=None, hcq=(m.fine_levels, m.num_subspaces, m.num_codewords))
    return facts


def _fits(det: Detected, facts: dict[str, Any]) -> bool:
    family = facts["method"]
    if family == "hcq_mmt":  # the same origin as HCQ on CLIP; the encoders tell the two apart
        if det.hcq_encoders != "mmt":
            return False
        family = "hcq"
    elif family == "hcq" and det.hcq_encoders == "mmt":
        return False
    origins = set(det.origins)
    if "vidbench" in origins:  # a vidbench file's family follows from its heads
        origins = (
            {"hcq"}
            if det.hcq
            else {"eercf"}
            if det.eercf_frames
            else {"drl"}
            if det.wti_arch
            else {
                "clip4clip",
                "drl",
            }
        )
    if family not in origins or facts.get("seqtransf", 0) != det.seqtransf_layers:
        return False
    if det.patch_size and facts["patch"] and det.patch_size != facts["patch"]:
        return False
    if family == "drl" and facts.get("wti_arch") != det.wti_arch:
        return False
    if family == "eercf" and det.eercf_frames and facts["frames"] != det.eercf_frames:
        return False
    return not (family == "hcq" and tuple(facts["hcq"]) != det.hcq)


def fitting_recipes(det: Detected, limit: int = 6) -> list[str]:
    """Recipes whose method configuration fits the file (same family, variant, backbone, head sizes)."""
    from vidbench.config import list_recipes

    out = [p.stem for p in list_recipes() if (f := _recipe_facts(p)) is not None and _fits(det, f)]
    return out[:limit]


def map_onto(det: Detected, method: nn.Module, path: Path, recipe: str) -> tuple[dict[str, Tensor], list[str]]:
    """The file's tensors under the method's names, checked to cover the method exactly.

    :raises CheckpointError: listing missing, left-over and mis-shaped keys, their likely causes and the
        recipes that fit the file.
    """
    notes: list[str] = []
    leftover: list[str] = []
    in_file_names = not ("vidbench" in det.origins or det.import_meta)  # a reference file: show its own names
    mapped = _map_reference(det.state, leftover, notes) if in_file_names else dict(det.state)
    expected = method.state_dict()
    recipe_mmt = any(k.startswith("video_mmt.") for k in expected)
    missing = sorted(k for k in expected if k not in mapped)
    leftover += sorted(k for k in mapped if k not in expected)
    shapes = sorted(k for k in expected if k in mapped and tuple(mapped[k].shape) != tuple(expected[k].shape))
    if not (missing or leftover or shapes):
        return mapped, notes
    incomplete = _incomplete(missing, leftover, shapes, det, recipe)
    lines = [
        f"it does not fit recipe {recipe} ({type(method).__name__}); nothing was loaded. The file: {det.describe()}."
    ]
    for title, keys, is_missing in (
        ("missing from the file", missing, True),
        ("left over in the file", leftover, False),
    ):
        if keys:
            causes: dict[str, list[str]] = {}
            for k in keys:
                if incomplete:
                    cause = _INCOMPLETE
                else:
                    cause = _cause(k, det, is_missing, any(e.startswith("temporal.") for e in expected), recipe_mmt)
                causes.setdefault(cause, []).append(_shown(k, in_file_names))
            for cause, ks in causes.items():
                lines.append(f"  {len(ks)} key(s) {title}, e.g. {', '.join(ks[:3])}: {cause}")
    for k in shapes[:4]:
        lines.append(
            f"  {_shown(k, in_file_names)}: file {tuple(mapped[k].shape)} vs recipe {tuple(expected[k].shape)}: "
            f"{_shape_cause(k)}"
        )
    lines.extend(f"  note: {n}" for n in notes)
    raise CheckpointError(path, "\n".join(lines), _suggested_fix(det, recipe, recipe_mmt, incomplete))


def _same_recipe(a: str | None, b: str) -> bool:
    return a is not None and Path(a).stem == Path(b).stem


def _suggested_fix(det: Detected, recipe: str, recipe_mmt: bool, incomplete: bool) -> str:
    """What to do about a refusal; never the recipe that just refused the file."""
    if incomplete:
        return (
            "the file has this recipe's layout but lacks the tensors named above: re-save it from the training run "
            "(the whole model's state_dict) or restore the missing tensors; no other recipe will load it"
        )
    for known, how in ((det.import_meta or {}).get("recipe"), "converted for"), (det.trained_recipe, "trained with"):
        if known and not _same_recipe(known, recipe):
            return f"this file was {how} recipe {known}: use that recipe"
        if known:
            return f"this file was {how} this recipe but no longer matches its method: rebuild it with this code"
    fits = [r for r in fitting_recipes(det, limit=7) if not _same_recipe(r, recipe)][:6]
    if fits:
        return f"recipes that fit this file: {', '.join(fits)}"
    if det.hcq_encoders and (det.hcq_encoders == "mmt") != recipe_mmt:
        family = _MMT_FAMILY if det.hcq_encoders == "mmt" else _CLIP_FAMILY
        sizes = "L={} M={} K={}".format(*det.hcq) if det.hcq else "its sizes"
        return f"use a recipe of {family} set to the file's head ({sizes}: method.fine_levels/num_subspaces/...)"
    return "no recipe fits this file as it is; the lines above say what differs"


def import_checkpoint(path: str | Path, method: nn.Module, recipe: str) -> ImportedCheckpoint:
    """Read ``path``, recognise its format and map it onto ``method`` (nothing is loaded yet).

    The origin is the method's family when the file's layout fits several (CLIP4Clip vs DRL DP/TI).
    """
    path = Path(path).expanduser()
    det = detect(read_checkpoint(path), path)
    mapped, notes = map_onto(det, method, path, recipe)
    family = getattr(method, "method_name", None)
    origin = family if family in det.origins else det.origins[0]
    source = None
    if det.import_meta:
        source = {k: str(det.import_meta[k]) for k in ("path", "sha256") if k in det.import_meta}
    return ImportedCheckpoint(origin, path, sha256_file(path), mapped, source, notes)


def load_into(method: nn.Module, path: str | Path, recipe: str) -> ImportedCheckpoint:
    """:func:`import_checkpoint`, then load the weights strictly into ``method``."""
    imported = import_checkpoint(path, method, recipe)
    method.load_state_dict(imported.state_dict, strict=True)
    return imported


def write_converted(imported: ImportedCheckpoint, out: str | Path, recipe: str, config: dict[str, Any]) -> Path:
    """Write a vidbench checkpoint holding the converted weights and where they came from (atomically)."""
    import io

    from vidbench.io import write_bytes_atomic

    payload = {
        "state_dict": {k: v.contiguous() for k, v in imported.state_dict.items()},
        "hyper_parameters": {"config": config},
        IMPORT_KEY: {
            "origin": imported.origin,
            "path": str(imported.path),
            "sha256": imported.sha256,
            "recipe": recipe,
        },
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_bytes_atomic(out, buf.getvalue())


__all__ = [
    "IMPORT_KEY",
    "ORIGINS",
    "CheckpointError",
    "Detected",
    "ImportedCheckpoint",
    "detect",
    "fitting_recipes",
    "import_checkpoint",
    "load_into",
    "map_onto",
    "read_checkpoint",
    "sha256_file",
    "write_converted",
]
