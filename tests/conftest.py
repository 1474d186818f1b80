"""Shared fixtures: the synthetic benchmark and per-format dataset folders, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dataset_fixtures import WRITERS
from vidbench.data.synthetic import generate

# Tiny overrides that make any recipe run on CPU in seconds on fixture data.
TINY = [
    "model.clip=tiny",
    "model.tokenizer=tiny",
    "model.freeze_layer_num=-1",
    "data.batch_size=2",
    "data.eval_batch_size=4",
    "data.max_frames=4",
    "data.max_words=16",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32-true",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
]


@pytest.fixture(scope="session", autouse=True)
def _cache_root(tmp_path_factory):
    """Frame caches and manifests of the whole session go to a temporary folder, never ~/.cache/vidbench."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDBENCH_CACHE", str(tmp_path_factory.mktemp("vidbench_cache")))
        yield


@pytest.fixture(scope="session")
def fixture_data_root(tmp_path_factory) -> Path:
    """<root>/<dataset>/ in every dataset's real format (each with one deliberately missing video)."""
    root = tmp_path_factory.mktemp("datasets")
    for name, writer in WRITERS.items():
        writer(root / name)
    return root


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory) -> Path:
    """A small synthetic benchmark (MSRVTT and MSVD layouts) for resume and pipeline tests."""
    out = tmp_path_factory.mktemp("synth_small")
    generate(out, seed=0, n_train=48, n_test=16, n_msvd_train=12, n_msvd_test=8, seconds=(4, 6), progress=False)
    return out


@pytest.fixture(scope="session")
def full_synth(tmp_path_factory) -> Path:
    """The default synthetic benchmark, as `make demo` uses it."""
    out = tmp_path_factory.mktemp("synth_full")
    generate(out, seed=0, progress=False)
    return out
