"""Result schema, paper reference table and the leaderboard aggregator on fabricated run folders."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from vidbench.results.aggregate import aggregate, format_mean_std, format_report, mean_std
from vidbench.results.reference import load_reference, match_reference
from vidbench.results.schema import (
    METRIC_KEYS,
    ResultError,
    load_result,
    validate_result,
    write_json_atomic,
)

C4C_MEANP = "clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka"
C4C_SEQ = "clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka"
DRL = "drl-wti-cdcr_vitb32_12f_b128_5e_msrvtt-9k_1ka"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics(t2v_r1: float, offset: float = 0.0) -> dict[str, float]:
    """Ten metric keys; R@5/R@10/v2t values move with ``offset`` so the std is known."""
    m = {k: 0.0 for k in METRIC_KEYS}
    m.update(t2v_R1=t2v_r1, t2v_R5=70.0 + offset, t2v_R10=80.0 + offset, t2v_MdR=2.0, t2v_MnR=15.0 + offset)
    m.update(v2t_R1=40.0 + offset, v2t_R5=69.0, v2t_R10=79.0, v2t_MdR=2.0, v2t_MnR=12.0)
    return m


def record(recipe: str, label: str, method: str, seed: int, protocols: dict, efficiency: dict | None) -> dict:
    rec = {
        "schema_version": 1,
        "recipe": recipe,
        "method": method,
        "variant": label,
        "method_label": label,
        "backbone": "ViT-B/32",
        "seed": seed,
        "config_hash": "0" * 64,
        "git_commit": "abc1234",
        "git_dirty": False,
        "dataset": "msrvtt",
        "split": "test-1ka",
        "train_split": "train-9k",
        "caption_policy": "single",
        "num_queries": 1000,
        "num_gallery": 1000,
        "protocols": protocols,
        "data": {"missing_policy": "fail", "skipped_videos": 0, "skipped_ids": [], "manifest": None},
        "env": {"python": "3.11", "torch": "2.13.0", "device": "cpu", "world_size": 1, "precision": "32"},
        "wall_time_s": 12.5,
        "created": "2026-01-02T03:04:05+00:00",
        "paths": {"run_dir": f"runs/{recipe}/seed{seed}", "config": "config.yaml", "logs": "tb"},
    }
    if efficiency is not None:
        rec["efficiency"] = efficiency
    return rec


def efficiency(match_flops: float | None, index_bytes: float | None) -> dict:
    return {
        "params_total": 151_277_313,
        "params_trainable": 151_277_313,
        "text_gflops_per_query": 2.9,
        "video_gflops_per_clip": 52.8,
        "match_flops_per_query": match_flops,
        "index_bytes_per_video": index_bytes,
        "ms_per_query": 2.5,
        "gallery_size": 1000,
        "hardware": "cpu: test (2 cores)",
    }


def write_run(runs: Path, rec: dict) -> Path:
    run_dir = runs / rec["recipe"] / f"seed{rec['seed']}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "tb").mkdir()
    return write_json_atomic(run_dir / "result.json", rec)


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("agg")
    runs = root / "runs"
    for seed, (r1, dsl_r1) in enumerate([(40.0, 45.0), (42.0, 46.0), (44.0, 47.0)]):
        protocols = {
            "base": {"postprocess": "none", "metrics": metrics(r1, offset=seed)},
            "dsl": {"postprocess": "dsl", "metrics": metrics(dsl_r1), "match_flops_per_query": 2_048_000.0},
        }
        write_run(
            runs,
            record(C4C_MEANP, "CLIP4Clip (meanP)", "clip4clip", seed, protocols, efficiency(1_024_000.0, 2048.0)),
        )
    for seed, r1 in enumerate([46.0, 47.0, 48.0]):
        protocols = {
            "base": {"postprocess": "none", "metrics": metrics(r1)},
            "dsl": {"postprocess": "dsl", "metrics": metrics(r1 + 3.0)},
        }
        eff = efficiency(393_216_000.0, 24_576.0)
        write_run(runs, record(DRL, "DRL (WTI+seqTransf+CDCR)", "drl", seed, protocols, eff))
    # single seed, efficiency present but without matching cost or index size
    partial = {"params_total": 151_800_000, "params_trainable": 151_800_000, "match_flops_per_query": None}
    single = record(C4C_SEQ, "CLIP4Clip (seqTransf)", "clip4clip", 0, {"base": {"metrics": metrics(43.5)}}, partial)
    write_run(runs, single)
    broken = runs / "broken" / "seed0"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text('{"schema_version": 1, "recipe": ')
    noproto = record("noproto", "X", "clip4clip", 0, {}, None)
    del noproto["protocols"]
    write_run(runs, noproto)
    return runs, root / "results"


@pytest.fixture(scope="module")
def report(fixture_runs: tuple[Path, Path]):
    runs, out = fixture_runs
    return aggregate(runs, out)


def test_mean_std_formatting() -> None:
    assert format_mean_std(*mean_std([40.0, 42.0, 44.0])) == "42.0 ± 2.0"
    assert format_mean_std(*mean_std([43.5])) == "43.5"
    assert mean_std([1.0, 2.0])[1] == pytest.approx(math.sqrt(0.5))  # ddof=1


def test_protocols_get_separate_tables(report) -> None:
    keys = [(t.key.dataset, t.key.split, t.key.protocol) for t in report.tables]
    assert keys == [("msrvtt", "test-1ka", "base"), ("msrvtt", "test-1ka", "dsl")]
    base, dsl = report.table("msrvtt", "test-1ka", "base"), report.table("msrvtt", "test-1ka", "dsl")
    assert [r.method_label for r in base.rows] == [
        "CLIP4Clip (meanP)",
        "CLIP4Clip (seqTransf)",
        "DRL (WTI+seqTransf+CDCR)",
    ]
    assert [r.method_label for r in dsl.rows] == ["CLIP4Clip (meanP)", "DRL (WTI+seqTransf+CDCR)"]
    assert "46.0 ± 1.0" in dsl.markdown and "46.0 ± 1.0" not in base.markdown
    assert "42.0 ± 2.0" in base.markdown and "42.0 ± 2.0" not in dsl.markdown
    text = report.leaderboard_path.read_text()
    assert "## msrvtt · test-1ka · protocol `base`" in text and "## msrvtt · test-1ka · protocol `dsl`" in text


def test_exact_cells_and_paper_column(report) -> None:
    rows = {r.method_label: r for r in report.table("msrvtt", "test-1ka", "base").rows}
    meanp = rows["CLIP4Clip (meanP)"].cells
    assert meanp["Seeds"] == "3"
    assert meanp["t2v R@1"] == "42.0 ± 2.0"
    assert meanp["t2v R@5"] == "71.0 ± 1.0"  # 70, 71, 72
    assert meanp["t2v MdR"] == "2.0 ± 0.0"
    assert meanp["v2t R@1"] == "41.0 ± 1.0"
    # CLIP4Clip meanP MSRVTT comes from recollection: the tag must say so, Δ too
    assert meanp["Paper t2v R@1"] == "43.1 (UNVERIFIED)"
    assert meanp["Δ R@1"] == "-1.1 (vs UNVERIFIED)"
    assert meanp["Params M (total / trainable)"] == "151.3 / 151.3"
    assert meanp["Match GFLOPs/query"] == "0.00102"
    assert meanp["Bytes/video"] == "2048"
    assert meanp["ms/query @N"] == "2.5 @1000"

    seq = rows["CLIP4Clip (seqTransf)"].cells
    assert (seq["Seeds"], seq["t2v R@1"]) == ("1", "43.5")
    # downgraded to UNVERIFIED in the re-checked papers.csv (its only sources were issue threads)
    assert seq["Paper t2v R@1"] == "44.5 (UNVERIFIED)" and seq["Δ R@1"] == "-1.0 (vs UNVERIFIED)"
    assert seq["Match GFLOPs/query"] == "—" and seq["ms/query @N"] == "—"

    drl = rows["DRL (WTI+seqTransf+CDCR)"].cells
    assert drl["t2v R@1"] == "47.0 ± 1.0"
    assert drl["Paper t2v R@1"] == "47.6 (verified)" and drl["Δ R@1"] == "-0.6"

    dsl = {r.method_label: r.cells for r in report.table("msrvtt", "test-1ka", "dsl").rows}
    assert dsl["CLIP4Clip (meanP)"]["Match GFLOPs/query"] == "0.00205"  # protocol override wins
    assert dsl["CLIP4Clip (meanP)"]["Paper t2v R@1"] == "—"  # no paper row for this protocol


def test_run_links_only_where_they_travel(report, fixture_runs, tmp_path) -> None:
    from vidbench.results.links import dead_links

    # a tmp folder is no git work tree: nothing says runs/ will be kept, so no run links at all
    cell = {r.method_label: r for r in report.table("msrvtt", "test-1ka", "base").rows}["CLIP4Clip (meanP)"]
    assert cell.cells["Runs"] == "s0 · s1 · s2"
    assert "[clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka](" in cell.cells["Recipe"]  # the recipe file
    assert dead_links(report.leaderboard_path.read_text(), report.out_dir) == []
    # asked for explicitly, run links are written and resolve
    runs, _ = fixture_runs
    linked = aggregate(runs, tmp_path / "linked", link_runs=True)
    runs_cell = {r.method_label: r for r in linked.table("msrvtt", "test-1ka", "base").rows}["CLIP4Clip (meanP)"]
    text = runs_cell.cells["Runs"]
    assert text.count("[config]") == 3 and text.count("[logs]") == 3
    target = text.split("[config](")[1].split(")")[0]
    assert not os.path.isabs(target) and (linked.out_dir / target).resolve().is_file()
    assert dead_links(linked.leaderboard_path.read_text(), linked.out_dir) == []


def test_skipped_files_are_reported(report) -> None:
    assert report.n_files == 9 and len(report.runs) == 7
    reasons = {s.path.parent.parent.name: " ".join(s.reasons) for s in report.skipped}
    assert set(reasons) == {"broken", "noproto"}
    assert "not valid JSON" in reasons["broken"]
    assert "missing required field 'protocols'" in reasons["noproto"]
    text = report.leaderboard_path.read_text()
    section = text.split("## Skipped result files", 1)[1]
    assert "broken/seed0/result.json" in section and "not valid JSON" in section
    assert "noproto/seed0/result.json" in section and "'protocols'" in section
    summary = format_report(report)
    assert "7 valid, 2 skipped" in summary and "noproto" in summary


def test_results_csv(report) -> None:
    df = pd.read_csv(report.csv_path)
    assert len(df) == 7
    assert {
        "base.t2v_R1",
        "dsl.t2v_R1",
        "efficiency.match_flops_per_query",
        "dsl.match_flops_per_query",
    } <= set(df)
    single = df[df["recipe"] == C4C_SEQ].iloc[0]
    assert single["base.t2v_R1"] == 43.5 and math.isnan(single["dsl.t2v_R1"])
    assert not list(report.csv_path.parent.glob(".*.tmp"))


def test_plots_written_and_omissions_noted(report) -> None:
    names = sorted(p.name for p in report.plots)
    assert names == [
        "msrvtt_test-1ka_accuracy_vs_match_flops.png",
        "msrvtt_test-1ka_r1_vs_index_bytes.png",
        "papers_msrvtt_test-1ka_r1_vs_match_flops.png",
    ]
    for p in report.plots:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1024
    assert any("CLIP4Clip (seqTransf)" in o and "match_flops_per_query" in o for o in report.plot_omissions)


def test_validate_result_names_problems() -> None:
    good = record(C4C_MEANP, "CLIP4Clip (meanP)", "clip4clip", 0, {"base": {"metrics": metrics(40.0)}}, None)
    assert validate_result(good, "r.json") == []
    bad = json.loads(json.dumps(good))
    bad["seed"] = True
    del bad["protocols"]["base"]["metrics"]["v2t_MnR"]
    bad["protocols"]["base"]["metrics"]["t2v_R1"] = float("nan")
    bad["efficiency"] = {"params_total": 1.5}
    problems = validate_result(bad, "r.json")
    assert all(p.startswith("r.json: ") for p in problems)
    joined = "\n".join(problems)
    for needle in ("'seed' must be an integer", "v2t_MnR", "t2v_R1' must be a finite", "params_total"):
        assert needle in joined
    assert validate_result({**good, "schema_version": 2}, "r.json") == [
        "r.json: unsupported schema_version 2; this vidbench reads 1"
    ]


def test_load_and_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "run" / "result.json"
    rec = record(C4C_MEANP, "CLIP4Clip (meanP)", "clip4clip", 0, {"base": {"metrics": metrics(40.0)}}, None)
    write_json_atomic(path, rec)
    assert load_result(path) == rec
    with pytest.raises(ResultError, match="cannot serialise"):
        write_json_atomic(path, {"x": float("nan")})
    assert load_result(path) == rec  # the failed write left the old file intact
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
    path.write_text("{")
    with pytest.raises(ResultError, match=r"result\.json: not valid JSON"):
        load_result(path)
    path.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(ResultError, match="missing required field 'recipe'"):
        load_result(path)


def test_reference_table_tags_and_matching() -> None:
    ref = load_reference()
    assert set(ref["source_tag"]) == {"verified", "unverified"}
    recollection_only = ref["source"].str.fullmatch(r"\[M\] recollection")
    assert (ref.loc[recollection_only, "R1_tag"] == "unverified").all()
    assert (ref.loc[ref["source"].str.startswith("[R]"), "source_tag"] == "verified").all()
    # a row is never more verified than its R@1 cell
    assert not ((ref["source_tag"] == "verified") & (ref["R1_tag"] == "unverified")).any()
    key = dict(backbone="ViT-B/32", dataset="msrvtt", split="test-1ka", protocol="base")
    drl = match_reference(ref, method_label="DRL (WTI+seqTransf+CDCR)", direction="t2v", **key)
    assert drl is not None and drl["R1"] == 47.6 and drl["source"].startswith("[R] foolwood/DRL")
    v2t = match_reference(ref, method_label="DRL (TI+seqTransf)", direction="v2t", **key)
    assert v2t is not None and v2t["R1"] == 42.6
    eercf = match_reference(ref, method_label="EERCF", direction="t2v", **{**key, "protocol": "rerank@50"})
    assert eercf is not None and math.isnan(eercf["R1"]) and "NOT FOUND" in eercf["note"]
    assert (
        match_reference(ref, method_label="CLIP4Clip (meanP)", direction="t2v", **{**key, "backbone": "tiny"}) is None
    )


def test_duplicate_seed_is_counted_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    rec = record(C4C_MEANP, "CLIP4Clip (meanP)", "clip4clip", 0, {"base": {"metrics": metrics(40.0)}}, None)
    write_run(runs, rec)
    copy = runs / "copied" / "seed0"
    copy.mkdir(parents=True)
    write_json_atomic(copy / "result.json", {**rec, "protocols": {"base": {"metrics": metrics(99.0)}}})
    empty_reference = load_reference().iloc[0:0]
    rep = aggregate(runs, tmp_path / "out", reference=empty_reference)
    (row,) = rep.table("msrvtt", "test-1ka", "base").rows
    assert row.cells["Seeds"] == "1" and row.cells["Paper t2v R@1"] == "—"
    assert len(rep.duplicates) == 1 and "copied/seed0/result.json repeats seed 0" in rep.duplicates[0]
    df = pd.read_csv(rep.csv_path)
    assert len(df) == 2 and df["duplicate"].tolist().count(True) == 1
    # no cost figures without costs; the papers-only figure needs no runs (and no paper rows here: none)
    assert rep.plots == [] and len(rep.plot_omissions) == 2


def test_atomic_writes_leave_readable_files(tmp_path):
    import os
    import stat

    path = write_json_atomic(tmp_path / "r.json", {"a": 1})
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IRUSR  # not mkstemp's 0600
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary left behind
