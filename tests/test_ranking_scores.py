"""nDCG@10, mAP and R@sum against brute force: every ordering of the tied items is enumerated and the
textbook AP / nDCG of each ordering averaged (shares no code with vidbench.eval.ranking_scores)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vidbench.eval.metrics import MetricInputError, retrieval_metrics
from vidbench.eval.ranking_scores import expected_ap_ndcg, ranking_scores, rsum


def _orderings(scores: list[float]) -> list[list[int]]:
    """Every ranking (list of item indices, best first) consistent with the scores, ties in every order."""
    groups: dict[float, list[int]] = {}
    for i, s in enumerate(scores):
        groups.setdefault(s, []).append(i)
    blocks = [groups[s] for s in sorted(groups, reverse=True)]
    out = [[]]
    for block in blocks:
        out = [prefix + list(p) for prefix in out for p in itertools.permutations(block)]
    return out


def _ap(order: list[int], relevant: set[int]) -> float:
    hits, total = 0, 0.0
    for pos, item in enumerate(order, start=1):
        if item in relevant:
            hits += 1
            total += hits / pos
    return total / len(relevant)


def _ndcg(order: list[int], relevant: set[int], k: int = 10) -> float:
    dcg = sum(1 / math.log2(pos + 1) for pos, item in enumerate(order[:k], start=1) if item in relevant)
    ideal = sum(1 / math.log2(pos + 1) for pos in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def brute(scores: list[float], relevant: set[int]) -> tuple[float, float]:
    orders = _orderings(scores)
    return (
        100 * sum(_ndcg(o, relevant) for o in orders) / len(orders),
        100 * sum(_ap(o, relevant) for o in orders) / len(orders),
    )


def brute_scores(sim: torch.Tensor, cv: list[int], multi: bool) -> dict[str, float]:
    rows = sim.tolist()
    n_text, n_video = sim.shape
    t2v = [brute(rows[i], {cv[i]}) for i in range(n_text)]
    cols = sim.T.tolist()
    if multi:
        v2t = [brute(cols[v], {i for i in range(n_text) if cv[i] == v}) for v in range(n_video)]
    else:
        v2t = [brute(cols[v], {cv.index(v)}) for v in range(n_video)]
    mean = lambda xs, j: sum(x[j] for x in xs) / len(xs)  # noqa: E731
    return {"t2v_nDCG10": mean(t2v, 0), "t2v_mAP": mean(t2v, 1), "v2t_nDCG10": mean(v2t, 0), "v2t_mAP": mean(v2t, 1)}


def _tied_matrix(n_text: int, n_video: int, seed: int, levels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n_text, n_video), generator=g).double()


@pytest.mark.parametrize("seed", range(4))
def test_single_caption_with_ties_matches_brute_force(seed):
    sim = _tied_matrix(5, 5, seed)
    cv = list(range(5))
    got = ranking_scores(sim, cv)
    want = brute_scores(sim, cv, multi=False)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed", range(4))
def test_multi_caption_with_ties_matches_brute_force(seed):
    # 7 captions over 3 videos (3, 2, 2 captions), captions not contiguous: v2t has several relevant items
    cv = [0, 1, 0, 2, 1, 2, 0]
    sim = _tied_matrix(7, 3, seed, levels=2)
    got = ranking_scores(sim, cv)
    want = brute_scores(sim, cv, multi=True)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_cutoff_and_deep_ties_beyond_ten():
    # 14 videos: the relevant item sits in a tie group straddling position 10
    sim = torch.zeros(1, 14, dtype=torch.float64)
    sim[0, :8] = 2.0 + torch.arange(8.0, dtype=torch.float64)  # 8 distinct items strictly above
    sim[0, 8:13] = 1.0  # relevant item 10 tied with 4 others at positions 9..13
    got = ranking_scores(sim.repeat(14, 1), [10] * 14, multi_caption=True)
    nd, ap = brute(sim[0].tolist(), {10})
    assert got["t2v_nDCG10"] == pytest.approx(nd, abs=1e-9)
    assert got["t2v_mAP"] == pytest.approx(ap, abs=1e-9)


def test_collapsed_model_scores_chance_not_perfect():
    n = 6
    got = ranking_scores(torch.zeros(n, n), list(range(n)))
    assert got["t2v_mAP"] == pytest.approx(100 * sum(1 / r for r in range(1, n + 1)) / n)
    assert 0 < got["t2v_nDCG10"] < 100


def test_group_shares_sum_to_expected_ap_of_large_tie_group():
    # closed form (harmonic numbers) against the explicit sum for a big group
    n, t, rb, r, R = 3, 40, 1, 5, 6
    ap, _ = expected_ap_ndcg(*(torch.tensor([v]) for v in (n, t, rb, r, R)))
    explicit = sum((r / t) * (rb + 1 + (i - 1) * (r - 1) / (t - 1)) / (n + i) for i in range(1, t + 1))
    assert float(ap) * r * R == pytest.approx(explicit, rel=1e-12)


def test_rsum_adds_six_recalls():
    m = retrieval_metrics(torch.eye(4) + 0.1 * torch.arange(4.0), torch.arange(4))
    assert rsum(m) == pytest.approx(sum(m[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)))
    with pytest.raises(MetricInputError, match="v2t_R10"):
        rsum({k: v for k, v in m.items() if k != "v2t_R10"})
