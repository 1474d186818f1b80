"""End to end on CPU: fit then test the tiny recipes on the synthetic benchmark; resume is exact."""

from __future__ import annotations

import json

import pytest
import torch

from vidbench import runner
from vidbench.cli import main
from vidbench.config import compose, run_dir


def _overrides(synth, tmp_path, extra=()):
    return [f"paths.synth_root={synth}", f"paths.runs_dir={tmp_path / 'runs'}", *extra]


def test_resume_after_an_epoch_matches_uninterrupted_run(small_synth, tmp_path):
    common = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=6",
        "data.batch_size=8",
        "data.num_workers=0",
        "eval.efficiency=false",
    ]
    straight = compose("clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt", _overrides(small_synth, tmp_path / "a", common))
    runner.fit(straight)
    expected = runner.test(straight)

    cut = compose(
        "clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt",
        _overrides(small_synth, tmp_path / "b", [*common, "trainer.stop_after_epochs=1"]),
    )
    runner.fit(cut)
    ckpt = torch.load(run_dir(cut) / "last.ckpt", weights_only=False)
    done = ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"]
    assert done == 1 and ckpt["global_step"] > 0  # stopped after the first epoch
    first_steps = ckpt["global_step"]
    resumed = compose(
        "clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt", _overrides(small_synth, tmp_path / "b", common)
    )
    runner.fit(resumed)  # same command again: resumes from last.ckpt
    final = torch.load(run_dir(resumed) / "last.ckpt", weights_only=False)
    assert final["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 2
    assert final["global_step"] == 2 * first_steps  # no epoch repeated or lost
    got = runner.test(resumed)
    assert got["protocols"]["base"]["metrics"] == expected["protocols"]["base"]["metrics"]


TINY_RECIPES = {
    "clip4clip-meanp_tiny_8f_b64_synth-msrvtt": "dense",
    "clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt": "dense",
    "drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt": "tokenwise",
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(TINY_RECIPES))
def test_tiny_recipe_learns_synthetic_benchmark(recipe, full_synth, tmp_path, capsys):
    args = _overrides(full_synth, tmp_path)
    assert main(["fit", recipe, *args]) == 0
    assert main(["test", recipe, *args]) == 0
    out = capsys.readouterr().out
    assert "t2v R@1" in out
    cfg = compose(recipe, args)
    record = json.loads((run_dir(cfg) / "result.json").read_text())
    chance = 100.0 / record["num_gallery"]
    r1 = record["protocols"]["base"]["metrics"]["t2v_R1"]
    assert r1 >= 5 * chance, f"{recipe}: t2v R@1 {r1:.1f} < 5x chance ({chance:.1f})"
    assert record["num_gallery"] == 100 and record["caption_policy"] == "single"
    assert record["protocols"]["dsl"]["postprocess"] == "dsl"
    eff = record["efficiency"]
    assert eff["params_total"] > 0 and eff["text_gflops_per_query"] > 0 and eff["ms_per_query"] > 0
    if TINY_RECIPES[recipe] == "dense":
        assert eff["match_flops_per_query"] == 2 * 100 * 64  # one 64-d dot product per gallery video
    else:  # token-wise: 2 * D * L_t * L_v per video, on valid positions
        assert 2 * 100 * 64 * 2 * 2 < eff["match_flops_per_query"] <= 2 * 100 * 64 * 24 * 8
    for key in ("config_hash", "git_commit", "env", "wall_time_s", "data"):
        assert key in record
