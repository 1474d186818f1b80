"""`make reproduce-msrvtt`: stops at once without data; with MSRVTT-layout fixtures and the tiny backbone it
runs the whole suite to a leaderboard."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import TINY
from vidbench.suites import load_suite

REPO = Path(__file__).resolve().parent.parent


def _make(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATA_ROOT", "CLIP", "SEEDS", "GPUS", "ARGS"}}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_reproduce_without_data_stops_with_a_clear_message():
    start = time.perf_counter()
    proc = _make("reproduce-msrvtt", timeout=120)
    assert proc.returncode != 0
    assert time.perf_counter() - start < 30
    assert "DATA_ROOT" in proc.stderr and "make demo" in proc.stderr


def test_reproduce_missing_folder_names_files_and_weights(tmp_path):
    proc = _make("reproduce-msrvtt", f"DATA_ROOT={tmp_path}", timeout=300)
    assert proc.returncode != 0
    assert "MSRVTT_JSFUSION_test.csv" in proc.stderr and "clip-vit-base-patch32" in proc.stderr
    assert "make demo" in proc.stderr


def test_reproduce_msrvtt_on_fixture_data_runs_to_a_leaderboard(fixture_data_root, tmp_path):
    skip_tiny = [o for o in TINY if not o.startswith("model.")]
    extra = ["data.missing_policy_test=skip", "eval.efficiency=false", f"data.cache_dir={tmp_path}/c"]
    args = " ".join([*skip_tiny, *extra])
    proc = _make(
        "reproduce-msrvtt",
        f"DATA_ROOT={fixture_data_root}",
        "CLIP=tiny",
        "SEEDS=0",
        f"RUNS={tmp_path / 'runs'}",
        f"OUT={tmp_path / 'results'}",
        f"ARGS={args}",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suite = load_suite("msrvtt")
    results = sorted((tmp_path / "runs").rglob("result.json"))
    mmt = [r for r in suite.recipes if r.startswith("hcq-mmt")]
    assert mmt and len(results) == len(suite.recipes) - len(mmt)  # the video methods ran
    # no MMT features under DATA_ROOT/mmt/: one line per skipped HCQ-MMT recipe naming the folder to fill
    skips = [line for line in proc.stdout.splitlines() if line.startswith("skipped hcq-mmt")]
    assert len(skips) == len(mmt) and all(str(fixture_data_root / "mmt" / "MSRVTT") in line for line in skips)
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "msrvtt" in board and "CLIP4Clip (meanP)" in board and "DRL (WTI+seqTransf+CDCR)" in board
    assert (tmp_path / "results" / "results.csv").exists()
    assert any((tmp_path / "results" / "plots").glob("*.png"))


def test_in_process_suite_runs_every_recipe_and_seed(small_synth, tmp_path, capsys):
    """What `make demo` runs: several recipes x seeds in one process (tiny data, 2 steps each)."""
    from vidbench.reproduce import run_suite
    from vidbench.suites import Suite

    suite = Suite(
        "t", ("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", "drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt"), (0, 1)
    )
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.batch_size=8", "data.num_workers=0"]
    overrides = [f"paths.synth_root={small_synth}", *short, "eval.efficiency=false"]
    rows = run_suite(suite, overrides=overrides, runs_dir=str(tmp_path / "runs"), in_process=True)
    assert [(r, s, status) for r, s, status in rows] == [(r, s, "ok") for r in suite.recipes for s in (0, 1)]
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 4
    out = capsys.readouterr().out
    assert out.count("epoch 1/1: loss") == 4 and "[4/4]" in out
