"""Retrieval metrics against a brute-force oracle written with plain Python loops.

The oracle follows spec/methods-clip4clip-drl.md §4 literally (sort each row, find the tied positions,
pool them; group-max for multi-caption v2t) and shares no code with vidbench.eval.metrics.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from vidbench.eval.metrics import (
    group_max_similarity,
    optimistic_ranks,
    pessimistic_ranks,
    rank_positions_reference,
    retrieval_metrics,
    summarize_positions,
    v2t_all_caption_ranks,
)
from vidbench.eval.postprocess import apply_postprocess, dual_softmax

# ------------------------------------------------------------------------------------------------ oracle


def oracle_pooled_positions(rows: list[list[float]], gt: list[int]) -> list[int]:
    """compute_metrics' rule: every sorted position whose value minus the GT value is exactly zero."""
    pool = []
    for row, g in zip(rows, gt, strict=True):
        target = row[g]
        ordered = sorted(row, key=lambda v: (math.isnan(v), -v if not math.isnan(v) else 0.0))
        pool.extend(p for p, v in enumerate(ordered) if v - target == 0)
    return pool


def oracle_median(values: list[float], rule: str) -> float:
    s = sorted(values)
    n = len(s)
    if rule == "numpy" and n % 2 == 0:
        return (s[n // 2 - 1] + s[n // 2]) / 2
    return s[(n - 1) // 2]


def oracle_summary(pos: list[int], rule: str) -> dict[str, float]:
    n = len(pos)
    out = {f"R{k}": 100.0 * sum(1 for p in pos if p < k) / n for k in (1, 5, 10)}
    out["MdR"] = oracle_median([float(p) for p in pos], rule) + 1
    out["MnR"] = sum(pos) / n + 1
    return out


def oracle_metrics(
    sim: np.ndarray, cv: list[int], strict: bool, force_multi: bool = False
) -> dict[str, float]:
    rows = sim.tolist()
    n_text, n_video = sim.shape
    counts = Counter(cv)
    single = not force_multi and n_text == n_video and all(counts[v] == 1 for v in range(n_video))
    cols = [[rows[c][v] for c in range(n_text)] for v in range(n_video)]
    if strict:
        t2v = [
            sum(1 for v in range(n_video) if v != cv[i] and rows[i][v] >= rows[i][cv[i]])
            for i in range(n_text)
        ]
        v2t = []
        for v in range(n_video):
            own = [c for c in range(n_text) if cv[c] == v]
            best = max(cols[v][c] for c in own)
            v2t.append(sum(1 for c in range(n_text) if c not in own and cols[v][c] >= best))
        t2v_s, v2t_s = oracle_summary(t2v, "numpy"), oracle_summary(v2t, "numpy")
    elif single:
        caption_of = {v: c for c, v in enumerate(cv)}
        t2v_s = oracle_summary(oracle_pooled_positions(rows, cv), "numpy")
        v2t_s = oracle_summary(
            oracle_pooled_positions(cols, [caption_of[v] for v in range(n_video)]), "numpy"
        )
    else:
        t2v = [sum(1 for x in rows[i] if x > rows[i][cv[i]]) for i in range(n_text)]
        grouped = [
            [max(rows[c][v] for c in range(n_text) if cv[c] == g) for g in range(n_video)]
            for v in range(n_video)
        ]
        t2v_s = oracle_summary(t2v, "lower")
        v2t_s = oracle_summary(oracle_pooled_positions(grouped, list(range(n_video))), "numpy")
    out = {f"t2v_{k}": val for k, val in t2v_s.items()}
    out.update({f"v2t_{k}": val for k, val in v2t_s.items()})
    return out


def spec_literal_positions(x: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The vectorised algorithm the spec describes: sort -x per row, keep positions where sx - d == 0."""
    neg = -x
    sx = np.sort(neg, axis=1)
    d = neg[np.arange(len(gt)), gt][:, None]
    with np.errstate(invalid="ignore"):
        return np.where(sx - d == 0)[1]


def random_case(rng: np.random.Generator, *, multi: bool, ties: bool) -> tuple[np.ndarray, list[int]]:
    n_video = int(rng.integers(1, 8))
    if multi:
        per_video = rng.integers(1, 5, size=n_video)
        if (per_video == 1).all():
            per_video[0] = 2
        cv = np.repeat(np.arange(n_video), per_video)
        if rng.random() < 0.5:
            cv = rng.permutation(cv)
    else:
        cv = np.arange(n_video) if rng.random() < 0.7 else rng.permutation(n_video)
    shape = (len(cv), n_video)
    sim = rng.integers(0, 3, size=shape).astype(np.float64) if ties else rng.standard_normal(shape)
    return sim, cv.tolist()


def assert_metrics_match(got: dict[str, float], want: dict[str, float]) -> None:
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", range(40))
def test_rank_positions_match_oracle_with_ties_nan_and_inf(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_q, n_g = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    sim = (
        rng.integers(0, 3, size=(n_q, n_g)).astype(np.float64)
        if seed % 2
        else rng.standard_normal((n_q, n_g))
    )
    gt = rng.integers(0, n_g, size=n_q)
    special = rng.random((n_q, n_g))
    sim[special < 0.1] = np.nan
    sim[(special >= 0.1) & (special < 0.15)] = np.inf
    sim[(special >= 0.15) & (special < 0.2)] = -np.inf
    want = sorted(oracle_pooled_positions(sim.tolist(), gt.tolist()))
    got = rank_positions_reference(torch.from_numpy(sim), torch.from_numpy(gt))
    assert sorted(got.tolist()) == want
    assert sorted(spec_literal_positions(sim, gt).tolist()) == want
    # float32 input gives the same positions (comparisons are exact in either dtype)
    got32 = rank_positions_reference(torch.from_numpy(sim).float(), torch.from_numpy(gt))
    assert sorted(got32.tolist()) == want


def test_nan_ground_truth_row_contributes_nothing() -> None:
    sim = torch.tensor([[float("nan"), 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 1.0, 1.0]])
    pos = rank_positions_reference(sim, torch.tensor([0, 1, 2]))
    assert sorted(pos.tolist()) == [0, 0, 1, 1, 2]
    assert optimistic_ranks(sim, torch.tensor([0, 1, 2])).tolist() == [0, 0]
    assert pessimistic_ranks(sim, torch.tensor([0, 1, 2])).tolist() == [1, 2]


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9, 10])
def test_summarize_median_rules_and_recalls(n: int) -> None:
    rng = np.random.default_rng(n)
    pos = rng.integers(0, 15, size=n)
    numpy_rule = summarize_positions(torch.from_numpy(pos), "numpy")
    lower_rule = summarize_positions(torch.from_numpy(pos), "lower")
    assert numpy_rule["MdR"] == pytest.approx(float(np.median(pos)) + 1)
    assert lower_rule["MdR"] == pytest.approx(float(torch.median(torch.from_numpy(pos) + 1)))
    assert numpy_rule["MnR"] == pytest.approx(float(pos.mean()) + 1)
    for k in (1, 5, 10):
        assert numpy_rule[f"R{k}"] == pytest.approx(100.0 * float((pos < k).mean()))
    assert numpy_rule["count"] == n
    if n % 2 == 0 and np.sort(pos)[n // 2 - 1] != np.sort(pos)[n // 2]:
        assert numpy_rule["MdR"] != lower_rule["MdR"]


def test_median_rules_differ_on_even_count() -> None:
    pos = torch.tensor([0, 0, 1, 1])
    assert summarize_positions(pos, "numpy")["MdR"] == 1.5
    assert summarize_positions(pos, "lower")["MdR"] == 1.0


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("ties", [False, True])
def test_retrieval_metrics_match_oracle(strict: bool, multi: bool, ties: bool) -> None:
    rng = np.random.default_rng(1000 * strict + 100 * multi + 10 * ties)
    for _ in range(25):
        sim, cv = random_case(rng, multi=multi, ties=ties)
        got = retrieval_metrics(torch.from_numpy(sim), torch.tensor(cv), strict=strict)
        assert_metrics_match(got, oracle_metrics(sim, cv, strict))
        assert got["n_queries_t2v"] == len(cv)
        assert got["n_queries_v2t"] == sim.shape[1]


def test_float32_matches_float64_on_tie_heavy_input() -> None:
    rng = np.random.default_rng(7)
    sim, cv = random_case(rng, multi=True, ties=True)
    a = retrieval_metrics(torch.from_numpy(sim), cv)
    b = retrieval_metrics(torch.from_numpy(sim).float(), cv)
    assert a == b


def test_multi_caption_flag_forces_reference_multi_path_on_one_to_one_data() -> None:
    sim = torch.zeros(4, 4)
    single = retrieval_metrics(sim, torch.arange(4))
    forced = retrieval_metrics(sim, torch.arange(4), multi_caption=True)
    assert single["t2v_R1"] == pytest.approx(25.0)  # tie pooling
    assert forced["t2v_R1"] == 100.0  # optimistic per-caption rank (the documented deviation)
    want = oracle_metrics(sim.double().numpy(), [0, 1, 2, 3], strict=False, force_multi=True)
    assert_metrics_match(forced, want)
    assert forced["v2t_R1"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="multi_caption=False"):
        retrieval_metrics(torch.zeros(3, 2), torch.tensor([0, 0, 1]), multi_caption=False)


def _worked_example() -> tuple[torch.Tensor, torch.Tensor]:
    """6 videos x 2 captions; v2t reference ranks [6,3,1,1,2,3], all-caption ranks [10,5,1,1,2,3]."""
    cv = torch.arange(6).repeat_interleave(2)  # captions 2v, 2v+1 belong to video v
    sim = torch.full((12, 6), 0.1)
    sim[0:2, 0] = torch.tensor([0.5, 0.4])
    sim[3:12, 0] = 0.9  # 9 foreign captions above, covering all 5 other groups
    sim[2:4, 1] = torch.tensor([0.5, 0.4])
    sim[[0, 1, 4, 5], 1] = 0.9  # 4 foreign captions above, from 2 groups
    sim[4:6, 2] = 0.9
    sim[6:8, 3] = 0.9
    sim[8:10, 4] = 0.5
    sim[0, 4] = 0.9  # 1 caption above
    sim[10:12, 5] = 0.5
    sim[[0, 2], 5] = 0.9  # 2 captions above, from 2 groups
    return sim, cv


def test_worked_example_reference_vs_strict_v2t() -> None:
    sim, cv = _worked_example()
    ref_ranks = rank_positions_reference(group_max_similarity(sim, cv), torch.arange(6)) + 1
    assert ref_ranks.tolist() == [6, 3, 1, 1, 2, 3]
    assert (v2t_all_caption_ranks(sim, cv) + 1).tolist() == [10, 5, 1, 1, 2, 3]

    ref = retrieval_metrics(sim, cv)
    strict = retrieval_metrics(sim, cv, strict=True)
    assert ref["v2t_R1"] == pytest.approx(100 * 2 / 6)
    assert ref["v2t_R5"] == pytest.approx(100 * 5 / 6)
    assert ref["v2t_MdR"] == 2.5
    assert ref["v2t_MnR"] == pytest.approx(16 / 6)
    assert strict["v2t_R5"] == pytest.approx(100 * 5 / 6)
    assert strict["v2t_MdR"] == 2.5
    assert strict["v2t_MnR"] == pytest.approx(22 / 6)
    assert_metrics_match(ref, oracle_metrics(sim.double().numpy(), cv.tolist(), strict=False))
    assert_metrics_match(strict, oracle_metrics(sim.double().numpy(), cv.tolist(), strict=True))


@pytest.mark.parametrize("n", [1, 4, 7])
def test_collapsed_model(n: int) -> None:
    sim = torch.full((n, n), 0.3)
    ref = retrieval_metrics(sim, torch.arange(n))
    assert ref["t2v_R1"] == pytest.approx(100.0 / n)
    assert ref["v2t_R1"] == pytest.approx(100.0 / n)
    assert ref["t2v_MdR"] == pytest.approx((n - 1) / 2 + 1)
    strict = retrieval_metrics(sim, torch.arange(n), strict=True)
    assert strict["t2v_R1"] == (100.0 if n == 1 else 0.0)
    assert strict["t2v_MdR"] == n


def test_dual_softmax_formula_and_rank_change() -> None:
    sim = torch.tensor([[0.5, 0.6], [0.1, 0.9]])  # video 1 is a hub that steals text 0
    manual = sim.double() * torch.exp(100 * sim.double()) / torch.exp(100 * sim.double()).sum(0, keepdim=True)
    torch.testing.assert_close(dual_softmax(sim), manual)
    torch.testing.assert_close(
        dual_softmax(sim, 10.0, dim=1), sim.double() * torch.softmax(10 * sim.double(), 1)
    )

    cv = torch.arange(2)
    raw = retrieval_metrics(sim, cv)
    t2v, v2t = apply_postprocess(sim, "dsl")
    torch.testing.assert_close(v2t, dual_softmax(sim.T, 100.0, dim=0).T)
    dsl = retrieval_metrics(t2v, cv, sim_v2t=v2t)
    assert raw["t2v_R1"] == 50.0
    assert dsl["t2v_R1"] == 100.0
    assert dsl["v2t_R1"] == raw["v2t_R1"] == 100.0
    same, same_v2t = apply_postprocess(sim, "none")
    assert same is sim and same_v2t is sim


def test_separate_v2t_matrix_is_used_for_v2t_only() -> None:
    rng = np.random.default_rng(3)
    a, cv = random_case(rng, multi=True, ties=False)
    b = rng.standard_normal(a.shape)
    mixed = retrieval_metrics(torch.from_numpy(a), cv, sim_v2t=torch.from_numpy(b))
    only_a = retrieval_metrics(torch.from_numpy(a), cv)
    only_b = retrieval_metrics(torch.from_numpy(b), cv)
    assert {k: v for k, v in mixed.items() if "t2v" in k} == {k: v for k, v in only_a.items() if "t2v" in k}
    assert {k: v for k, v in mixed.items() if "v2t" in k} == {k: v for k, v in only_b.items() if "v2t" in k}


def test_postprocess_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ValueError, match="none, dsl"):
        apply_postprocess(torch.eye(2), "sharpen")
    with pytest.raises(ValueError, match="unknown option"):
        apply_postprocess(torch.eye(2), "dsl", tau=3.0)
    with pytest.raises(ValueError, match="temperature"):
        dual_softmax(torch.eye(2), temperature=0.0)


def test_nan_scores_raise_unless_allowed() -> None:
    sim = torch.eye(3)
    sim[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN scores \(first at text 1, video 1\)"):
        retrieval_metrics(sim, torch.arange(3))
    kept = retrieval_metrics(sim, torch.arange(3), allow_nan=True)
    assert kept["n_queries_t2v"] == 2 and kept["n_queries_v2t"] == 2
    assert kept["t2v_R1"] == 100.0


@pytest.mark.parametrize(
    ("sim", "cv", "message"),
    [
        (torch.zeros(3), [0, 1, 2], "2-D"),
        (torch.zeros(3, 3, dtype=torch.long), [0, 1, 2], "floating-point"),
        (torch.zeros(0, 3), [], "empty"),
        (torch.zeros(3, 3), [0, 1], "has 2 entries but sim has 3 rows"),
        (torch.zeros(3, 3), [0, 1, 3], r"\[0, 3\)"),
        (torch.zeros(3, 3), [0, 1, -1], "min -1"),
        (torch.zeros(4, 3), [0, 0, 1, 1], r"1 of 3 videos have no caption \(first: \[2\]\)"),
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_input_validation(sim: torch.Tensor, cv: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sim, cv)  # type: ignore[arg-type]


def test_other_validation_errors() -> None:
    with pytest.raises(ValueError, match="sim_v2t"):
        retrieval_metrics(torch.eye(3), torch.arange(3), sim_v2t=torch.eye(2))
    with pytest.raises(ValueError, match="gt indices"):
        rank_positions_reference(torch.eye(3), torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="one gallery index per query"):
        optimistic_ranks(torch.eye(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="median"):
        summarize_positions(torch.tensor([0]), "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or infinite"):
        summarize_positions(torch.tensor([], dtype=torch.long))
