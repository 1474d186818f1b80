"""Fit and test a composed recipe: trainer, run directory, resume, result record.

Run directories are deterministic (``<runs_dir>/<recipe>/seed<k>/``): running the same command again
resumes from that directory's ``last.ckpt`` (written atomically), so an interrupted or requeued job picks
up where it stopped. ``test`` writes ``result.json`` there, atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vidbench.checkpointing import (
    BEST_ON_TEST,
    AtomicCheckpointIO,
    BestOnTest,
    LastEachEpoch,
    RequeueOnSignal,
    ResumeReport,
    StopAfterEpochs,
    best_on_test_pick,
    install_requeue_handler,
    latest_checkpoint,
    prune_hpc_checkpoints,
    under_slurm,
)
from vidbench.config import config_hash, run_dir
from vidbench.console import EpochLine, interactive, tidy_lightning_logging
from vidbench.data.datamodule import RetrievalDataModule
from vidbench.data.datasets import dataset_name
from vidbench.data.overlap import split_overlap
from vidbench.data.text import build_tokenizer
from vidbench.errors import ConfigError, VidbenchError
from vidbench.eval.controls import counts_check
from vidbench.io import ensure_writable, write_text_atomic
from vidbench.methods import build_method
from vidbench.methods.base import RetrievalMethod
from vidbench.methods.grad_cache import oom_hint
from vidbench.reference_ckpt import ImportedCheckpoint, load_into
from vidbench.results.schema import write_json_atomic

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def build_datamodule(cfg: DictConfig, method: RetrievalMethod) -> L.LightningDataModule:
    """Videos for the CLIP methods; the MMT feature release when ``data.mmt`` is set (HCQ as published)."""
    if cfg.data.mmt is not None:
        tokenizer = getattr(method, "query_tokenizer", None)
        if tokenizer is None:
            raise ConfigError(
                f"data.mmt is set (MMT expert features) but method '{cfg.method.name}' encodes videos; "
                "use method hcq_mmt (recipes/hcq-mmt/) or remove data.mmt"
            )
        from vidbench.data.mmt_datamodule import MmtDataModule

        return MmtDataModule(cfg.data, tokenizer, seed=cfg.run.seed)
    tokenizer = build_tokenizer(cfg.model.tokenizer or cfg.model.clip)
    method.clip.check_tokenizer(tokenizer)
    hint = f"vidbench verify-data {cfg.run.name}"
    return RetrievalDataModule(cfg.data, tokenizer, method.clip.image_size, seed=cfg.run.seed, manifest_hint=hint)


def apply_cpu_threads(cfg: DictConfig) -> int:
    """Pin torch's intra-op threads to ``trainer.cpu_threads`` (when set); returns the count in use.

    CPU kernels split reductions and matrix products by thread count, so the same seed under another count
    gives weights that differ in the last bits after one step and in the metrics after a few epochs (DRL and
    EERCF's token-wise products show it first). torch otherwise takes the count from the machine and from
    OMP_NUM_THREADS (which SLURM jobs set), so it is fixed in the recipe and recorded in result.json.
    """
    n = cfg.trainer.get("cpu_threads")
    if n is not None:
        if int(n) < 1:
            raise ConfigError(f"trainer.cpu_threads must be >= 1 or null (torch's choice), got {n}")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def build_trainer(cfg: DictConfig, out: Path, *, training: bool, resume: Path | None = None) -> L.Trainer:
    t = cfg.trainer
    tidy_lightning_logging()
    callbacks: list[Callback] = []
    progress_bar = interactive() if t.progress_bar is None else bool(t.progress_bar)
    plugins: list[Any] = [AtomicCheckpointIO()]  # hpc checkpoints (SLURM requeue) go through it too
    if under_slurm():
        # Ranks come from SLURM; SIGUSR1 is acted on at a step every rank shares (vidbench/checkpointing.py).
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
        if not progress_bar:
            callbacks.append(EpochLine())
        if cfg.eval.select_on_test:
            callbacks.append(BestOnTest(out))
    strategy = t.strategy
    return L.Trainer(
        default_root_dir=out,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        accumulate_grad_batches=int(t.get("accumulate_grad_batches") or 1),
        gradient_clip_val=cfg.optim.grad_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        deterministic=t.deterministic,
        enable_progress_bar=progress_bar,
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
    out = ensure_writable(run_dir(cfg), "paths.runs_dir")
    apply_cpu_threads(cfg)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
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
    try:
        trainer.fit(method, datamodule=dm, ckpt_path=str(resume) if resume else None)
    except VidbenchError:
        raise  # a user's error (unwritable folder, bad data) already says what to fix: no stop report
    except Exception as exc:
        if isinstance(exc, torch.OutOfMemoryError) and trainer.global_step == 0:
            chunk = cfg.trainer.get("contrastive_chunk")
            per_device = int(cfg.data.batch_size) // max(1, int(trainer.world_size))
            raise VidbenchError(oom_hint(per_device, int(chunk) if chunk else None)) from exc
        print(stopped_message(cfg, out, trainer, exc), file=sys.stderr, flush=True)
        raise
    if trainer.is_global_zero:
        prune_hpc_checkpoints(out)  # superseded by the final last.ckpt
        write_text_atomic(out / TRAINING, json.dumps(training_record(cfg, trainer), indent=1) + "\n")
        trained = getattr(dm, "text_counts", {})  # the training split's truncation counts, for data.text
        if trained:
            write_text_atomic(out / TEXT_COUNTS, json.dumps(trained, indent=1) + "\n")
    return out


TEXT_COUNTS = "data_text.json"
TRAINING = "training.json"


def training_record(cfg: DictConfig, trainer: L.Trainer) -> dict[str, Any]:
    """How the run was trained, as result.json's ``training`` reports it: the batch the contrastive loss saw
    (per device and global), how it was computed (chunks, accumulation, precision) and on what topology.

    Gradient accumulation over contrastive micro-batches shrinks the set of negatives each sample meets: it is
    listed under ``deviations`` so the leaderboard marks the row.
    """
    devices = int(trainer.num_devices)
    nodes = int(trainer.num_nodes)
    world = int(trainer.world_size)
    global_batch = int(cfg.data.batch_size)
    per_device = global_batch // world
    accumulate = int(trainer.accumulate_grad_batches)
    deviations = []
    if accumulate > 1:
        deviations.append(
            f"gradient accumulation over {accumulate} micro-batches: the contrastive loss sees {global_batch} pairs "
            f"at a time (negatives per sample: {global_batch - 1}), not the {global_batch * accumulate} of one "
            "optimiser step; use trainer.contrastive_chunk to keep the batch within memory instead"
        )
    chunk = cfg.trainer.get("contrastive_chunk")
    return {
        "num_nodes": nodes,
        "devices_per_node": devices,
        "world_size": world,
        "per_device_batch": per_device,
        "global_batch": global_batch,
        "contrastive_chunk": int(chunk) if chunk else None,
        "accumulate_grad_batches": accumulate,
        "samples_per_step": global_batch * accumulate,
        "precision": str(cfg.trainer.precision),
        "train_split": str(cfg.data.get("train_split") or "") or None,
        "deviations": deviations,
    }


def read_training_record(out: Path) -> dict[str, Any] | None:
    """The record ``fit`` wrote into the run directory; None for runs trained before it existed."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((out / TRAINING).read_text())
    return None


def stopped_message(cfg: DictConfig, out: Path, trainer: L.Trainer, exc: BaseException) -> str:
    """What a failed fit tells the user: where it stopped, why (a lost peer rank is named as such), how to resume.

    A node that dies mid-run shows on the surviving ranks as an error inside a collective (gloo: the connection
    to the peer closed; NCCL: a timeout or a remote error); the run directory still holds the last complete
    checkpoint, written atomically, which the same command (or ``vidbench submit``) resumes from.
    """
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    text = f"{type(exc).__name__}: {first}".lower()
    peer = trainer.world_size > 1 and any(
        w in text for w in ("connection closed", "connection reset", "peer", "gloo", "nccl", "timed out", "timeout")
    )
    why = "a peer rank was lost (a node or its process failed)" if peer else "an error"
    ckpt = latest_checkpoint(out)
    where = f"resumes from {ckpt}" if ckpt else "starts over (no checkpoint was written yet)"
    return (
        f"vidbench: training of {cfg.run.name} seed {cfg.run.seed} stopped on rank {trainer.global_rank} of "
        f"{trainer.world_size} (host {platform.node()}) at epoch {trainer.current_epoch}, global step "
        f"{trainer.global_step}: {why}: {type(exc).__name__}: {first}\n"
        f"vidbench: run the same command again (or resubmit the job): it {where}"
    )


def text_counts(out: Path, dm: Any) -> dict[str, dict[str, int]]:
    """``data.text`` of result.json: the training split's counts saved by ``fit`` plus those of the test split.

    Any datamodule may take part by exposing ``text_counts`` (split -> the six counts of the result schema).
    """
    counts: dict[str, dict[str, int]] = {}
    with contextlib.suppress(OSError, ValueError):  # absent: zero-shot, or trained before the counts existed
        counts.update(json.loads((out / TEXT_COUNTS).read_text()))
    counts.update(getattr(dm, "text_counts", {}))
    return counts


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
        "torch_threads": torch.get_num_threads(),
        "deterministic": _determinism(device.type, bool(cfg.trainer.deterministic)),
    }


