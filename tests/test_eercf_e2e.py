"""End to end on CPU: the tiny EERCF recipe learns the synthetic benchmark, and result.json holds the
single-stage and two-stage protocols with their matching cost and index bytes per video."""

from __future__ import annotations

import json

import pytest

from vidbench.cli import main
from vidbench.config import compose, run_dir
from vidbench.results.schema import result_problems

RECIPE = "eercf_tiny_8f_b64_synth-msrvtt"


@pytest.mark.slow
def test_tiny_eercf_learns_and_reports_both_protocols(full_synth, tmp_path, capsys):
    args = [f"paths.synth_root={full_synth}", f"paths.runs_dir={tmp_path / 'runs'}"]
    assert main(["fit", RECIPE, *args]) == 0
    assert main(["test", RECIPE, *args]) == 0
    assert "t2v R@1" in capsys.readouterr().out
    cfg = compose(RECIPE, args)
    record = json.loads((run_dir(cfg) / "result.json").read_text())
    assert result_problems(record) == []
    assert record["method"] == "eercf" and record["num_gallery"] == 100
    k, n, dim, frames, patches = cfg.method.rerank_k, 100, 64, cfg.data.max_frames, 16
    chance = 100.0 / n
    protos = record["protocols"]
    base, rerank, frames_only = protos["base"], protos[f"rerank@{k}"], protos[f"rerank@{k}-frames"]
    for name, entry in (("base", base), (f"rerank@{k}", rerank)):
        r1 = entry["metrics"]["t2v_R1"]
        assert r1 >= 5 * chance, f"{name}: t2v R@1 {r1:.1f} < 5x chance ({chance:.1f})"

    # matching cost: coarse only 2ND; the rerank adds the k candidates' fine scores (counted convention)
    assert base["match_flops_per_query"] == 2 * n * dim
    assert frames_only["match_flops_per_query"] > base["match_flops_per_query"]
    assert rerank["match_flops_per_query"] > frames_only["match_flops_per_query"]
    for entry in (base, rerank, frames_only):
        counted = entry["match_flops_per_query_counted"]
        assert abs(entry["match_flops_per_query"] - counted) <= 0.05 * counted
        assert entry["ms_per_query"] > 0

    # index bytes per video for each choice: coarse; + raw and temporal frames (+ uint8 mask); + patches
    coarse = 4 * dim
    assert base["index_bytes_per_video"] == coarse
    assert frames_only["index_bytes_per_video"] == coarse + 2 * 4 * frames * dim + frames
    assert rerank["index_bytes_per_video"] == frames_only["index_bytes_per_video"] + 4 * frames * patches * dim
    assert record["efficiency"]["match_flops_per_query"] == base["match_flops_per_query"]
