"""Checkpoint and requeue mechanics beneath both the runner and the SLURM submitter.

What a preemptible run needs, independent of how it was launched: atomic checkpoint writes, ``last.ckpt``
at every epoch end, which checkpoint a (re)started fit resumes from, and SLURM's SIGUSR1 requeue acted on at
a point every DDP rank reaches together. ``vidbench.runner`` builds its Trainer from these callbacks and
``vidbench.slurm`` installs the handler around its tasks; neither imports the other for it.

Why the signal handler only records the signal: Lightning's own handler saves a checkpoint from inside the
handler, wherever each rank happens to be, which under DDP can deadlock (one rank in a gradient all-reduce,
another in the checkpoint barrier). :class:`RequeueOnSignal` acts on it at the next batch end (or the epoch
end with ``slurm.requeue_at=epoch``): all ranks agree, rank 0 writes ``hpc_ckpt_<n>.ckpt`` atomically into
the run directory and runs ``scontrol requeue``; the requeued job finds the same deterministic run directory
and resumes from :func:`latest_checkpoint`.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from vidbench.errors import VidbenchError

log = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR1
HPC_PREFIX = "hpc_ckpt_"

# -- the requeue signal ---------------------------------------------------------------------------------


class _RequeueFlag:
    """Signal handler that only records the signal: the work happens where all ranks are in step."""

    def __init__(self) -> None:
        self.pending = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.pending = True


_FLAG = _RequeueFlag()


def under_slurm() -> bool:
    """True inside a SLURM job step (srun), as Lightning decides it (interactive shells excluded)."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def install_requeue_handler() -> None:
    """Record SIGUSR1 instead of dying on it (its default action).

    Installed before the Trainer runs, so Lightning sees a handler and does not register its own.
    """
    if signal.getsignal(REQUEUE_SIGNAL) is not _FLAG:
        signal.signal(REQUEUE_SIGNAL, _FLAG)


def requeue_pending() -> bool:
    """Whether SIGUSR1 arrived since the last :func:`clear_requeue`."""
    return _FLAG.pending


def clear_requeue() -> None:
    _FLAG.pending = False


def slurm_job_id(env: dict[str, str] | None = None) -> str:
    """The id ``scontrol requeue`` needs: ``<array job>_<task>`` for an array task, else the job id."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if not env.get("SLURM_JOB_ID"):
        raise VidbenchError("SLURM_JOB_ID is not set: requeue only works inside a SLURM job")
    return env["SLURM_JOB_ID"]


def requeue_self() -> bool:
    """Ask SLURM to requeue this job; False (with the reason logged) when it refuses."""
    job = slurm_job_id()
    try:
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("scontrol requeue %s failed: %s", job, exc)
        return False
    if proc.returncode:
        log.warning("scontrol requeue %s failed (rc=%d): %s", job, proc.returncode, proc.stderr.strip())
        return False
    log.info("requeued SLURM job %s", job)
    return True


# -- checkpoints in a run directory ---------------------------------------------------------------------


def hpc_checkpoints(out: Path) -> list[Path]:
    """``hpc_ckpt_<n>.ckpt`` files (Lightning's naming), oldest number first."""
    found = []
    for p in Path(out).glob(f"{HPC_PREFIX}*.ckpt"):
        m = re.fullmatch(rf"{HPC_PREFIX}(\d+)\.ckpt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def next_hpc_path(out: Path) -> Path:
    existing = hpc_checkpoints(out)
    n = int(existing[-1].stem[len(HPC_PREFIX) :]) + 1 if existing else 1
    return Path(out) / f"{HPC_PREFIX}{n}.ckpt"


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint a (re)started fit resumes from: the newest of ``last.ckpt`` and the hpc checkpoints.

    An hpc checkpoint is written on the requeue signal, usually mid-epoch, so it is newer than the
    epoch-end ``last.ckpt``; once training goes on past it, ``last.ckpt`` is newer again.
    """
    candidates = [p for p in [Path(out) / "last.ckpt", *hpc_checkpoints(out)] if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name.startswith(HPC_PREFIX)))


def prune_hpc_checkpoints(out: Path, keep: Path | None = None) -> list[Path]:
    """Delete hpc checkpoints other than ``keep`` that ``last.ckpt`` or ``keep`` supersedes."""
    last = Path(out) / "last.ckpt"
    newest = keep if keep is not None else (last if last.is_file() else None)
    if newest is None:
        return []
    removed = []
    for p in hpc_checkpoints(out):
        if p != newest and p.stat().st_mtime_ns <= newest.stat().st_mtime_ns:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# -- Lightning callbacks ----------------------------------------------------------------------------------


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


class LastEachEpoch(Checkpoint):
    """Write ``last.ckpt`` at every epoch end (atomically, via the CheckpointIO plugin).

    ``ModelCheckpoint(save_top_k=0, save_last=True)`` writes it only when training ends, so a job killed
    mid-run (preempted, out of time) would otherwise restart from zero. A ``Checkpoint`` subclass, so Lightning
    runs it after the LightningModule's own ``on_train_epoch_end`` (HCQ's end-of-epoch k-means is then in it).
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "last.ckpt"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class Requeued(SystemExit):
    """Raised on every rank once the job is requeued: this attempt ends, the requeued one resumes."""


class RequeueOnSignal(Callback):
    """Checkpoint and requeue on SLURM's SIGUSR1 at a point where every rank is in step.

    The signal handler only records the signal (above); acting inside it, as Lightning's own
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


BEST_ON_TEST = "best-on-test.ckpt"


class BestOnTest(Checkpoint):
    """Keep the epoch whose test-split score (``pl_module.selection_score``) is the best so far, as the HCQ
    reference does (its monitor is the t2v geometric mean of R@1/5/10 on the test split; ``>=``, so a tie goes
    to the later epoch). Writes ``best-on-test.ckpt`` atomically; the pick is an oracle and is reported apart
    from the last epoch. Its state (best score, epoch) travels in every checkpoint, so a resumed run continues
    the comparison.
    """

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / BEST_ON_TEST
        self.best: float | None = None
        self.epoch: int | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = getattr(pl_module, "selection_score", None)
        if score is None:
            return
        if self.best is None or score >= self.best:
            self.best, self.epoch = float(score), int(trainer.current_epoch)
            trainer.save_checkpoint(self.path)
            rank_zero_info(f"best-on-test: epoch {self.epoch}, t2v geometric mean {self.best:.3f}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.epoch = state_dict.get("best"), state_dict.get("epoch")


def best_on_test_pick(ckpt: Path) -> dict[str, Any]:
    """``{"epoch", "score"}`` of a ``best-on-test.ckpt`` (from the callback state saved inside it)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    for key, value in state.get("callbacks", {}).items():
        if key.startswith("BestOnTest"):
            return {"epoch": value.get("epoch"), "score": value.get("best")}
    return {"epoch": state.get("epoch"), "score": None}