def _determinism(device_type: str, deterministic: bool) -> str:
    """What a rerun with the same seed, config and machine can promise (goes into the record)."""
    if device_type == "cpu":
        return "bit-exact: same seed, config, torch_threads and machine give the same numbers"
    if deterministic:
        return "torch.use_deterministic_algorithms(True): bit-exact on the same GPU model and software"
    return (
        "not guaranteed: GPU kernels (cuBLAS split-K, atomic adds in backward passes) may differ run to run; "
        "set trainer.deterministic=true for bit-exact reruns (slower; ops without a deterministic kernel stop the run)"
    )


def build_result(
    cfg: DictConfig,
    method: RetrievalMethod,
    dm: L.LightningDataModule,
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
        "backbone": method.backbone_label,
        "seed": int(cfg.run.seed),
        "config_hash": config_hash(cfg),
        "git_commit": sha,
        "git_dirty": dirty,
        "dataset": dataset_name(cfg.data),
        "split": cfg.data.test_split,
        # an imported checkpoint was trained elsewhere, on a split this config does not know
        "train_split": cfg.data.train_split if ckpt is not None and ckpt.origin == "vidbench" else None,
        "checkpoint": ckpt.record() if ckpt is not None else None,
        # how vidbench trained the weights scored here (none for zero-shot or an imported checkpoint)
        "optim": method.optimiser_record() if ckpt is not None and ckpt.origin == "vidbench" else None,
        "caption_policy": "multi" if r["multi_caption"] else "single",
        "num_queries": r["num_queries"],
        "num_gallery": r["num_gallery"],
        "protocols": r["protocols"],
        "data": dm.data_report() | {"text": text_counts(out, dm)},
        "env": _environment(trainer, cfg),
        "wall_time_s": wall,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "paths": {"run_dir": str(out), "config": "config.yaml", "logs": "tb"},
    }
    if "efficiency" in r:
        record["efficiency"] = r["efficiency"]
    record["zero_shot"] = ckpt is None
    record["controls"] = {
        **r.get("controls", {}),
        "overlap": overlap_control(cfg, dm, ckpt),
        "counts": counts_check(
            cfg.data.dataset,
            cfg.data.test_split,
            r["num_queries"],
            r["num_gallery"],
            missing_ids=list(record["data"].get("skipped_ids") or []),
            synthetic=is_synthetic(cfg),
        ),
    }
    if ckpt is not None and ckpt.origin == "vidbench":
        record["training"] = read_training_record(out)
    return record


