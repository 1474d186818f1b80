"""CDCR: every variant against the spec's formulas written out with explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from vidbench.errors import ConfigError, DataError
from vidbench.models.cdcr import (
    argmax_partner_sets,
    barlow_terms,
    cdcr_loss,
    random_valid_index,
    standardize,
)
from vidbench.models.interaction import l2_normalize, tokenwise_argmax


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: OpenMP thread hand-offs dominate (and stall badly on a shared, loaded CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------------
# loop-based references (float64, plain Python lists)


def _std_loop(rows: list[list[float]]) -> list[list[float]]:
    n, d = len(rows), len(rows[0])
    out = [[0.0] * d for _ in range(n)]
    for k in range(d):
        mean = sum(r[k] for r in rows) / n
        std = math.sqrt(sum((r[k] - mean) ** 2 for r in rows) / (n - 1))  # unbiased
        for i in range(n):
            out[i][k] = (rows[i][k] - mean) / std
    return out


def _corr_loop(za, zb, weights=None, denom=None):
    n, d = len(za), len(za[0])
    weights = weights if weights is not None else [1.0] * n
    denom = denom if denom is not None else n
    return [[sum(weights[r] * za[r][k] * zb[r][m] for r in range(n)) / denom for m in range(d)] for k in range(d)]


def _barlow_loop(c, alpha1, alpha2):
    d = len(c)
    on = sum((c[k][k] - 1.0) ** 2 for k in range(d))
    off = sum(c[k][m] ** 2 for k in range(d) for m in range(d) if k != m)
    return alpha1 * on + alpha2 * off


def _rows(x: torch.Tensor) -> list[list[float]]:
    return x.double().tolist()


def _cos_loop(t, tm, v, vm, b, i, j):
    return float(t[b, i] @ v[b, j]) * float(tm[b, i]) * float(vm[b, j])


def _argmax_first(values):
    best = 0
    for k, x in enumerate(values):
        if x > values[best]:
            best = k
    return best


def _pairs_loop(t, tm, v, vm, padding="zero"):
    """Variant 2/3 pairs: (token rows, partner frames, weights idx) and (frame rows, partner tokens)."""
    bsz, lt, _ = t.shape
    lv = v.shape[1]
    tok, tok_partner, tok_index = [], [], []
    frm, frm_partner, frm_index = [], [], []
    for b in range(bsz):
        for i in range(lt):
            if not tm[b, i]:
                continue
            cands = [_cos_loop(t, tm, v, vm, b, i, j) for j in range(lv)]
            if padding == "neg_inf":
                cands = [c if vm[b, j] else -math.inf for j, c in enumerate(cands)]
            j = _argmax_first(cands)
            tok.append(t[b, i].tolist())
            tok_partner.append(v[b, j].tolist())
            tok_index.append((b, i, j))
        for j in range(lv):
            if not vm[b, j]:
                continue
            cands = [_cos_loop(t, tm, v, vm, b, i, j) for i in range(lt)]
            if padding == "neg_inf":
                cands = [c if tm[b, i] else -math.inf for i, c in enumerate(cands)]
            i = _argmax_first(cands)
            frm.append(v[b, j].tolist())
            frm_partner.append(t[b, i].tolist())
            frm_index.append((b, j, i))
    return tok, tok_partner, tok_index, frm, frm_partner, frm_index


def _batch(seed: int, bsz: int = 4, lt: int = 5, lv: int = 4, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    t = l2_normalize(torch.randn(bsz, lt, d, generator=g, dtype=torch.float64))
    v = l2_normalize(torch.randn(bsz, lv, d, generator=g, dtype=torch.float64))
    tm = (torch.arange(lt)[None] < torch.tensor([5, 3, 4, 2])[:bsz, None]).long()
    vm = (torch.arange(lv)[None] < torch.tensor([4, 2, 3, 3])[:bsz, None]).long()
    wt = torch.softmax(torch.randn(bsz, lt, generator=g, dtype=torch.float64).masked_fill(tm == 0, -math.inf), -1)
    wv = torch.softmax(torch.randn(bsz, lv, generator=g, dtype=torch.float64).masked_fill(vm == 0, -math.inf), -1)
    return t, tm, v, vm, wt, wv


# ---------------------------------------------------------------------------------------------------------


def test_standardize_uses_unbiased_std():
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(standardize(x), torch.tensor(_std_loop(_rows(x)), dtype=torch.float64))
    biased = (x - x.mean(0)) / x.std(0, unbiased=False)
    assert (standardize(x) - biased).abs().max() > 1e-3
    with pytest.raises(DataError, match="at least 2 rows"):
        standardize(x[:1])


def test_barlow_terms_diagonal_and_off_diagonal():
    c = torch.tensor([[0.5, 0.2, -0.1], [0.3, 1.5, 0.0], [0.4, -0.6, 1.0]], dtype=torch.float64)
    assert barlow_terms(c, 1.0, 0.0).item() == pytest.approx(0.25 + 0.25 + 0.0)
    off = 0.2**2 + 0.1**2 + 0.3**2 + 0.4**2 + 0.6**2
    assert barlow_terms(c, 0.0, 1.0).item() == pytest.approx(off)
    assert barlow_terms(c, 0.11, 0.06).item() == pytest.approx(_barlow_loop(c.tolist(), 0.11, 0.06))


def test_dp_variant():
    g = torch.Generator().manual_seed(1)
    eot = l2_normalize(torch.randn(5, 4, generator=g, dtype=torch.float64))
    pooled = l2_normalize(torch.randn(5, 4, generator=g, dtype=torch.float64))
    expect = _barlow_loop(_corr_loop(_std_loop(_rows(eot)), _std_loop(_rows(pooled))), 0.14, 0.3)
    for variant in (1, 2, 3):  # the dp pairing ignores which non-zero variant is asked for
        got = cdcr_loss(variant, text_eot=eot, video_pooled=pooled, alpha1=0.14, alpha2=0.3)
        assert got.item() == pytest.approx(expect, rel=1e-9)
    with pytest.raises(ConfigError, match="both"):
        cdcr_loss(1, text_eot=eot, alpha1=1.0, alpha2=0.0)


def test_variant1_random_pick_is_reproducible_and_matches_the_formula():
    t, tm, v, vm, _, _ = _batch(2)
    tm = tm.flip(-1)  # non-prefix masks: valid positions at the end
    loss_a = cdcr_loss(
        1,
        text_tokens=t,
        text_mask=tm,
        video_frames=v,
        video_mask=vm,
        alpha1=0.5,
        alpha2=0.2,
        generator=torch.Generator().manual_seed(3),
    )
    loss_b = cdcr_loss(
        1,
        text_tokens=t,
        text_mask=tm,
        video_frames=v,
        video_mask=vm,
        alpha1=0.5,
        alpha2=0.2,
        generator=torch.Generator().manual_seed(3),
    )
    assert loss_a.item() == loss_b.item()
    # the same draws, written out: r ~ U{0..9999}, take the (r % n_valid)-th valid position
    g = torch.Generator().manual_seed(3)
    rt = torch.randint(0, 10000, (4,), generator=g).tolist()
    rv = torch.randint(0, 10000, (4,), generator=g).tolist()
    t_pick, v_pick = [], []
    for b in range(4):
        t_valid = [i for i in range(5) if tm[b, i]]
        v_valid = [j for j in range(4) if vm[b, j]]
        t_pick.append(t[b, t_valid[rt[b] % len(t_valid)]].tolist())
        v_pick.append(v[b, v_valid[rv[b] % len(v_valid)]].tolist())
    expect = _barlow_loop(_corr_loop(_std_loop(t_pick), _std_loop(v_pick)), 0.5, 0.2)
    assert loss_a.item() == pytest.approx(expect, rel=1e-9)


def test_random_valid_index_only_picks_valid_positions():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = random_valid_index(mask, g)
        assert bool(mask[torch.arange(3), idx].all())
    with pytest.raises(DataError, match="no valid position"):
        random_valid_index(torch.tensor([[1, 1], [0, 0]]))


def _padded_partner_batch():
    """Batch where, under the zero rule, some argmax partners are padded positions."""
    t, tm, v, vm, wt, wv = _batch(4)
    # item 1: make its first token anti-aligned with every valid frame -> padded frame 2 or 3 wins
    v[1, 0] = l2_normalize(-t[1, 0] + 0.1 * v[1, 0])
    v[1, 1] = l2_normalize(-t[1, 0] + 0.1 * v[1, 1])
    return t, tm, v, vm, wt, wv


def test_argmax_pairs_include_a_padded_partner_under_zero_rule():
    t, tm, v, vm, _, _ = _padded_partner_batch()
    t2v, _ = tokenwise_argmax(t, tm, v, vm, padding="zero")
    assert vm[1, t2v[1, 0]] == 0  # the partner of token (1, 0) is a padded frame
    t2v_neg, _ = tokenwise_argmax(t, tm, v, vm, padding="neg_inf")
    assert vm[1, t2v_neg[1, 0]] == 1
    tok, tok_partner, tok_index, frm, frm_partner, _ = _pairs_loop(t, tm, v, vm)
    assert any(not vm[b, j] for b, _, j in tok_index)
    t_rows, t_part, v_rows, v_part, _, _ = argmax_partner_sets(t, tm, v, vm)
    torch.testing.assert_close(t_rows, torch.tensor(tok, dtype=torch.float64))
    torch.testing.assert_close(t_part, torch.tensor(tok_partner, dtype=torch.float64))
    torch.testing.assert_close(v_rows, torch.tensor(frm, dtype=torch.float64))
    torch.testing.assert_close(v_part, torch.tensor(frm_partner, dtype=torch.float64))


@pytest.mark.parametrize("padding", ["zero", "neg_inf"])
def test_variant2_matches_the_formula(padding):
    t, tm, v, vm, _, _ = _padded_partner_batch()
    tok, tok_partner, _, frm, frm_partner, _ = _pairs_loop(t, tm, v, vm, padding)
    c1 = _corr_loop(_std_loop(tok), _std_loop(tok_partner))  # / N_t
    c2 = _corr_loop(_std_loop(frm), _std_loop(frm_partner))  # / N_v
    c = [[(c1[k][m] + c2[k][m]) / 2 for m in range(6)] for k in range(6)]
    expect = _barlow_loop(c, 0.16, 0.05)
    got = cdcr_loss(
        2,
        text_tokens=t,
        text_mask=tm,
        video_frames=v,
        video_mask=vm,
        alpha1=0.16,
        alpha2=0.05,
        padding=padding,
    )
    assert got.item() == pytest.approx(expect, rel=1e-9)


@pytest.mark.parametrize("padding", ["zero", "neg_inf"])
def test_variant3_matches_the_formula_with_division_by_batch(padding):
    t, tm, v, vm, wt, wv = _padded_partner_batch()
    tok, tok_partner, tok_index, frm, frm_partner, frm_index = _pairs_loop(t, tm, v, vm, padding)
    w_tok = [float(wt[b, i]) for b, i, _ in tok_index]
    w_frm = [float(wv[b, j]) for b, j, _ in frm_index]
    bsz = 4
    assert len(tok) != bsz and len(frm) != bsz  # so dividing by the row count would differ
    c1 = _corr_loop(_std_loop(tok), _std_loop(tok_partner), w_tok, bsz)
    c2 = _corr_loop(_std_loop(frm), _std_loop(frm_partner), w_frm, bsz)
    c = [[(c1[k][m] + c2[k][m]) / 2 for m in range(6)] for k in range(6)]
    expect = _barlow_loop(c, 0.14, 0.0)
    got = cdcr_loss(
        3,
        text_tokens=t,
        text_mask=tm,
        video_frames=v,
        video_mask=vm,
        text_weights=wt,
        video_weights=wv,
        alpha1=0.14,
        alpha2=0.0,
        padding=padding,
    )
    assert got.item() == pytest.approx(expect, rel=1e-9)
    wrong = _barlow_loop(
        [
            [(a * bsz / len(tok) + b * bsz / len(frm)) / 2 for a, b in zip(r1, r2, strict=True)]
            for r1, r2 in zip(c1, c2, strict=True)
        ],
        0.14,
        0.0,
    )
    assert abs(wrong - expect) > 1e-6


def test_variant3_gradients_reach_features_and_weights():
    t, tm, v, vm, wt, wv = _batch(5)
    t = t.clone().requires_grad_(True)
    wt = wt.clone().requires_grad_(True)
    loss = cdcr_loss(
        3,
        text_tokens=t,
        text_mask=tm,
        video_frames=v,
        video_mask=vm,
        text_weights=wt,
        video_weights=wv,
        alpha1=0.11,
        alpha2=0.0,
    )
    loss.backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    assert wt.grad is not None and wt.grad[tm == 1].abs().sum() > 0


def test_variant_zero_and_bad_arguments():
    t, tm, v, vm, wt, wv = _batch(6)
    off = cdcr_loss(0, text_tokens=t, text_mask=tm, video_frames=v, video_mask=vm, alpha1=1.0, alpha2=0.0)
    assert off.item() == 0.0
    with pytest.raises(ConfigError, match="variant"):
        cdcr_loss(4, text_tokens=t, text_mask=tm, video_frames=v, video_mask=vm, alpha1=1.0, alpha2=0.0)
    with pytest.raises(ConfigError, match="weights"):
        cdcr_loss(3, text_tokens=t, text_mask=tm, video_frames=v, video_mask=vm, alpha1=1.0, alpha2=0.0)
    with pytest.raises(DataError, match="pairs text b with video b"):
        cdcr_loss(2, text_tokens=t, text_mask=tm, video_frames=v[:3], video_mask=vm[:3], alpha1=1.0, alpha2=0.0)
    with pytest.raises(ConfigError, match="needs text_tokens"):
        cdcr_loss(2, text_tokens=t, alpha1=1.0, alpha2=0.0)


def test_standardize_constant_channel_is_zero_not_nan():
    x = torch.randn(5, 3)
    x[:, 1] = 0.7  # constant channel: the reference divides 0 by 0 here
    z = standardize(x)
    assert torch.isfinite(z).all() and torch.equal(z[:, 1], torch.zeros(5))
    torch.testing.assert_close(z[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std())
