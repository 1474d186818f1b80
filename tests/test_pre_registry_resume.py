"""A checkpoint written before methods registered themselves (commit cb9bd7a) still resumes and tests.

``tests/golden/pre_registry_clip4clip_tiny.ckpt`` (335 KB) was written by that commit's code: the recipe
clip4clip-meanp_tiny_8f_b64_synth-msrvtt with the overrides in ``OVERRIDES`` below, ``trainer.max_epochs=2``
and ``trainer.stop_after_epochs=1`` (so it stops after epoch 1 of 2), on ``generate(seed=0, n_train=8, n_test=4,
n_msvd_train=2, n_msvd_test=2, seconds=(3, 3))``, with the tiny CLIP shrunk to width 16 and one layer (``SMALL``)
to keep the file small.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

import vidbench.models.clip as clip_module
from vidbench import runner
from vidbench.config import compose, run_dir
from vidbench.data.synthetic import generate

GOLDEN = Path(__file__).resolve().parent / "golden" / "pre_registry_clip4clip_tiny.ckpt"
SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
OVERRIDES = [
    "model.clip=tiny",
    "model.tokenizer=tiny",
    "model.freeze_layer_num=1",
    "data.batch_size=2",
    "data.eval_batch_size=4",
    "data.max_frames=2",
    "data.max_words=8",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=1",
    "trainer.cpu_threads=1",
]


def test_a_checkpoint_from_before_the_registry_resumes_and_tests(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(clip_module, "TINY_TEXT_CONFIG", {**clip_module.TINY_TEXT_CONFIG, **SMALL})
    monkeypatch.setattr(clip_module, "TINY_VISION_CONFIG", {**clip_module.TINY_VISION_CONFIG, **SMALL})
    monkeypatch.setattr(clip_module, "TINY_PROJECTION_DIM", 16)
    synth = tmp_path / "synth"
    generate(synth, seed=0, n_train=8, n_test=4, n_msvd_train=2, n_msvd_test=2, seconds=(3, 3), progress=False)
    cfg = compose(
        "clip4clip-meanp_tiny_8f_b64_synth-msrvtt",
        [*OVERRIDES, f"paths.synth_root={synth}", f"paths.runs_dir={tmp_path / 'runs'}"],
    )
    out = run_dir(cfg)
    out.mkdir(parents=True)
    shutil.copy(GOLDEN, out / "last.ckpt")
    old = torch.load(GOLDEN, map_location="cpu", weights_only=False)
    assert (old["epoch"], old["global_step"]) == (1, 1)  # epoch 1 of 2 done

    with caplog.at_level(logging.INFO):
        runner.fit(cfg)
    assert "resumed from" in caplog.text and "at epoch 1, global step 1" in caplog.text
    new = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)
    assert new["global_step"] == 2 and new["epoch"] >= old["epoch"]
    assert new["state_dict"].keys() == old["state_dict"].keys()
    frozen = "clip.model.text_model.embeddings.token_embedding.weight"  # below freeze_layer_num: never trained
    assert torch.equal(new["state_dict"][frozen], old["state_dict"][frozen])
    assert not torch.equal(new["state_dict"]["clip.model.logit_scale"], torch.tensor(0.0))

    record = runner.test(cfg)
    assert record["method"] == "clip4clip" and record["checkpoint"]["origin"] == "vidbench"
    assert 0.0 <= record["protocols"]["base"]["metrics"]["t2v_R1"] <= 100.0


@pytest.mark.parametrize("name", ["clip4clip"])
def test_the_old_checkpoint_hyperparameters_compose_under_the_registry(name):
    old = torch.load(GOLDEN, map_location="cpu", weights_only=False)
    method = old["hyper_parameters"]["config"]["method"]
    assert method["name"] == name
    from vidbench.methods.registry import method_entry

    schema = method_entry(name).schema
    assert set(method) <= {f for f in schema.__dataclass_fields__}
