"""Every recipe composes and runs one training step and a test pass, with tiny overrides, on fixture data
written in its dataset's real on-disk format."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY
from vidbench import runner
from vidbench.config import compose, list_recipes, run_dir

# HCQ on the MMT features runs on its own release-format fixtures (tests/test_hcq_mmt.py, tests/test_mmt_suite.py)
RECIPES = [p.stem for p in list_recipes() if p.parent.name != "hcq-mmt"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_one_step(recipe, fixture_data_root, tmp_path):
    cfg = compose(
        recipe,
        [
            *TINY,
            f"paths.data_root={fixture_data_root}",
            f"paths.synth_root={fixture_data_root}",
            f"paths.runs_dir={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.missing_policy_test=skip",
            "eval.efficiency=false",
        ],
    )
    out = runner.fit(cfg)
    assert (out / "last.ckpt").exists() and (out / "config.yaml").exists()
    record = runner.test(cfg)
    saved = json.loads((run_dir(cfg) / "result.json").read_text())
    assert saved["recipe"] == recipe and saved["dataset"] == cfg.data.dataset
    base = saved["protocols"]["base"]["metrics"]
    assert 0.0 <= base["t2v_R1"] <= 100.0 and base["t2v_MnR"] >= 1.0
    assert saved["num_queries"] == record["num_queries"] >= saved["num_gallery"] >= 1
    # every fixture has one annotated video without a file; when it is in the test split it is counted
    assert saved["data"]["missing_policy"] == "skip"
    assert saved["data"]["num_annotated_videos"] == saved["num_gallery"] + saved["data"]["skipped_videos"]
