"""End to end on CPU: the tiny HCQ recipe learns the synthetic benchmark with retrieval on codes."""

from __future__ import annotations

import json

import faiss
import pytest

from vidbench.cli import main
from vidbench.config import compose, run_dir
from vidbench.eval.metrics import MMT_METRIC_KEYS

RECIPE = "hcq-clip_tiny_8f_b64_synth-msrvtt"


@pytest.mark.slow
def test_tiny_hcq_recipe_learns_with_code_based_retrieval(full_synth, tmp_path):
    args = [f"paths.synth_root={full_synth}", f"paths.runs_dir={tmp_path / 'runs'}"]
    assert main(["fit", RECIPE, *args]) == 0
    assert main(["test", RECIPE, *args]) == 0
    cfg = compose(RECIPE, args)
    record = json.loads((run_dir(cfg) / "result.json").read_text())
    assert record["method"] == "hcq" and record["variant"] == "HCQ-on-CLIP"
    protocols = record["protocols"]
    levels, m = cfg.method.fine_levels + 1, cfg.method.num_subspaces

    # the main protocol is retrieval on uint8 codes: (L + 1) * M bytes per video
    base = protocols["base"]
    chance = 100.0 / record["num_gallery"]
    r1 = base["metrics"]["t2v_R1"]
    assert r1 >= 5 * chance, f"code-based t2v R@1 {r1:.1f} < 5x chance ({chance:.1f})"
    assert base["index_bytes_per_video"] == levels * m == 32
    assert base["match_flops_per_query"] == 2 * levels * 32 * 64 + levels * m * 32 + 100 * levels * m
    eff = record["efficiency"]
    assert eff["index_bytes_per_video"] == 32 and eff["ms_per_query"] > 0

    # HCQ's own metric family (MMT's rules) sits beside the CLIP4Clip-rule metrics, in its own field
    mmt = base["metrics_mmt"]
    assert set(mmt) == set(MMT_METRIC_KEYS) and "t2v_R50" not in base["metrics"]
    assert mmt["t2v_GeoMean"] == pytest.approx((mmt["t2v_R1"] * mmt["t2v_R5"] * mmt["t2v_R10"]) ** (1 / 3))
    assert all("metrics_mmt" in protocols[name] for name in ("v2t-codes", "dense", "faiss"))

    # the unquantised model is reported next to it, at 64x the storage
    assert protocols["dense"]["index_bytes_per_video"] == levels * 64 * 4
    assert protocols["dense"]["metrics"]["t2v_R1"] >= 5 * chance
    assert "v2t_R1" in protocols["v2t-codes"]["metrics"]

    # FAISS over the exported codes ranks exactly like our ADC
    assert protocols["faiss"]["metrics"] == base["metrics"]
    index = faiss.read_index(base["faiss_index"])
    assert index.ntotal == record["num_gallery"]
