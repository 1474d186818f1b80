"""End to end on the small synthetic benchmark: a recipe that trains on its test videos is flagged, the
post-processing families and summary scores reach result.json, zero-shot rows get their own group, and the
leaderboard shows the new rows, tags, flags and groups."""

from __future__ import annotations

import csv
import json

import pytest

from vidbench import runner
from vidbench.config import compose, run_dir
from vidbench.results.aggregate import aggregate

RECIPE = "clip4clip-meanp_tiny_8f_b64_synth-msrvtt"


def _args(synth, runs, extra=()):
    return [
        f"paths.synth_root={synth}",
        f"paths.runs_dir={runs}",
        "data.max_frames=4",
        "data.num_workers=0",
        "eval.sinkhorn=true",
        "eval.qbnorm=true",
        "eval.qbnorm_bank=8",
        *extra,
    ]


def test_leaky_recipe_flagged_and_new_rows_in_the_leaderboard(small_synth, tmp_path):
    runs = tmp_path / "runs"
    leak = compose(RECIPE, _args(small_synth, runs, ["data.train_split=test-1ka", "data.batch_size=16",
                                                     "trainer.max_epochs=1"]))  # fmt: skip
    runner.fit(leak)
    rec = runner.test(leak)
    ov = rec["controls"]["overlap"]
    assert ov["status"] == "fail" and ov["shared_ids"] == rec["num_gallery"] == 16
    counts = rec["controls"]["counts"]
    assert counts["status"] == "no-standard" and counts["note"] == "synthetic data"
    shuffled = rec["controls"]["shuffled_captions"]
    assert shuffled["chance_R1"] == pytest.approx(100 / 16) and shuffled["protocol"] == "base"
    assert rec["zero_shot"] is False
    protos = rec["protocols"]
    assert {"base", "dsl", "sinkhorn", "qbnorm"} <= set(protos)
    for name in ("base", "dsl", "sinkhorn", "qbnorm"):
        assert {"RSum", "t2v_nDCG10", "t2v_mAP", "v2t_nDCG10", "v2t_mAP"} <= set(protos[name]["metrics"])
    base_flops = protos["base"]["match_flops_per_query"]
    assert protos["sinkhorn"]["match_flops_per_query"] == base_flops + 16 * 121
    cost = protos["qbnorm"]["postprocess_cost"]
    assert cost["bank_size"] == 8 and cost["bank_seconds"] > 0
    assert protos["qbnorm"]["ms_per_query"] > rec["efficiency"]["ms_per_query"]
    assert protos["qbnorm"]["index_bytes_per_video"] == protos["base"]["index_bytes_per_video"] + 5

    clean = compose(RECIPE, _args(small_synth, runs))
    zs = runner.test(clean, ckpt=None)  # untrained: its own run directory, tagged
    assert zs["zero_shot"] is True and zs["recipe"] == f"{RECIPE}+zero-shot"
    assert zs["controls"]["overlap"]["status"] == "not-applicable"
    assert (run_dir(leak).parent.parent / f"{RECIPE}+zero-shot" / "seed0" / "result.json").exists()

    board = aggregate(runs, tmp_path / "out")
    text = board.leaderboard_path.read_text()
    head = text.split("# Full tables")[0]
    assert "⚠ train/test overlap" in head and "Control failed" in head and "16 test video ids" in head
    assert "**Zero-shot:" in head and "(zero-shot)" in head
    apart = head.split("**Set apart")[1]
    assert "`qbnorm` (uses training captions)" in apart and "`sinkhorn` (transductive)" in apart
    assert "Query and gallery counts (all rows): synthetic data." in head
    assert "QB-Norm with the dynamic inverted softmax" in text and "Sinkhorn normalisation" in text
    assert "Summary scores (R@sum" in text and "FAIL: train/test overlap" in text
    with open(board.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    leak_row = next(r for r in rows if r["recipe"] == RECIPE)
    assert leak_row["controls.overlap.status"] == "fail" and leak_row["zero_shot"] == "False"
    assert float(leak_row["qbnorm.RSum"]) >= 0 and leak_row["sinkhorn.t2v_nDCG10"]
    assert json.loads((run_dir(leak) / "result.json").read_text())["controls"]["overlap"]["status"] == "fail"


@pytest.mark.rehearsal
def test_shuffled_control_of_a_trained_model_falls_to_chance(small_synth, tmp_path):
    """Memorise the 16 test videos (trained on them on purpose), then: real R@1 far above chance, shuffled at it."""
    cfg = compose(
        RECIPE,
        [
            f"paths.synth_root={small_synth}",
            f"paths.runs_dir={tmp_path / 'runs'}",
            "data.max_frames=4",
            "data.num_workers=0",
            "data.train_split=test-1ka",
            "data.declare_overlap=true",
            "data.batch_size=4",
            "optim.lr=5e-3",
            "optim.schedule=constant",
            "optim.warmup_proportion=0",
            "trainer.max_epochs=30",
            "eval.efficiency=false",
        ],
    )
    runner.fit(cfg)
    rec = runner.test(cfg)
    c = rec["controls"]
    assert c["overlap"]["status"] == "declared"
    real, shuffled = rec["protocols"]["base"]["metrics"]["t2v_R1"], c["shuffled_captions"]
    assert real > shuffled["chance_R1"] + shuffled["tolerance"], f"the model did not learn: R@1 {real}"
    assert shuffled["status"] == "pass" and shuffled["t2v_R1"] <= shuffled["chance_R1"] + shuffled["tolerance"]