def is_synthetic(cfg: DictConfig) -> bool:
    """Data written by ``vidbench synth`` (its ``ground_truth.json`` beside the dataset folder): no standard
    split counts apply."""
    root = Path(str(cfg.data.root))
    return (root.parent / "ground_truth.json").exists() or (root / "ground_truth.json").exists()


def overlap_control(cfg: DictConfig, dm: L.LightningDataModule, ckpt: ImportedCheckpoint | None) -> dict[str, Any]:
    """The train/test overlap control of :mod:`vidbench.data.overlap`, where a training split is known."""
    if ckpt is None:
        return {"status": "not-applicable", "note": "zero-shot: no weights were trained by this recipe"}
    if ckpt.origin != "vidbench":
        return {"status": "not-checked", "note": f"imported {ckpt.origin} checkpoint: its training split is unknown"}
    indices = getattr(dm, "train_test_indices", None)
    if indices is None:
        return {"status": "not-checked", "note": f"{type(dm).__name__} has no per-video index to compare"}
    train, test = indices()
    out = split_overlap(train, test, declared=bool(cfg.data.get("declare_overlap", False)))
    if out["status"] == "fail":
        log.error(
            "overlap control failed for %s: %s; declare it with data.declare_overlap=true if intended",
            cfg.run.name,
            out["note"],
        )
    return out


