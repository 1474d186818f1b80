"""Where backbone weights and tokenizer files come from: a local folder or the local Hugging Face cache.

vidbench never downloads; these helpers find the files offline or say exactly what to put where. Shared by
the tokenizers (data) and the CLIP backbone (models), which otherwise know nothing of each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vidbench.errors import MissingWeightsError

# The tiny random backbone and its offline tokenizer agree on this vocabulary size.
TINY_VOCAB_SIZE = 4096


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


def load_pretrained_offline(model_cls: Any, folder: Path, name: str, label: str, **kwargs: Any) -> Any:
    """``model_cls.from_pretrained(folder)`` offline, in fp32, refusing a checkpoint that lacks weights.

    transformers fills missing weights with random ones and only warns; for a reproduction that is a silent
    wrong number, so it is an error here naming the folder and the fix (``label``: "CLIP", "BERT", ...).
    """
    try:
        model, info = model_cls.from_pretrained(
            str(folder), local_files_only=True, dtype=torch.float32, output_loading_info=True, **kwargs
        )
    except OSError as err:
        raise MissingWeightsError(
            f"cannot load {label} weights from {folder}: {err}\n  fix: {download_hint(name)}"
        ) from err
    missing = list(info.get("missing_keys", []))
    if missing:
        raise MissingWeightsError(
            f"{label} checkpoint {folder} lacks {len(missing)} weights (e.g. {missing[:3]}); they would be random.\n"
            f"  fix: re-download it: {download_hint(name)}"
        )
    return model
