"""Fit and test a composed recipe: trainer, run directory, resume, result record.

Run directories are deterministic (``<runs_dir>/<recipe>/seed<k>/``): running the same command again
resumes from that directory's ``last.ckpt`` (written atomically), so an interrupted or requeued job picks
up where it stopped. ``test`` writes ``result.json`` there, atomically.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from vidbench.config import config_hash, run_dir
from vidbench.data.datamodule import RetrievalDataModule
from vidbench.data.text import build_tokenizer
from vidbench.errors import VidbenchError
from vidbench.io import write_text_atomic
from vidbench.methods import build_method
from vidbench.methods.base import RetrievalMethod
from vidbench.reference_ckpt import ImportedCheckpoint, load_into
from vidbench.results.schema import write_json_atomic
from vidbench.slurm import (
    clear_requeue,
    install_requeue_handler,
    latest_checkpoint,
    next_hpc_path,
    prune_hpc_checkpoints,
    requeue_pending,
    requeue_self,
    under_slurm,
)

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


class LastEachEpoch(Callback):
    """Write ``last.ckpt`` at every epoch end (atomically, via the CheckpointIO plugin).

    ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes it only when training ends, so a job killed
    mid-run (preempted, out of time) would otherwise restart from zero.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "last.ckpt"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class Requeued(SystemExit):
    """Raised on every rank once the job is requeued: this attempt ends, the requeued one resumes."""


class RequeueOnSignal(Callback):
    """Checkpoint and requeue on SLURM's SIGUSR1 at a point where every rank is in step.

    The signal handler only records the signal (vidbench/slurm.py); acting inside it, as Lightning's own
    handler does, can deadlock DDP (one rank in a gradient all-reduce, another in the checkpoint barrier).
    ``at="batch"``: the next training batch end (the resumed run restores epoch and global step; the rest
    of that epoch restarts its batch order). ``at="epoch"``: the end of the running epoch, so the resumed run
    matches an uninterrupted one; the signal's lead time must then exceed an epoch. While testing, the job is
    requeued without a checkpoint: its rerun finds fit done and tests again.
    """

    def __init__(self, out: Path, at: str = "batch") -> None:
        self.out = Path(out)
        self.at = at

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        install_requeue_handler()  # before Lightning registers its handlers: it then leaves SIGUSR1 to us

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.at == "batch":
            self._checkpoint_and_requeue(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at == "epoch":
            self._checkpoint_and_requeue(trainer)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # No checkpoint and no collective (test batches need not be in step): every rank got the signal
        # and lets the SIGTERM that follows the requeue end it.
        if requeue_pending():
            clear_requeue()
            previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if trainer.is_global_zero and not requeue_self():
                signal.signal(signal.SIGTERM, previous)

    def _checkpoint_and_requeue(self, trainer: L.Trainer) -> None:
        strategy = trainer.strategy
        if not strategy.reduce_boolean_decision(requeue_pending(), all=False):  # did any rank get it?
            return
        path = Path(strategy.broadcast(str(next_hpc_path(self.out)), src=0))
        trainer.save_checkpoint(path)  # rank 0 writes, atomically (AtomicCheckpointIO); all ranks sync
        where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
        if trainer.is_global_zero:
            prune_hpc_checkpoints(self.out, keep=path)
            rank_zero_info(f"requeue signal: saved {path} at {where}")
        # The checkpoint is on disk: the SIGTERM that follows the requeue may now end the process at once
        # (Lightning's SIGTERM handler would start a collective of its own).
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        requeued = strategy.broadcast(requeue_self() if trainer.is_global_zero else False, src=0)
        clear_requeue()
        if requeued:
            raise Requeued(0)
        signal.signal(signal.SIGTERM, previous)
        rank_zero_info(f"requeue refused at {where}; training goes on (resubmit to resume from {path})")


class ResumeReport(Callback):
    """Say where a resumed fit picked up (the restored epoch and global step), for logs and tests."""

    def __init__(self, ckpt: Path | None) -> None:
        self.ckpt = ckpt

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ckpt is not None:
            rank_zero_info(
                f"resumed from {self.ckpt} at epoch {trainer.current_epoch}, global step {trainer.global_step}"
            )


def build_datamodule(cfg: DictConfig, method: RetrievalMethod) -> RetrievalDataModule:
    tokenizer = build_tokenizer(cfg.model.tokenizer or cfg.model.clip)
    method.clip.check_tokenizer(tokenizer)
    hint = f"vidbench verify-data {cfg.run.name}"
    return RetrievalDataModule(cfg.data, tokenizer, method.clip.image_size, seed=cfg.run.seed, manifest_hint=hint)


def build_trainer(cfg: DictConfig, out: Path, *, training: bool, resume: Path | None = None) -> L.Trainer:
    t = cfg.trainer
    callbacks: list[Callback] = []
    plugins: list[Any] = [AtomicCheckpointIO()]  # hpc checkpoints (SLURM requeue) go through it too
    if under_slurm():
        # Ranks come from SLURM; SIGUSR1 is acted on at a step every rank shares (vidbench/slurm.py).
        install_requeue_handler()
        plugins.append(SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1))
        callbacks.append(RequeueOnSignal(out, at=cfg.slurm.requeue_at))
    if training:
        callbacks.append(LastEachEpoch(out))
        # Its one job now: last.ckpt when training ends (epoch progress marked complete). Never last-v1.ckpt.
        callbacks.append(
            ModelCheckpoint(
                dirpath=out,
                save_last=True,
                save_top_k=0,
                save_on_train_epoch_end=True,
                every_n_epochs=1,
                enable_version_counter=False,
            )
        )
        if t.stop_after_epochs:
            callbacks.append(StopAfterEpochs(t.stop_after_epochs))
        callbacks.append(ResumeReport(resume))
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
        plugins=plugins,
    )


