"""HCQ's (MMT's) metric family against a brute force written from the rule, and the Std_Rank of the
reference multi-caption t2v report (issue 11, items 4 and 7)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from vidbench.eval.metric import RetrievalScoreboard
from vidbench.eval.metrics import MMT_METRIC_KEYS, MetricInputError, mmt_retrieval_metrics, retrieval_metrics
from vidbench.results.schema import result_problems


def _avg_tied_position(row: list[float], value: float) -> float:
    """Sort the row by descending score; the mean of the 0-based positions whose score equals ``value``."""
    ordered = sorted(row, reverse=True)
    hits = [p for p, x in enumerate(ordered) if x == value]
    return sum(hits) / len(hits)


def _summary(ranks: list[float]) -> dict[str, float]:
    n = len(ranks)
    out = {
        "R1": 100.0 * sum(r == 0 for r in ranks) / n,
        "R5": 100.0 * sum(r < 5 for r in ranks) / n,
        "R10": 100.0 * sum(r < 10 for r in ranks) / n,
        "R50": 100.0 * sum(r < 50 for r in ranks) / n,
        "MdR": statistics.median(ranks) + 1,
        "MnR": sum(ranks) / n + 1,
    }
    rec = [out["R1"], out["R5"], out["R10"]]
    out["GeoMean"] = 0.0 if min(rec) == 0 else (rec[0] * rec[1] * rec[2]) ** (1 / 3)
    return out


def _brute_force(sim: list[list[float]], cv: list[int]) -> dict[str, float]:
    n_text, n_video = len(sim), len(sim[0])
    t2v = [_avg_tied_position(sim[i], sim[i][cv[i]]) for i in range(n_text)]
    v2t = []
    for v in range(n_video):
        column = [sim[c][v] for c in range(n_text)]  # the video's row over all captions
        v2t.append(min(_avg_tied_position(column, sim[c][v]) for c in range(n_text) if cv[c] == v))
    a, b = _summary(t2v), _summary(v2t)
    return {**{f"t2v_{k}": x for k, x in a.items()}, **{f"v2t_{k}": x for k, x in b.items()}}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("captions", [1, 3])
def test_mmt_metrics_match_brute_force_with_ties(seed: int, captions: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    n_video = 70  # > 50 so R@50 is not trivially 100
    cv = torch.arange(n_video).repeat_interleave(captions)
    cv = cv[torch.randperm(cv.numel(), generator=gen)]  # captions need not be grouped
    # few distinct values: many ties, including ties at the top; a diagonal boost so recalls are not all 0
    sim = torch.randint(0, 6, (cv.numel(), n_video), generator=gen).float()
    sim[torch.arange(cv.numel()), cv] += torch.randint(0, 3, (cv.numel(),), generator=gen).float()
    got = mmt_retrieval_metrics(sim, cv)
    expected = _brute_force(sim.tolist(), cv.tolist())
    assert set(got) == set(MMT_METRIC_KEYS)
    for key in MMT_METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-9), key


def test_mmt_tie_rule_worked_example() -> None:
    # query 0 ties its GT with one other video at the top: averaged rank 0.5, not an R@1 hit, but an R@5 hit
    sim = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0]])
    got = mmt_retrieval_metrics(sim, torch.arange(3))
    assert got["t2v_R1"] == pytest.approx(100 / 3)  # only query 1
    assert got["t2v_MnR"] == pytest.approx((0.5 + 0 + 1.0) / 3 + 1)  # query 2: three-way tie -> position 1
    assert got["t2v_MdR"] == pytest.approx(1.5)
    # the CLIP4Clip rule pools the tied positions instead: a different family, recorded separately
    assert retrieval_metrics(sim, torch.arange(3))["t2v_R1"] != got["t2v_R1"]


def test_mmt_v2t_takes_each_videos_best_caption_among_all_captions() -> None:
    # video 0 has captions 0 and 1; caption 1 is its best; caption 2 (video 1) outranks both for video 0
    sim = torch.tensor([[0.2, 0.1], [0.5, 0.0], [0.9, 0.8]])
    got = mmt_retrieval_metrics(sim, torch.tensor([0, 0, 1]))
    assert got["v2t_R1"] == 50.0 and got["v2t_MnR"] == pytest.approx((1 + 0) / 2 + 1)


def test_mmt_metrics_reject_nan_and_bad_mappings() -> None:
    with pytest.raises(MetricInputError, match="NaN"):
        mmt_retrieval_metrics(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), torch.arange(2))
    with pytest.raises(MetricInputError, match="no caption"):
        mmt_retrieval_metrics(torch.eye(3)[:2], torch.tensor([0, 0]))


def test_scoreboard_reports_the_mmt_family_under_its_own_prefix() -> None:
    sim = torch.randn(12, 4)
    cv = torch.arange(4).repeat(3)
    board = RetrievalScoreboard(caption_video=cv, mmt=True)
    board.update(sim, torch.arange(12))
    out = board.compute()
    assert {k.split("/", 1)[1] for k in out if k.startswith("mmt/")} == set(MMT_METRIC_KEYS)
    assert out["mmt/t2v_R50"] == mmt_retrieval_metrics(sim, cv)["t2v_R50"]


def test_schema_validates_metrics_mmt_and_std_rank() -> None:
    metrics = {f"{d}_{m}": 1.0 for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MdR", "MnR")}
    record = {
        "schema_version": 1, "recipe": "r", "method": "hcq", "method_label": "HCQ", "seed": 0,
        "dataset": "msrvtt", "split": "test-1ka",
        "protocols": {"base": {"metrics": {**metrics, "t2v_Std_Rank": 2.0},
                               "metrics_mmt": {k: 1.0 for k in MMT_METRIC_KEYS}}},
    }  # fmt: skip
    assert result_problems(record) == []
    record["protocols"]["base"]["metrics_mmt"].pop("t2v_R50")
    record["protocols"]["base"]["metrics"]["t2v_Std_Rank"] = "wide"
    problems = " ".join(result_problems(record))
    assert "metrics_mmt' is missing t2v_R50" in problems and "t2v_Std_Rank' must be a finite number" in problems


# ---- item 7: Std_Rank --------------------------------------------------------------------------------------
def test_multi_caption_t2v_reports_population_std_of_the_one_based_ranks() -> None:
    gen = torch.Generator().manual_seed(3)
    cv = torch.arange(10).repeat_interleave(4)
    sim = torch.randn(40, 10, generator=gen)
    got = retrieval_metrics(sim, cv)
    ranks = [1 + sum(float(x) > float(sim[i, cv[i]]) for x in sim[i]) for i in range(40)]  # no ties here
    assert got["t2v_Std_Rank"] == pytest.approx(float(np.std(ranks)), rel=1e-12)
    assert got["t2v_Std_Rank"] == pytest.approx(statistics.pstdev(ranks), rel=1e-12)
    assert not math.isclose(got["t2v_Std_Rank"], statistics.stdev(ranks))  # population, not sample std
    # the single-caption reference report (compute_metrics) has no Std_Rank
    assert "t2v_Std_Rank" not in retrieval_metrics(torch.randn(5, 5), torch.arange(5))
