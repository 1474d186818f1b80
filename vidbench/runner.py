"""Fit and test a composed recipe: trainer, run directory, resume, result record.

Run directories are deterministic (``<runs_dir>/<recipe>/seed<k>/``): running the same command again
resumes from that directory's ``last.ckpt`` (written atomically), so an interrupted or requeued job picks
up where it stopped. ``test`` writes ``result.json`` there, atomically.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from vidbench.config import config_hash, run_dir
from vidbench.data.datamodule import RetrievalDataModule
from vidbench.data.text import build_tokenizer
from vidbench.errors import VidbenchError
from vidbench.methods import build_method
from vidbench.methods.base import RetrievalMethod
from vidbench.results.schema import write_json_atomic

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename, so a kill mid-write never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


class StopAfterEpochs(Callback):
    """End this invocation after N epochs without touching the schedule (the rerun resumes)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def build_datamodule(cfg: DictConfig, method: RetrievalMethod) -> RetrievalDataModule:
    tokenizer = build_tokenizer(cfg.model.tokenizer or cfg.model.clip)
    method.clip.check_tokenizer(tokenizer)
    hint = f"vidbench verify-data {cfg.run.name}"
    return RetrievalDataModule(cfg.data, tokenizer, method.clip.image_size, seed=cfg.run.seed, manifest_hint=hint)


def build_trainer(cfg: DictConfig, out: Path, *, training: bool) -> L.Trainer:
    t = cfg.trainer
    callbacks: list[Callback] = []
    if training:
        callbacks.append(
            ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0, save_on_train_epoch_end=True, every_n_epochs=1)
        )
        if t.stop_after_epochs:
            callbacks.append(StopAfterEpochs(t.stop_after_epochs))
    strategy = t.strategy
    return L.Trainer(
        default_root_dir=out,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        gradient_clip_val=cfg.optim.grad_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=TensorBoardLogger(save_dir=str(out), name="tb", version="", default_hp_metric=False),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )


def _write_config(cfg: DictConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    if path.exists():
        old = OmegaConf.load(path)
        if config_hash(old) != config_hash(cfg):
            log.warning("%s: the config differs from the one this run directory was started with", path)
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg))
    os.replace(tmp, path)


def fit(cfg: DictConfig) -> Path:
    """Train (or resume) the recipe; returns the run directory."""
    out = run_dir(cfg)
    L.seed_everything(cfg.run.seed, workers=True)
    method = build_method(cfg)
    dm = build_datamodule(cfg, method)
    _write_config(cfg, out)
    last = out / "last.ckpt"
    trainer = build_trainer(cfg, out, training=True)
    if last.exists():
        log.info("resuming from %s", last)
    trainer.fit(method, datamodule=dm, ckpt_path=str(last) if last.exists() else None)
    return out


def _git_state() -> tuple[str | None, bool | None]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    if sha.returncode:
        return None, None
    return sha.stdout.strip(), bool(dirty.stdout.strip())


def _environment(trainer: L.Trainer, cfg: DictConfig) -> dict[str, Any]:
    import transformers

    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "transformers": transformers.__version__,
        "device": f"{device.type}: {name}",
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "precision": str(cfg.trainer.precision),
    }


def build_result(
    cfg: DictConfig,
    method: RetrievalMethod,
    dm: RetrievalDataModule,
    trainer: L.Trainer,
    wall: float,
    ckpt: str | None,
) -> dict[str, Any]:
    sha, dirty = _git_state()
    r = method.test_results
    out = run_dir(cfg)
    record = {
        "schema_version": 1,
        "recipe": cfg.run.name,
        "method": method.method_name,
        "variant": method.variant,
        "method_label": method.method_label,
        "backbone": method.clip.label,
        "seed": int(cfg.run.seed),
        "config_hash": config_hash(cfg),
        "git_commit": sha,
        "git_dirty": dirty,
        "dataset": cfg.data.dataset,
        "split": cfg.data.test_split,
        "train_split": cfg.data.train_split if ckpt else None,
        "checkpoint": ckpt,
        "caption_policy": "multi" if r["multi_caption"] else "single",
        "num_queries": r["num_queries"],
        "num_gallery": r["num_gallery"],
        "protocols": r["protocols"],
        "data": dm.data_report(),
        "env": _environment(trainer, cfg),
        "wall_time_s": wall,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "paths": {"run_dir": str(out), "config": "config.yaml", "logs": "tb"},
    }
    if "efficiency" in r:
        record["efficiency"] = r["efficiency"]
    return record


def test(cfg: DictConfig, ckpt: str | None = "last") -> dict[str, Any]:
    """Evaluate the run's checkpoint (``last``), a given path, or the untrained model (``None``: zero-shot)."""
    start = time.perf_counter()
    out = run_dir(cfg)
    L.seed_everything(cfg.run.seed, workers=True)
    method = build_method(cfg)
    ckpt_path = None
    if ckpt is not None:
        ckpt_path = out / "last.ckpt" if ckpt == "last" else Path(ckpt)
        if not ckpt_path.exists():
            raise VidbenchError(
                f"no checkpoint at {ckpt_path}; run `vidbench fit {cfg.run.name}` first, pass --ckpt PATH, "
                "or --zero-shot to evaluate the backbone untrained"
            )
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
        method.load_state_dict(state)
    dm = build_datamodule(cfg, method)
    _write_config(cfg, out)
    trainer = build_trainer(cfg, out, training=False)
    trainer.test(method, datamodule=dm, verbose=False)
    record = build_result(cfg, method, dm, trainer, time.perf_counter() - start, str(ckpt_path) if ckpt_path else None)
    if trainer.global_rank == 0:
        write_json_atomic(out / "result.json", record)
    return record
