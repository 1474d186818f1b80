"""The HCQ-MMT suite end to end on release-format fixtures: `vidbench reproduce` runs the recipes (each its own
process), then the leaderboard shows HCQ (MMT features) rows in the dataset tables beside the paper's numbers,
the reference's pick in tables of their own.

About a minute on 2 busy cores (two fit+test subprocesses, each importing torch and Lightning): the suite
runner's real path, which an in-process call would not exercise.
"""

from __future__ import annotations

import subprocess
import sys

from tests.mmt_fixtures import write_activitynet, write_msrvtt, write_tiny_bert_vocab
from tests.test_hcq_mmt import tiny_mmt

RECIPES = ["hcq-mmt-l7-m32_bert_b128_50e_msrvtt-1ka", "hcq-mmt-l7-m32_bert_b32_50e_activitynet"]


def test_mmt_suite_runs_to_a_leaderboard_with_paper_numbers(tmp_path):
    root = tmp_path / "data"
    write_msrvtt(root / "mmt" / "MSRVTT")
    write_activitynet(root / "mmt" / "activity-net")
    vocab = write_tiny_bert_vocab(tmp_path / "vocab" / "vocab.txt").parent
    suite = tmp_path / "hcq-mmt-fixture.yaml"
    suite.write_text("recipes:\n" + "".join(f"  - {r}\n" for r in RECIPES) + "seeds: [0]\n")
    overrides = [o for o in tiny_mmt(root, vocab, tmp_path / "runs", epochs=1) if not o.startswith("paths.")]
    proc = subprocess.run(
        [sys.executable, "-m", "vidbench.cli", "reproduce", str(suite), *overrides, "eval.efficiency=false"]
        + ["--data-root", str(root), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / "runs").rglob("result.json"))) == len(RECIPES)
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "MMT experts + BERT" in board and "HCQ" in board
    assert "msrvtt · test-1ka · protocol `base`" in board and "activitynet · val_1 · protocol `base`" in board
    assert "`base@best-on-test`" in board  # the oracle pick: its own tables, never a column of the last epoch's
    # the paper's R@1 for HCQ 1k-A (25.9) and ActivityNet (22.19) from results/reference/papers.csv
    assert "25.9 (verified)" in board and "22.2 (verified)" in board


def test_suite_without_mmt_features_skips_hcq_recipes_with_the_folder_to_fill(tmp_path):
    from vidbench.reproduce import preflight
    from vidbench.suites import Suite

    skipped: list[str] = []
    planned = preflight(Suite("x", tuple(RECIPES), (0,)), [f"paths.data_root={tmp_path}"], None, skipped)
    assert planned == [] and len(skipped) == 2
    assert str(tmp_path / "mmt" / "MSRVTT" / "symlinked-feats") in skipped[0]
    assert "MSRVTT.tar.gz" in skipped[0] and "activity-net.tar.gz" in skipped[1]
