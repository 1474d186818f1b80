"""Console output: Lightning's lines once, advertising dropped, one plain line per epoch."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import torch

from vidbench.console import EpochLine, tidy_lightning_logging


def test_lightning_lines_printed_once_without_tips():
    root = logging.getLogger()
    stream = io.StringIO()
    ours = logging.StreamHandler(stream)
    own = logging.StreamHandler(stream)  # what Lightning adds when imported before logging is configured
    pl_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    parent = logging.getLogger("lightning.pytorch")
    saved = (root.handlers[:], root.level, parent.handlers[:], parent.propagate, parent.level)
    try:
        root.handlers[:] = [ours]
        root.setLevel(logging.INFO)
        parent.addHandler(own)
        parent.setLevel(logging.INFO)
        tidy_lightning_logging()
        pl_logger.info("GPU available: False, used: False")
        pl_logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        text = stream.getvalue()
        assert text.count("GPU available") == 1
        assert "Tip" not in text
    finally:
        root.handlers[:], level, parent.handlers[:], parent.propagate, plevel = saved
        root.setLevel(level)
        parent.setLevel(plevel)


def test_epoch_line_reports_mean_loss_and_throughput(capsys):
    line = EpochLine()
    trainer = SimpleNamespace(world_size=2, is_global_zero=True, current_epoch=0, max_epochs=4)
    line.on_train_epoch_start(trainer, None)
    batch = {"input_ids": torch.zeros(8, 5, dtype=torch.long)}
    for loss in (1.0, 2.0, 3.0):
        line.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, batch, 0)
    line.on_train_epoch_end(trainer, None)
    out = capsys.readouterr().out.strip()
    assert out.startswith("epoch 1/4: loss 2.0000 (mean of 3 steps), ")
    assert "samples/s" in out and out.count("\n") == 0
    assert line._samples == 3 * 8 * 2  # global samples: per-device batch x world size
