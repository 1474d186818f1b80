"""What a run prints: Lightning's lines once, no advertising, and one line per epoch in batch logs.

Lightning's loggers carry their own handler when Lightning is imported before logging is configured,
and propagate to the root handler otherwise; depending on import order a run printed every INFO line
twice. :func:`tidy_lightning_logging` leaves exactly one path (the root handler that the CLI
configures) and drops the lines that say nothing about the run. :class:`EpochLine` prints one plain
line per epoch with the mean loss and the throughput, for logs that a progress bar would fill with
carriage returns.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
_NOISE = ("💡 Tip", "TPU available", "HPU available", "litlogger", "litmodels", "`weights_only` was not set")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in _NOISE)


_FILTER = _DropNoise()


def tidy_lightning_logging() -> None:
    """One handler path for Lightning's records (the root's when it has one), noise filtered; idempotent."""
    root_has_handler = bool(logging.getLogger().handlers)
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if root_has_handler:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def interactive() -> bool:
    """A terminal is watching stdout (a progress bar is welcome); batch logs are not terminals."""
    return sys.stdout.isatty()


class EpochLine(Callback):
    """``epoch 2/4: loss 1.234 (mean of 5 steps), 412 samples/s, 1.6 s`` on rank 0, once per epoch."""

    def __init__(self) -> None:
        self._start = 0.0
        self._samples = 0
        self._loss_sum = 0.0
        self._steps = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._samples, self._loss_sum, self._steps = time.perf_counter(), 0, 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum += float(loss.detach())
            self._steps += 1
        if isinstance(batch, dict) and "input_ids" in batch:
            self._samples += int(batch["input_ids"].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        elapsed = time.perf_counter() - self._start
        loss = f"loss {self._loss_sum / self._steps:.4f} (mean of {self._steps} steps)" if self._steps else "no steps"
        rate = f"{self._samples / elapsed:.0f} samples/s" if elapsed > 0 else "? samples/s"
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {loss}, {rate}, {elapsed:.1f} s", flush=True)


__all__ = ["EpochLine", "interactive", "tidy_lightning_logging"]
