"""HCQ's quantiser, spherical k-means, reservoir cache, GhostVLAD and AQ-CL against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidbench.errors import ConfigError
from vidbench.models.aqcl import hybrid_aqcl_loss, level_weights, smoothing_weight
from vidbench.models.quantization import (
    EmbeddingReservoir,
    GhostVLAD,
    ProductQuantizer,
    spherical_kmeans,
    split_normalize,
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ---- the PQ layer -------------------------------------------------------------------------------------
def test_split_normalize_gives_unit_sub_vectors():
    x = torch.randn(5, 24)
    y = split_normalize(x, 4)
    torch.testing.assert_close(y.reshape(5, 4, 6).norm(dim=-1), torch.ones(5, 4))
    torch.testing.assert_close(y.norm(dim=-1), torch.full((5,), 2.0))
    with pytest.raises(ConfigError, match="not divisible"):
        split_normalize(x, 5)


def test_codes_are_the_most_similar_codewords_and_reconstruction_concatenates_them():
    torch.manual_seed(0)
    pq = ProductQuantizer(12, num_subspaces=3, num_codewords=5)
    x = torch.randn(7, 12)
    out = pq(x)
    assert out.codes.shape == (7, 3) and out.soft.shape == (7, 3, 5)
    for b in range(7):
        for m in range(3):
            sub = _unit(x[b, 4 * m : 4 * m + 4])
            cos = [float(sub @ pq.codebook[m, k]) for k in range(5)]
            assert int(out.codes[b, m]) == max(range(5), key=cos.__getitem__)
            torch.testing.assert_close(out.hard[b, 4 * m : 4 * m + 4], pq.codebook[m, out.codes[b, m]])
    torch.testing.assert_close(out.quantized, out.hard)  # forward value = hard reconstruction
    torch.testing.assert_close(pq.decode(out.codes), out.hard)
    assert torch.equal(pq.encode(x), out.codes.to(torch.uint8))
    # the batch-norm is monotone per sub-codebook: the soft codes peak at the hard codes
    assert torch.equal(out.soft.argmax(-1), out.codes)
    torch.testing.assert_close(pq.codebook.norm(dim=-1), torch.ones(3, 5))


def test_straight_through_gradient_is_the_identity_and_codebooks_get_none():
    torch.manual_seed(1)
    pq = ProductQuantizer(8, num_subspaces=2, num_codewords=4)
    x = torch.randn(6, 8, requires_grad=True)
    r = torch.randn(6, 8)
    (pq(x).quantized * r).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (split_normalize(x2, 2) * r).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    assert x.grad.abs().sum() > 0
    names = dict(pq.named_parameters())
    assert "codebook" not in names and "codebook" in pq.state_dict()  # a checkpointed buffer


def test_quantizer_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="divide"):
        ProductQuantizer(10, num_subspaces=3)
    with pytest.raises(ConfigError, match="one byte"):
        ProductQuantizer(8, num_subspaces=2, num_codewords=300)


# ---- spherical k-means --------------------------------------------------------------------------------
def _direct_update(x: torch.Tensor, init: torch.Tensor, empty: str) -> torch.Tensor:
    """One k-means round written out point by point."""
    m_count, k_count, _ = init.shape
    new = init.clone()
    for m in range(m_count):
        members: dict[int, list[torch.Tensor]] = {k: [] for k in range(k_count)}
        for n in range(x.shape[0]):
            p = _unit(x[n, m])
            best = max(range(k_count), key=lambda k, p=p: float(p @ init[m, k]))
            members[best].append(p)
        for k in range(k_count):
            if members[k]:
                new[m, k] = _unit(torch.stack(members[k]).sum(0))
            elif empty == "zero":
                new[m, k] = 0.0
    return new


@pytest.mark.parametrize("empty", ["zero", "keep"])
def test_one_kmeans_round_matches_direct_computation_with_an_empty_cluster(empty):
    torch.manual_seed(2)
    x = torch.randn(40, 2, 3).abs()  # every coordinate positive
    init = _unit(torch.randn(2, 4, 3))
    init[0, 0] = _unit(torch.ones(3))  # positive cosine with every point
    init[0, 3] = -init[0, 0]  # negative cosine with every point: its cluster stays empty
    result = spherical_kmeans(x, init, iters=1, tol=0.0, empty=empty)
    expected = _direct_update(x, init, empty)
    assert result.counts[0, 3] == 0 and result.empty >= 1
    torch.testing.assert_close(result.codebook, expected, rtol=1e-5, atol=1e-6)
    if empty == "zero":
        assert torch.equal(result.codebook[0, 3], torch.zeros(3))
    else:
        assert torch.equal(result.codebook[0, 3], init[0, 3])
    assert torch.equal(result.iterations, torch.ones(2, dtype=torch.long))


def test_kmeans_stops_at_tolerance_and_returns_a_fixed_point():
    torch.manual_seed(3)
    centres = _unit(torch.randn(4, 8))
    x = (centres.repeat(50, 1) + 0.05 * torch.randn(200, 8)).reshape(200, 1, 8).repeat(1, 2, 1)
    init = _unit(centres + 0.3 * torch.randn(4, 8)).unsqueeze(0).repeat(2, 1, 1)
    result = spherical_kmeans(x, init, iters=10, tol=1e-5)
    assert int(result.iterations.max()) < 10  # converged early
    again = spherical_kmeans(x, result.codebook, iters=1, tol=0.0)
    assert float((again.codebook - result.codebook).pow(2).mean()) <= 1e-5
    # every cluster recovered its centre
    cos = result.codebook[0] @ centres.t()
    assert float(cos.max(dim=1).values.min()) > 0.99


def test_kmeans_rejects_bad_policy_and_shapes():
    with pytest.raises(ConfigError, match="empty-cluster"):
        spherical_kmeans(torch.randn(5, 1, 2), _unit(torch.randn(1, 2, 2)), empty="drop")
    with pytest.raises(ValueError, match="does not match"):
        spherical_kmeans(torch.randn(5, 2, 2), _unit(torch.randn(1, 2, 2)))


# ---- the epoch cache ----------------------------------------------------------------------------------
def test_reservoir_keeps_everything_below_capacity_and_a_uniform_sample_above():
    small = EmbeddingReservoir(100, seed=0)
    small.add(torch.arange(30.0).reshape(15, 2))
    small.add(torch.arange(30.0, 40.0).reshape(5, 2))
    got = small.take()
    assert torch.equal(got, torch.arange(40.0).reshape(20, 2))
    assert small.take() is None  # emptied

    res = EmbeddingReservoir(50, seed=1)
    for start in range(0, 1000, 10):
        res.add(torch.arange(start, start + 10, dtype=torch.float32).unsqueeze(1))
    assert res.seen == 1000
    kept = res.take().squeeze(1)
    assert kept.shape == (50,) and kept.unique().numel() == 50
    # drawn from the whole epoch, not just its start or end
    assert int((kept < 500).sum()) >= 10 and int((kept >= 500).sum()) >= 10
    again = EmbeddingReservoir(50, seed=1)
    for start in range(0, 1000, 10):
        again.add(torch.arange(start, start + 10, dtype=torch.float32).unsqueeze(1))
    assert torch.equal(again.take().squeeze(1), kept)  # deterministic for a seed


# ---- GhostVLAD ----------------------------------------------------------------------------------------
def _vlad(mode: str) -> GhostVLAD:
    torch.manual_seed(4)
    v = GhostVLAD(6, clusters=3, ghost_clusters=1, mode=mode)
    return v.eval()  # batch-norm with its initial running stats (mean 0, var 1)


def test_reference_vlad_matches_direct_formula_with_its_quirks():
    v = _vlad("reference")
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits = (x @ v.assignment)[..., :3] / math.sqrt(1 + v.bn.eps) * v.bn.weight + v.bn.bias
    a = F.softmax(logits * mask.unsqueeze(-1), dim=-1)  # the mask multiplies the logits
    expected = torch.einsum("bnk,bnd->bkd", a, x) - a.sum(1).unsqueeze(-1) * v.centers
    torch.testing.assert_close(v(x, mask), _unit(expected), rtol=1e-5, atol=1e-6)
    # a padded token gets uniform weights and still counts
    torch.testing.assert_close(v.soft_assign(x, mask)[0, 3], torch.full((3,), 1 / 3))
    moved = x.clone()
    moved[0, 4] += 5.0
    assert not torch.allclose(v(moved, mask)[0], v(x, mask)[0])
    # the ghost column is dropped before the softmax: changing it changes nothing
    with torch.no_grad():
        v.assignment[:, 3] += 10.0
    torch.testing.assert_close(v(x, mask), _unit(expected), rtol=1e-5, atol=1e-6)


def test_textbook_vlad_ignores_padding_and_lets_the_ghost_absorb_weight():
    v = _vlad("textbook")
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    a = v.soft_assign(x, mask)
    assert torch.equal(a[0, 3:], torch.zeros(2, 3))
    assert bool((a[1].sum(-1) < 1).all())  # the ghost took a share of every token
    moved = x.clone()
    moved[0, 4] += 5.0
    torch.testing.assert_close(v(moved, mask), v(x, mask))
    out = v(x, mask)
    with torch.no_grad():  # the ghost column takes part in the softmax
        v.assignment[:, 3] += 1.0
    assert not torch.allclose(v(x, mask), out)
    with pytest.raises(ConfigError, match="mode"):
        GhostVLAD(6, 3, mode="clean")


# ---- AQ-CL --------------------------------------------------------------------------------------------
def test_smoothing_schedule_and_level_weights():
    assert smoothing_weight(1, 50) == pytest.approx(math.cos(math.pi / 100))
    assert smoothing_weight(25, 50) == pytest.approx(math.cos(math.pi / 4))
    assert smoothing_weight(50, 50) == 0.0 and smoothing_weight(60, 50) == 0.0
    w = level_weights(7)
    torch.testing.assert_close(w, torch.tensor([0.125] * 8))
    torch.testing.assert_close(level_weights(3, 0.4), torch.tensor([0.4, 0.2, 0.2, 0.2]))
    with pytest.raises(ValueError):
        level_weights(0, 0.5)


def test_aqcl_loss_matches_direct_computation():
    torch.manual_seed(5)
    b, g, d, tau = 4, 3, 8, 0.05
    t, v, tq, vq = (torch.randn(b, g, d) for _ in range(4))
    w = torch.tensor([0.5, 0.25, 0.25])

    def ce(s):
        return -torch.log_softmax(s, dim=1).diagonal().mean()

    def cos(a, c):
        return _unit(a) @ _unit(c).t()

    aq = sum(w[i] * (ce(cos(t[:, i], vq[:, i]) / tau) + ce(cos(tq[:, i], v[:, i]).t() / tau)) for i in range(g))
    feat = sum(w[i] * (ce(cos(t[:, i], v[:, i]) / tau) + ce(cos(t[:, i], v[:, i]).t() / tau)) for i in range(g))
    got = hybrid_aqcl_loss(t, v, tq, vq, w, temperature=tau, smooth=0.3)
    torch.testing.assert_close(got["loss_aq"], 0.7 * aq)
    torch.testing.assert_close(got["loss_feat"], 0.3 * feat)
