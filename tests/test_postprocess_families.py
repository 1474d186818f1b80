"""Sinkhorn and QB-Norm (dynamic inverted softmax) against direct loop implementations of their equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidbench.eval.metric import RetrievalScoreboard
from vidbench.eval.postprocess import (
    UnknownPostprocessError,
    apply_postprocess,
    postprocess_flops_per_query,
    querybank_norm,
    sinkhorn_log_plan,
)


def brute_sinkhorn(sim: np.ndarray, tau: float, iters: int, mass: list[float]) -> np.ndarray:
    """Plain Sinkhorn-Knopp on exp(tau * S): columns to ``mass``, then rows to 1, element by element."""
    q, v = sim.shape
    p = [[math.exp(tau * sim[i][j]) for j in range(v)] for i in range(q)]
    for _ in range(iters):
        for j in range(v):
            col = sum(p[i][j] for i in range(q))
            for i in range(q):
                p[i][j] *= mass[j] / col
        for i in range(q):
            row = sum(p[i])
            p[i] = [x / row for x in p[i]]
    return np.array(p)


@pytest.mark.parametrize("seed", range(3))
def test_sinkhorn_matches_loop_implementation(seed):
    rng = np.random.default_rng(seed)
    cv = [0, 0, 1, 2, 2, 2]  # multi-caption: column masses 2, 1, 3
    sim = rng.normal(size=(6, 3))
    want = brute_sinkhorn(sim, tau=3.0, iters=7, mass=[2.0, 1.0, 3.0])
    got = sinkhorn_log_plan(torch.tensor(sim), temperature=3.0, iterations=7, column_mass=torch.tensor([2.0, 1, 3]))
    np.testing.assert_allclose(got.exp().numpy(), want, rtol=1e-10)
    t2v, v2t = apply_postprocess(torch.tensor(sim), "sinkhorn", caption_video=torch.tensor(cv), temperature=3.0,
                                 iterations=7)
    np.testing.assert_allclose(t2v.exp().numpy(), want, rtol=1e-10)
    assert torch.equal(t2v, v2t)


def test_sinkhorn_square_default_masses_and_large_temperature():
    sim = torch.rand(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plan = sinkhorn_log_plan(sim, temperature=10.0, iterations=200).exp()
    assert torch.isfinite(sinkhorn_log_plan(sim, temperature=1e4, iterations=5)).all()  # log domain: no overflow
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(0), torch.ones(5, dtype=torch.float64), rtol=1e-4, atol=1e-4)


def brute_qbnorm(sim: np.ndarray, bank: np.ndarray, beta: float, k: int) -> list[list[float]]:
    """The DIS rule written out: activation set from each bank row's top-k, inverted softmax on the
    rows whose top-1 video is activated, raw scores elsewhere (returned on the ratio scale)."""
    n_video = sim.shape[1]
    activated = set()
    for row in bank:
        order = sorted(range(n_video), key=lambda j: (-row[j], j))
        activated.update(order[:k])
    norm = [sum(math.exp(beta * bank[b][j]) for b in range(len(bank))) for j in range(n_video)]
    out = []
    for row in sim:
        top = max(range(n_video), key=lambda j: (row[j], -j))
        if top in activated:
            out.append([math.exp(beta * row[j]) / norm[j] for j in range(n_video)])
        else:
            out.append(list(row))
    return out


@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_qbnorm_matches_loop_implementation(seed, k):
    rng = np.random.default_rng(seed)
    sim, bank = rng.uniform(-1, 1, size=(7, 5)), rng.uniform(-1, 1, size=(4, 5))
    want = brute_qbnorm(sim, bank, beta=5.0, k=k)
    got = querybank_norm(torch.tensor(sim), torch.tensor(bank), beta=5.0, k=k)
    for i, row in enumerate(want):
        normalised = not np.allclose(row, sim[i])
        values = got[i].exp().numpy() if normalised else got[i].numpy()
        np.testing.assert_allclose(values, row, rtol=1e-10)
    t2v, v2t = apply_postprocess(torch.tensor(sim), "qbnorm", bank_sim=torch.tensor(bank), beta=5.0, k=k)
    assert torch.equal(t2v, got) and torch.equal(v2t, torch.tensor(sim))


def test_qbnorm_leaves_unactivated_queries_alone_and_demotes_hubs():
    # video 0 is a hub: every bank query ranks it first; the test query that also ranks it first is normalised
    bank = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.0, 0.1]], dtype=torch.float64)
    sim = torch.tensor([[0.50, 0.45, 0.0], [0.0, 0.3, 0.9]], dtype=torch.float64)
    out = querybank_norm(sim, bank, beta=20.0, k=1)
    assert int(out[0].argmax()) == 1  # the hub lost its first place
    assert torch.equal(out[1], sim[1])  # top-1 (video 2) is not activated: raw scores kept
    with pytest.raises(UnknownPostprocessError, match="bank"):
        apply_postprocess(sim, "qbnorm")


def test_scoreboard_reports_families_and_costs():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 6, generator=g) + 3 * torch.eye(6)
    board = RetrievalScoreboard(
        torch.arange(6),
        postprocess=["dsl", "sinkhorn", "qbnorm"],
        postprocess_kwargs={"qbnorm": {"bank_sim": torch.randn(4, 6, generator=g)}},
        summary=True,
    )
    board.update(sim, torch.arange(6))
    out = board.compute()
    for name in ("", "dsl/", "sinkhorn/", "qbnorm/"):
        assert {f"{name}t2v_R1", f"{name}RSum", f"{name}t2v_nDCG10", f"{name}v2t_mAP"} <= set(out)
    assert out["qbnorm/v2t_R1"] == out["v2t_R1"]  # v2t is not normalised by a text bank
    assert postprocess_flops_per_query("sinkhorn", 100, iterations=20) == 100 * 121
    assert postprocess_flops_per_query("qbnorm", 100) == 300