def _write_config(cfg: DictConfig, out: Path) -> None:
    """Every DDP rank may get here at once: each writes through its own temporary file (same content)."""
    path = out / "config.yaml"
    if path.exists():
        old = OmegaConf.load(path)
        if config_hash(old) != config_hash(cfg):
            log.warning("%s: the config differs from the one this run directory was started with", path)
    write_text_atomic(path, OmegaConf.to_yaml(cfg))


def fit(cfg: DictConfig) -> Path:
    """Train (or resume) the recipe; returns the run directory."""
    out = run_dir(cfg)
    L.seed_everything(cfg.run.seed, workers=True)
    method = build_method(cfg)
    dm = build_datamodule(cfg, method)
    _write_config(cfg, out)
    resume = latest_checkpoint(out)  # last.ckpt, or a newer hpc_ckpt_<n>.ckpt saved on a SLURM signal
    trainer = build_trainer(cfg, out, training=True, resume=resume)
    if resume is not None:
        log.info("resuming from %s", resume)
    elif cfg.model.init_from:
        # start from given weights (a converted or reference checkpoint); a resumed run has its own
        start = load_into(method, cfg.model.init_from, cfg.run.name)
        log.info("initialised from %s (%s checkpoint, sha256 %s)", start.path, start.origin, start.sha256)
    trainer.fit(method, datamodule=dm, ckpt_path=str(resume) if resume else None)
    if trainer.is_global_zero:
        prune_hpc_checkpoints(out)  # superseded by the final last.ckpt
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
    ckpt: ImportedCheckpoint | None,
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
        # an imported checkpoint was trained elsewhere, on a split this config does not know
        "train_split": cfg.data.train_split if ckpt is not None and ckpt.origin == "vidbench" else None,
        "checkpoint": ckpt.record() if ckpt is not None else None,
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


def imported_run_name(recipe: str, imported: ImportedCheckpoint) -> str:
    """Run name (and run directory) of a test on an imported checkpoint: the recipe marked with the origin and
    the file's hash, so it never overwrites a run trained by vidbench and each file gets its own row."""
    return f"{recipe}+imported-{imported.origin}-{imported.sha256[:8]}"


def _renamed(cfg: DictConfig, name: str) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.run.name = name
    OmegaConf.set_readonly(out, True)
    return out


def test(cfg: DictConfig, ckpt: str | None = "last") -> dict[str, Any]:
    """Evaluate the run's checkpoint (``last``), a given path, or the untrained model (``None``: zero-shot).

    A path may be a vidbench checkpoint or one trained with the reference code (CLIP4Clip, DRL, EERCF, HCQ;
    see :mod:`vidbench.reference_ckpt`). An imported one is tested in its own run directory
    (:func:`imported_run_name`) and its record says the origin, path and sha256 of the file.
    """
    start = time.perf_counter()
    L.seed_everything(cfg.run.seed, workers=True)
    method = build_method(cfg)
    imported: ImportedCheckpoint | None = None
    if ckpt is not None:
        ckpt_path = run_dir(cfg) / "last.ckpt" if ckpt == "last" else Path(ckpt)
        if not ckpt_path.exists():
            raise VidbenchError(
                f"no checkpoint at {ckpt_path}; run `vidbench fit {cfg.run.name}` first, pass --ckpt PATH, "
                "or --zero-shot to evaluate the backbone untrained"
            )
        imported = load_into(method, ckpt_path, cfg.run.name)
        if imported.origin != "vidbench":
            cfg = _renamed(cfg, imported_run_name(cfg.run.name, imported))
            log.info("imported a %s checkpoint from %s; testing as %s", imported.origin, ckpt_path, cfg.run.name)
    out = run_dir(cfg)
    dm = build_datamodule(cfg, method)
    _write_config(cfg, out)
    trainer = build_trainer(cfg, out, training=False)
    trainer.test(method, datamodule=dm, verbose=False)
    record = build_result(cfg, method, dm, trainer, time.perf_counter() - start, imported)
    if trainer.global_rank == 0:
        write_json_atomic(out / "result.json", record)
    return record
