"""HCQ's quantiser, spherical k-means, reservoir cache, GhostVLAD and AQ-CL against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

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
    result = spherical_kmeans(x, init, iters=10, tol=1e-5, stop="converged")
    assert int(result.iterations.max()) < 10  # converged early
    again = spherical_kmeans(x, result.codebook, iters=1, tol=0.0)
    assert float((again.codebook - result.codebook).pow(2).mean()) <= 1e-5
    # every cluster recovered its centre
    cos = result.codebook[0] @ centres.t()
    assert float(cos.max(dim=1).values.min()) > 0.99


def _reference_kmeans_loop(x: Tensor, init: Tensor, iters: int) -> tuple[Tensor, list[int]]:
    """The reference's per-sub-codebook loop written from the issue text: assign by cosine, members' mean (empty
    cluster -> 0), normalise; from round 2 on its test compares the new means with the previous tensor, which its
    in-place update already overwrote with this round's *unnormalised* means. Returns the codebook and the rounds
    each sub-codebook ran."""
    x = _unit(x.double())
    out, rounds = init.double().clone(), []
    for m in range(x.shape[1]):
        data, code = x[:, m], init[m].double().clone()
        ran = 0
        for it in range(iters):
            ran += 1
            labels = (data @ code.t()).argmax(-1)
            raw = torch.zeros_like(code)
            for i, lab in enumerate(labels.tolist()):
                raw[lab] += data[i]
            counts = torch.bincount(labels, minlength=code.shape[0]).double().unsqueeze(-1)
            raw = raw / (counts + 1e-6)
            new = torch.where(counts > 0, raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-12), torch.zeros_like(raw))
            previous = code if it == 0 else raw  # the overwritten tensor from the second round on
            if float((previous - new).pow(2).mean()) <= 1e-5:
                break
            code = new
        out[m] = code
        rounds.append(ran)
    return out, rounds


def test_kmeans_runs_all_iterations_by_default_like_the_reference():
    """Item 3 of issue 11: on data where the reference's test never fires, the default runs every iteration and
    ends where the reference loop ends; ``stop="converged"`` stops as soon as the codebook stops moving."""
    torch.manual_seed(11)
    centres = _unit(torch.randn(4, 8))
    x = (centres.repeat(30, 1) + 0.4 * torch.randn(120, 8)).reshape(120, 1, 8).repeat(1, 2, 1)
    x[:, 1] = torch.randn(120, 8)  # a second sub-codebook with unrelated data
    init = _unit(torch.randn(2, 4, 8))
    ref, rounds = _reference_kmeans_loop(x, init, iters=10)
    assert rounds == [10, 10]  # the means' distance from unit norm stays above 1e-5
    got = spherical_kmeans(x, init, iters=10, tol=1e-5)
    assert got.iterations.tolist() == [10, 10]
    torch.testing.assert_close(got.codebook.double(), ref, rtol=1e-5, atol=1e-5)
    early = spherical_kmeans(x, init, iters=10, tol=1e-5, stop="converged")
    assert int(early.iterations[0]) < 10  # the clustered sub-codebook stopped as soon as it stopped moving
    torch.testing.assert_close(early.codebook, got.codebook, rtol=0, atol=1e-2)  # near its fixed point
    with pytest.raises(ConfigError, match="stop"):
        spherical_kmeans(x, init, stop="early")


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


def _reference_vlad_brute_force(v: GhostVLAD, x: Tensor, mask: Tensor, stats: tuple[Tensor, Tensor] | None):
    """HCQ's NetVLAD written token by token: logits of the K real columns, times the mask, batch-norm (batch
    statistics over all B * N rows when ``stats`` is None, else the given running mean/var), softmax over K,
    ``V_k = sum_n a_nk x_n - (sum_n a_nk) c_k``, L2 per cluster."""
    b, n, _ = x.shape
    k = v.clusters
    x, assignment = x.detach(), v.assignment.detach()
    rows = [
        [[float(x[i, t] @ assignment[:, c]) * float(mask[i, t]) for c in range(k)] for t in range(n)] for i in range(b)
    ]
    flat = [rows[i][t] for i in range(b) for t in range(n)]
    if stats is None:
        mean = [sum(r[c] for r in flat) / len(flat) for c in range(k)]
        var = [sum((r[c] - mean[c]) ** 2 for r in flat) / len(flat) for c in range(k)]
    else:
        mean, var = stats[0].tolist(), stats[1].tolist()
    out = torch.zeros(b, k, x.shape[-1], dtype=torch.float64)
    weights = torch.zeros(b, n, k, dtype=torch.float64)
    for i in range(b):
        for t in range(n):
            z = [
                (rows[i][t][c] - mean[c]) / math.sqrt(var[c] + v.bn.eps) * float(v.bn.weight[c].detach())
                + float(v.bn.bias[c].detach())
                for c in range(k)
            ]
            top = max(z)
            e = [math.exp(zc - top) for zc in z]
            weights[i, t] = torch.tensor([ec / sum(e) for ec in e], dtype=torch.float64)
        for c in range(k):
            for t in range(n):
                out[i, c] += weights[i, t, c] * (x[i, t].double() - v.centers[c].detach().double())
    return _unit(out).float(), weights.float()


def test_reference_vlad_masks_logits_before_the_batch_norm_train_and_eval():
    """Item 1 of issue 11: mask x logits, then BatchNorm1d(K) over all B*N rows (padding's zeros included in the
    batch and the running statistics), then softmax; checked in train and eval mode against a brute force."""
    v = _vlad("reference")
    with torch.no_grad():  # a non-trivial affine part, so BN(0) = bias - mean/std * weight is visible
        v.bn.weight.uniform_(0.5, 1.5)
        v.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    # train mode: batch statistics, and the running statistics move by momentum 0.1 with the unbiased variance
    v.train()
    got = v(x, mask)
    expected, weights = _reference_vlad_brute_force(v, x, mask, None)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(v.soft_assign(x, mask), weights, rtol=1e-4, atol=1e-5)
    logits = ((x @ v.assignment)[..., :3] * mask.unsqueeze(-1)).reshape(-1, 3).detach()
    n_rows = logits.shape[0]
    batch_mean, batch_var = logits.mean(0), logits.var(0, unbiased=False)
    # two forward passes in train mode above (forward + soft_assign): the running stats moved twice
    mean1 = 0.9 * torch.zeros(3) + 0.1 * batch_mean
    var1 = 0.9 * torch.ones(3) + 0.1 * batch_var * n_rows / (n_rows - 1)
    torch.testing.assert_close(v.bn.running_mean, 0.9 * mean1 + 0.1 * batch_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        v.bn.running_var, 0.9 * var1 + 0.1 * batch_var * n_rows / (n_rows - 1), rtol=1e-5, atol=1e-6
    )
    # a masked token's logits are BN(0), not 0: in train mode they differ from the real tokens' and from 0
    masked_z = (0 - batch_mean) / torch.sqrt(batch_var + v.bn.eps) * v.bn.weight + v.bn.bias
    torch.testing.assert_close(v.soft_assign(x, mask)[0, 3], torch.softmax(masked_z, -1).detach(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(torch.softmax(masked_z, -1), torch.full((3,), 1 / 3), atol=1e-3)
    # eval mode: the running statistics
    v.eval()
    got = v(x, mask)
    expected, _ = _reference_vlad_brute_force(v, x, mask, (v.bn.running_mean, v.bn.running_var))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # a padded token still counts with its own features
    moved = x.clone()
    moved[0, 4] += 5.0
    assert not torch.allclose(v(moved, mask)[0], v(x, mask)[0])
    # the ghost column is dropped before the softmax: changing it changes nothing
    with torch.no_grad():
        v.assignment[:, 3] += 10.0
    torch.testing.assert_close(v(x, mask), got)


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
    torch.testing.assert_close(level_weights(3, 0.4, 0.6), torch.tensor([0.4, 0.2, 0.2, 0.2]))
    torch.testing.assert_close(level_weights(0, 0.5, 0.875), torch.tensor([0.5]))
    with pytest.raises(ValueError):
        level_weights(0, 0.0)
    with pytest.raises(ValueError):
        level_weights(3, -1.0, 2.0)


@pytest.mark.parametrize(
    ("fine", "cls", "vlad"), [(7, 0.125, 0.875), (1, 2.0, 2.0), (3, 1.3333, 2.0), (15, 1.0667, 2.0), (31, 1.0323, 2.0)]
)
def test_level_weights_follow_the_configs_pair_in_loss_and_score(fine, cls, vlad):
    """Item 2 of issue 11: loss = w_cls L_cls + w_vlad mean_l L_vlad,l and score = w_cls cos_cls + w_vlad mean_l
    cos_l, for the reference configs' pairs (not 1 / (L + 1))."""
    from vidbench.eval.adc import adc_scores, dense_level_scores

    torch.manual_seed(fine)
    b, d, m, k, tau = 4, 8, 2, 4, 0.05
    g = fine + 1
    t, v, tq, vq = (split_normalize(torch.randn(b, g, d), m) for _ in range(4))
    w = level_weights(fine, cls, vlad)
    got = hybrid_aqcl_loss(t, v, tq, vq, w, temperature=tau, smooth=0.0)["loss_aq"]

    def ce(s):
        return -torch.log_softmax(s, dim=1).diagonal().mean()

    def level_aq(i):
        return ce(_unit(t[:, i]) @ _unit(vq[:, i]).t() / tau) + ce((_unit(tq[:, i]) @ _unit(v[:, i]).t()).t() / tau)

    expected = cls * level_aq(0) + vlad * sum(level_aq(i) for i in range(1, g)) / fine
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the score: dense and ADC on codes use the same pair
    cos = [_unit(t[:, i]) @ _unit(v[:, i]).t() for i in range(g)]
    dense = cls * cos[0] + vlad * sum(cos[1:]) / fine
    torch.testing.assert_close(dense_level_scores(t, v, w), dense, rtol=1e-5, atol=1e-5)
    books = _unit(torch.randn(g, m, k, d // m))
    codes = torch.randint(0, k, (5, g, m), dtype=torch.uint8)
    rec = torch.stack([torch.cat([books[i, j, codes[:, i, j].long()] for j in range(m)], -1) for i in range(g)], 1)
    rcos = [t[:, i] @ rec[:, i].t() / m for i in range(g)]  # both have norm sqrt(M): a cosine
    expected_adc = cls * rcos[0] + vlad * sum(rcos[1:]) / fine
    torch.testing.assert_close(adc_scores(t, books, codes, w), expected_adc, rtol=1e-5, atol=1e-5)


def _debiased_brute_force(sims: Tensor, tau: float, prior: float) -> Tensor:
    """One direction of the reference's debiased InfoNCE, row by row in float64."""
    b = sims.shape[0]
    n = b - 1
    total = 0.0
    for i in range(b):
        pos = math.exp(float(sims[i, i]) / tau)
        neg = sum(math.exp(float(sims[i, j]) / tau) for j in range(b) if j != i)
        ng = max((-prior * n * pos + neg) / (1 - prior), math.exp(-n / tau))
        total += -math.log(pos / (pos + ng))
    return torch.tensor(total / b)


def test_debiased_infonce_matches_the_rule_and_is_infonce_at_prior_zero():
    """Item 5 of issue 11: Ng = clamp((-tau+ N pos + sum neg) / (1 - tau+), min=exp(-N / tau)), N = B - 1."""
    from vidbench.models.aqcl import debiased_infonce

    torch.manual_seed(2)
    sims = torch.tanh(torch.randn(6, 6))
    for tau, prior in [(0.05, 0.0), (0.05, 0.1), (0.07, 0.3), (0.5, 0.05)]:
        got = debiased_infonce(sims / tau, tau, prior)
        torch.testing.assert_close(got.double(), _debiased_brute_force(sims, tau, prior).double(), rtol=1e-6, atol=1e-6)
    plain = -torch.log_softmax(sims / 0.05, dim=1).diagonal().mean()
    torch.testing.assert_close(debiased_infonce(sims / 0.05, 0.05, 0.0), plain, rtol=1e-6, atol=1e-6)
    # the clamp: with a large prior the raw Ng is negative; the floor exp(-N / tau) takes over
    torch.testing.assert_close(
        debiased_infonce(sims / 0.5, 0.5, 0.9).double(),
        _debiased_brute_force(sims, 0.5, 0.9).double(),
        rtol=1e-6,
        atol=1e-6,
    )
    # no overflow at a small temperature (exp(1 / 0.005) is far beyond float32)
    assert torch.isfinite(debiased_infonce(sims / 0.005, 0.005, 0.1))
    with pytest.raises(ValueError, match="prior"):
        debiased_infonce(sims, 0.05, 1.0)


def test_code_term_and_pq_regulariser_match_brute_force():
    """Item 5 of issue 11: S_code[i, j] = sum_k s_t[i, m, k] s_v[j, m, k] per sub-codebook, InfoNCE on it averaged
    over M and mixed over levels with the level weights (coarse InfoNCE, fine debiased); the PQ regulariser is
    sum_d (x_normalized - x_hat)^2 per row; both scaled by (1 - w_e) and their weights."""
    torch.manual_seed(9)
    b, g, m, k, d, tau, prior, smooth = 5, 3, 2, 4, 8, 0.07, 0.1, 0.25
    ts, vs = (torch.softmax(torch.randn(b, g, m, k) * 3, -1) for _ in range(2))
    t, v, tq, vq, th, vh = (split_normalize(torch.randn(b, g, d), m) for _ in range(6))
    w = level_weights(g - 1, 0.4, 1.2)
    got = hybrid_aqcl_loss(
        t, v, tq, vq, w, temperature=tau, smooth=smooth, prior=prior,
        code_weight=0.3, text_soft=ts, video_soft=vs, pq_reg_weight=0.2, text_hard=th, video_hard=vh,
    )  # fmt: skip

    def ce(s):
        return float(-torch.log_softmax(s.double() / tau, dim=1).diagonal().mean())

    code = 0.0
    for lvl in range(g):
        per_m = []
        for sub in range(m):
            s_code = torch.zeros(b, b)
            for i in range(b):
                for j in range(b):
                    s_code[i, j] = sum(float(ts[i, lvl, sub, kk] * vs[j, lvl, sub, kk]) for kk in range(k))
            if lvl == 0:
                per_m.append(ce(s_code) + ce(s_code.t()))
            else:
                per_m.append(
                    float(_debiased_brute_force(s_code, tau, prior) + _debiased_brute_force(s_code.t(), tau, prior))
                )
        code += float(w[lvl]) * sum(per_m) / m
    torch.testing.assert_close(
        got["loss_code"].double(), torch.tensor((1 - smooth) * 0.3 * code).double(), rtol=1e-5, atol=1e-6
    )

    def reg(x, h):
        return [sum(float(((x[i, lvl] - h[i, lvl]) ** 2).sum()) for i in range(b)) / b for lvl in range(g)]

    per_level = [(a + c) / 2 for a, c in zip(reg(t, th), reg(v, vh), strict=True)]
    expected_reg = (1 - smooth) * 0.2 * sum(per_level) / g
    torch.testing.assert_close(got["loss_pq_reg"].double(), torch.tensor(expected_reg).double(), rtol=1e-5, atol=1e-6)
    # weight 0 (every reference config): the terms are absent, and the rest is unchanged
    plain = hybrid_aqcl_loss(t, v, tq, vq, w, temperature=tau, smooth=smooth, prior=prior)
    assert set(plain) == {"loss_aq", "loss_feat"}
    torch.testing.assert_close(plain["loss_aq"], got["loss_aq"])
    with pytest.raises(ValueError, match="soft codes"):
        hybrid_aqcl_loss(t, v, tq, vq, w, temperature=tau, smooth=smooth, code_weight=1.0)


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