def imported_run_name(recipe: str, imported: ImportedCheckpoint) -> str:
    """Run name (and run directory) of a test on an imported checkpoint: the recipe marked with the origin and
    the file's hash, so it never overwrites a run trained by vidbench and each file gets its own row."""
    return f"{recipe}+imported-{imported.origin}-{imported.sha256[:8]}"


def zero_shot_run_name(recipe: str) -> str:
    """Run name (and run directory) of ``test --zero-shot``: the recipe marked, so it never overwrites the
    trained run's result and gets a row (and headline group) of its own."""
    return f"{recipe}+zero-shot"


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
    apply_cpu_threads(cfg)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    method = build_method(cfg)
    imported: ImportedCheckpoint | None = None
    if ckpt is None:  # zero-shot: its own run directory and row, never the trained run's
        cfg = _renamed(cfg, zero_shot_run_name(cfg.run.name))
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
    out = ensure_writable(run_dir(cfg), "paths.runs_dir")
    dm = build_datamodule(cfg, method)
    _write_config(cfg, out)
    trainer = build_trainer(cfg, out, training=False)
    trainer.test(method, datamodule=dm, verbose=False)
    record = build_result(cfg, method, dm, trainer, time.perf_counter() - start, imported)
    best = out / BEST_ON_TEST
    if cfg.eval.select_on_test and ckpt == "last" and best.exists():
        _add_best_on_test(cfg, record, dm, best)
    if trainer.global_rank == 0:
        write_json_atomic(out / "result.json", record)
    return record


def _add_best_on_test(cfg: DictConfig, record: dict[str, Any], dm: L.LightningDataModule, best: Path) -> None:
    """Test the reference's pick too; its protocols join the record as ``<name>@best-on-test`` with
    ``selection: best-on-test`` (an oracle: chosen on the test split), the last epoch's get ``selection: last``.
    No efficiency figures and no FAISS export for the pick (those of the last epoch stand)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["eval"]["efficiency"] = False
    if "export_faiss" in plain["method"]:
        plain["method"]["export_faiss"] = False
    method = build_method(OmegaConf.create(plain))
    method.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    trainer = build_trainer(cfg, run_dir(cfg), training=False)
    trainer.test(method, datamodule=dm, verbose=False)
    for entry in record["protocols"].values():
        entry.setdefault("selection", "last")
    for name, entry in method.test_results["protocols"].items():
        record["protocols"][f"{name}@best-on-test"] = {**entry, "selection": "best-on-test"}
    pick = best_on_test_pick(best)
    record["best_on_test"] = {**pick, "checkpoint": str(best), "monitor": "t2v geometric mean of R@1/5/10 (test)"}
