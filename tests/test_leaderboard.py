"""The headline table, the combined figure's data, links and protocol sentences, on fabricated result files.

The fabricated runs cover what other branches add to result.json (contract 1): ``metrics_mmt``, an
``@best-on-test`` protocol with ``selection``, an imported checkpoint (``checkpoint.origin``), caption
truncation in ``data.text`` and HCQ on MMT features, besides several methods, protocols and seeds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from vidbench.results.aggregate import aggregate
from vidbench.results.figures import papers_marks
from vidbench.results.headline import COLUMNS as HEADLINE_COLUMNS
from vidbench.results.links import dead_links
from vidbench.results.paper_costs import paper_points
from vidbench.results.plots import FigPoint, pareto_frontier
from vidbench.results.protocols import describe_protocol
from vidbench.results.reference import load_reference
from vidbench.results.schema import METRIC_KEYS, MMT_METRIC_KEYS, result_problems, write_json_atomic

C4C = "clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka"
DRL = "drl-wti-seqtransf-cdcr_vitb32_12f_b128_5e_msrvtt-9k_1ka"
EERCF = "eercf_vitb32_12f_b240_5e_msrvtt-9k_1ka"
HCQ_MMT = "hcq-mmt_msrvtt-9k_1ka"


def metrics(r1: float, r5: float | None = None, r10: float | None = None) -> dict[str, float]:
    m = {k: 1.0 for k in METRIC_KEYS}
    m.update(t2v_R1=r1, t2v_R5=r5 if r5 is not None else r1 + 20, t2v_R10=r10 if r10 is not None else r1 + 30)
    m.update(t2v_MdR=2.0, v2t_R1=r1 - 1)
    return m


def proto(r1: float, flops: float, nbytes: float, **extra) -> dict:
    return {"postprocess": "none", "metrics": metrics(r1), "match_flops_per_query": flops,
            "index_bytes_per_video": nbytes, **extra}  # fmt: skip


def record(recipe: str, method: str, label: str, seed: int, protocols: dict, **extra) -> dict:
    rec = {
        "schema_version": 1,
        "recipe": recipe,
        "method": method,
        "variant": label,
        "method_label": label,
        "backbone": "ViT-B/32",
        "seed": seed,
        "dataset": "msrvtt",
        "split": "test-1ka",
        "caption_policy": "single",
        "num_queries": 1000,
        "num_gallery": 1000,
        "protocols": protocols,
        "efficiency": {
            "match_flops_per_query": 1.0e6,
            "index_bytes_per_video": 2048.0,
            "ms_per_query": 1.5,
            "gallery_size": 1000,
            "hardware": "cpu: test",
        },  # fmt: skip
        "paths": {"run_dir": f"runs/{recipe}/seed{seed}", "config": "config.yaml", "logs": "tb"},
    }
    rec.update(extra)
    return rec


def write(runs: Path, rec: dict, folder: str | None = None) -> None:
    run_dir = runs / (folder or rec["recipe"]) / f"seed{rec['seed']}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("x: 1\n")
    assert result_problems(rec) == [], result_problems(rec)
    write_json_atomic(run_dir / "result.json", rec)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    runs = root / "runs"
    text_report = {"test-1ka": {"captions": 1000, "captions_truncated": 7, "tokens_dropped": 31,
                                "longest_tokens": 45, "max_words": 32, "ids_without_captions": 0}}  # fmt: skip
    for seed, r1 in enumerate((42.0, 44.0, 46.0)):  # CLIP4Clip: 3 seeds, base + dsl + an oracle checkpoint
        protocols = {
            "base": proto(r1, 1.024e6, 2048.0),
            "dsl": {**proto(r1 + 3, 1.024e6, 2048.0), "postprocess": "dsl"},
            "base@best-on-test": proto(r1 + 1, 1.024e6, 2048.0, selection="best-on-test"),
        }
        write(runs, record(C4C, "clip4clip", "CLIP4Clip (meanP)", seed, protocols, data={"text": text_report}))
    for seed, r1 in enumerate((48.0, 49.0)):  # DRL: 2 seeds, expensive
        write(runs, record(DRL, "drl", "DRL (WTI+seqTransf+CDCR)", seed, {"base": proto(r1, 3.9e8, 24576.0)}))
    # EERCF: base (coarse) + rerank@50 (a different procedure, its own row) - one seed
    eercf = {"base": proto(43.0, 1.024e6, 2048.0), "rerank@50": proto(47.5, 3.2e7, 600_000.0)}
    write(runs, record(EERCF, "eercf", "EERCF", 0, eercf))
    # the same EERCF recipe evaluated from the reference's checkpoint: a separate, marked row
    imported = record(EERCF, "eercf", "EERCF", 0, {"base": proto(44.0, 1.024e6, 2048.0)},
                      checkpoint={"origin": "eercf", "path": "/w/eercf.pth", "sha256": "ab" * 32})  # fmt: skip
    write(runs, imported, folder="eercf-imported")
    # HCQ on MMT features: codes (base), dense, faiss (same as base), and the MMT metric family
    mmt = {k: 10.0 for k in MMT_METRIC_KEYS} | {"t2v_R1": 25.5, "t2v_GeoMean": 41.0}
    hcq = {
        "base": proto(25.5, 2.4e6, 256.0, metrics_mmt=mmt),
        "dense": proto(27.0, 8.2e6, 16384.0),
        "faiss": proto(25.5, 2.4e6, 256.0),
    }
    hcq_rec = record(HCQ_MMT, "hcq", "HCQ", 0, hcq, variant="HCQ-MMT", backbone="MMT experts + BERT")
    write(runs, hcq_rec)
    return aggregate(runs, root / "results")


def test_headline_rows_and_order(board):
    (h,) = board.headlines
    main = [(i.row.display_label, i.protocol) for i in h.main]
    assert main == [
        ("CLIP4Clip (meanP)", "base"),
        ("DRL (WTI+seqTransf+CDCR)", "base"),
        ("EERCF", "base"),
        ("EERCF", "rerank@50"),
        ("EERCF [imported eercf checkpoint]", "base"),
        ("HCQ", "base"),
        ("HCQ", "dense"),
    ]  # faiss repeats HCQ's base procedure: full tables only
    apart = [(i.row.display_label, i.protocol) for i in h.apart]
    assert apart == [("CLIP4Clip (meanP)", "base@best-on-test"), ("CLIP4Clip (meanP)", "dsl")]


def test_headline_cells(board):
    (h,) = board.headlines
    cells = {(i.row.display_label, i.protocol): i.cells for i in h.rows}
    c4c = cells[("CLIP4Clip (meanP)", "base")]
    assert set(c4c) == set(HEADLINE_COLUMNS)
    assert c4c["Method"] == "CLIP4Clip (meanP) · ViT-B/32"  # two backbones in this split: named
    assert (c4c["Seeds"], c4c["t2v R@1"], c4c["t2v R@5"], c4c["v2t R@1"]) == (
        "3",
        "44.0 ± 2.0",
        "64.0 ± 2.0",
        "43.0 ± 2.0",
    )
    assert c4c["Paper R@1"] == "43.1 (UNVERIFIED)" and c4c["Δ R@1"] == "+0.9 (vs UNVERIFIED)"
    assert (c4c["Match FLOPs/query"], c4c["Bytes/video"], c4c["ms/query @N"]) == ("1.02e+06", "2048", "1.5 @1000")
    drl = cells[("DRL (WTI+seqTransf+CDCR)", "base")]
    assert drl["t2v R@1"] == "48.5 ± 0.7" and drl["Paper R@1"] == "47.6 (verified)" and drl["Δ R@1"] == "+0.9"
    rerank = cells[("EERCF", "rerank@50")]
    assert rerank["Match FLOPs/query"] == "3.2e+07" and rerank["Bytes/video"] == "600000"
    assert rerank["Paper R@1"] == "NOT FOUND"
    assert cells[("CLIP4Clip (meanP)", "dsl")]["Protocol"] == "`dsl` (transductive)"
    assert cells[("CLIP4Clip (meanP)", "base@best-on-test")]["Protocol"] == "`base@best-on-test` (oracle checkpoint)"
    assert cells[("HCQ", "base")]["Method"] == "HCQ · MMT experts + BERT"
    text = board.leaderboard_path.read_text()
    head = text.split("# Full tables")[0]
    assert (
        head.index("| CLIP4Clip (meanP) · ViT-B/32 | `base` |")
        < head.index("**Set apart")
        < head.index("`dsl` (transductive)")
    )
    assert "7 of 1000 test captions cut at max_words = 32" in head
    assert "imported" in head and "evaluate a reference repository's checkpoint" in head
    assert "`faiss` (HCQ) serves the same codes and ranking as `base`" in head
    csv = pd.read_csv(board.csv_path)
    hcq_row = csv[csv["recipe"] == HCQ_MMT].iloc[0]
    assert hcq_row["base.mmt.t2v_GeoMean"] == 41.0 and "base.mmt.t2v_GeoMean" not in {"base.t2v_R1"}
    assert set(csv["checkpoint.origin"]) == {"vidbench", "eercf"}
    assert set(csv["base@best-on-test.selection"].dropna()) == {"best-on-test"}
    # CLIP4Clip 44.0 ± 2.0 and DRL 48.5 ± 0.7 are 4.5 apart (> 2.7): separated; nothing else has 2 seeds
    assert "Not separated by these seeds" not in head


def test_full_tables_fit_a_screen_and_keep_mmt_apart(board):
    text = board.leaderboard_path.read_text()
    full = text.split("# Full tables")[1]
    widths = [line.count("|") - 1 for line in full.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= 12
    base = board.table("msrvtt", "test-1ka", "base").markdown
    assert "MMT metric family (t2v" in base and "t2v GeoMean" in base and "41.0" in base
    accuracy = base.split("Accuracy:")[1].split("Cost:")[0]
    assert "GeoMean" not in accuracy  # never in a column with `metrics`


def test_combined_figure_points_and_frontier(board):
    fig = board.figures[("msrvtt", "test-1ka", "single")]
    points = {(p.method, p.protocol): p for p in fig.r1}
    assert len(points) == 9  # every headline row, set-apart ones included
    c4c = points[("CLIP4Clip (meanP)", "base")]
    assert (c4c.x, c4c.y, c4c.y_std, c4c.set_apart) == (1.024e6, 44.0, 2.0, False)
    assert points[("CLIP4Clip (meanP)", "dsl")].set_apart
    rmean = {(p.method, p.protocol): p for p in fig.rmean}
    assert rmean[("CLIP4Clip (meanP)", "base")].y == pytest.approx((44 + 64 + 74) / 3)
    frontier = [(p.method, p.protocol) for p in fig.frontier]
    # cheapest first; the oracle and dsl rows (higher R@1 at the same cost) never enter it
    assert frontier == [
        ("CLIP4Clip (meanP)", "base"),
        ("EERCF", "rerank@50"),
        ("DRL (WTI+seqTransf+CDCR)", "base"),
    ]
    papers = {m.label: m for m in fig.papers_r1}
    assert (
        papers["CLIP4Clip (meanP) (ViT-B/32)"].y == 43.1 and papers["CLIP4Clip (meanP) (ViT-B/32)"].tag == "unverified"
    )
    assert papers["DRL (WTI+seqTransf+CDCR) (ViT-B/32)"].y == 47.6
    assert papers["CLIP4Clip (meanP) (ViT-B/32)"].x == 2 * 1000 * 512  # the suite's formula at N = 1,000
    bytes_points = {(p.method, p.protocol): p.x for p in fig.by_bytes}
    assert bytes_points[("HCQ", "base")] == 256.0
    names = sorted(p.name for p in board.plots)
    assert names == [
        "msrvtt_test-1ka_accuracy_vs_match_flops.png",
        "msrvtt_test-1ka_r1_vs_index_bytes.png",
        "papers_msrvtt_test-1ka_r1_vs_match_flops.png",
    ]


def test_rows_the_seeds_cannot_separate_are_named(tmp_path):
    runs = tmp_path / "runs"
    plots = tmp_path / "out" / "plots"
    plots.mkdir(parents=True)
    (plots / "msrvtt_test-1ka_base_r1_vs_index_bytes.png").write_bytes(b"old layout")
    (plots / "my-notes.png").write_bytes(b"not ours")
    for seed, (a, b) in enumerate(((40.0, 41.0), (44.0, 43.0), (42.0, 45.0))):
        write(runs, record(C4C, "clip4clip", "CLIP4Clip (meanP)", seed, {"base": proto(a, 1e6, 2048.0)}))
        write(runs, record(DRL, "drl", "DRL (WTI+seqTransf+CDCR)", seed, {"base": proto(b, 4e8, 24576.0)}))
    rep = aggregate(runs, tmp_path / "out")
    text = rep.leaderboard_path.read_text()
    assert "Not separated by these seeds" in text
    assert "{CLIP4Clip (meanP) `base`, DRL (WTI+seqTransf+CDCR) `base`}" in text  # one group, listed once
    # the earlier layout's plot is gone (and said so), a file of another name stays
    assert not (plots / "msrvtt_test-1ka_base_r1_vs_index_bytes.png").exists() and (plots / "my-notes.png").exists()
    assert any("removed msrvtt_test-1ka_base_r1_vs_index_bytes.png" in n for n in rep.plot_omissions)


def test_pareto_frontier_against_brute_force():
    import random

    rng = random.Random(0)
    pts = [FigPoint(f"m{i}", "base", rng.choice([1, 2, 3, 5, 8]), rng.choice([10, 20, 30, 40]), 0.0, rng.random() < 0.2)
           for i in range(40)]  # fmt: skip
    front = pareto_frontier(pts)
    eligible = [p for p in pts if not p.set_apart]
    for p in eligible:
        dominated = any((q.x <= p.x and q.y > p.y) or (q.x < p.x and q.y >= p.y) for q in eligible)
        assert (not dominated) == any((q.x, q.y) == (p.x, p.y) for q in front)
    assert [p.x for p in front] == sorted(p.x for p in front)


def test_no_dead_links_and_every_protocol_has_its_sentence(board):
    text = board.leaderboard_path.read_text()
    assert dead_links(text, board.out_dir) == []
    assert "../runs" not in text and "runs/" not in re.sub(r"`[^`]*`", "", text.split("## Skipped")[0])
    legend = text.split("Protocols (")[1].split("Paper column")[0]
    for protocol in ("base", "dsl", "rerank@50", "dense", "faiss", "base@best-on-test"):
        assert f"`{protocol}`" in legend, protocol
    for name in ("base", "dsl", "rerank@50", "dense", "faiss", "v2t-codes", "rerank@10-frames", "base@best-on-test"):
        info = describe_protocol(name)
        assert "transductive" in info.sentence and "index stores" in info.sentence, name
    assert describe_protocol("dsl").transductive and not describe_protocol("rerank@50").transductive
    assert describe_protocol("base@best-on-test").oracle and "oracle" in describe_protocol("base@best-on-test").sentence
    assert "does not know" in describe_protocol("mystery").sentence
    for table in board.tables:  # each full table opens with its protocol's sentence, per method where they differ
        for row in table.rows:
            assert describe_protocol(table.key.protocol, method=row.method).sentence in table.markdown


def test_papers_figure_from_the_suites_cost_formulas():
    ref = load_reference()
    points = {(p.method_label, p.backbone): p for p in paper_points(ref)}
    assert points[("CLIP4Clip (meanP)", "ViT-B/32")].match_flops == 2 * 1000 * 512
    assert points[("DRL (WTI+seqTransf+CDCR)", "ViT-B/32")].match_flops == 2 * 512 * 32 * 12 * 1000
    from vidbench.eval.adc import adc_match_flops

    assert points[("HCQ (M=8)", "MMT experts")].match_flops == adc_match_flops(1000, 8, 8, 256, 512)
    assert points[("EERCF", "ViT-B/32")].r1 == 47.8 and points[("EERCF", "ViT-B/32")].tag == "unverified"
    assert len(papers_marks(ref)) == len(paper_points(ref)) >= 10
    assert papers_marks(pd.DataFrame(columns=ref.columns)) == []


def test_schema_checks_the_contract_fields():
    good = record(C4C, "clip4clip", "CLIP4Clip (meanP)", 0, {"base": proto(40.0, 1.0, 1.0)})
    assert result_problems({**good, "checkpoint": "/runs/x/last.ckpt"}) == []  # older records: a path
    bad = record(
        C4C,
        "clip4clip",
        "CLIP4Clip (meanP)",
        0,
        {"base": proto(40.0, 1.0, 1.0, selection="best-on-val", metrics_mmt={"t2v_R1": 1.0})},
        checkpoint={"origin": "someone", "path": 3},
        data={"text": {"test-1ka": {"captions_truncated": -1}}},
    )
    joined = "\n".join(result_problems(bad))
    for needle in (
        "protocols.base.selection",
        "protocols.base.metrics_mmt' is missing t2v_R5",
        "checkpoint.origin",
        "checkpoint.path",
        "data.text.test-1ka.captions_truncated",
    ):
        assert needle in joined, needle
