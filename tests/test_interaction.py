"""DRL interactions: brute-force references, padding rules, blocked scorer, WTI heads."""

from __future__ import annotations

import math

import pytest
import torch

from vidbench.errors import ConfigError, DataError
from vidbench.models.interaction import (
    WTIHead,
    _block_bytes,
    _drl_style_chunk,
    dp_similarity,
    dp_video_embedding,
    prepare_tokens,
    select_eot,
    simple_block_loop_scores,
    tokenwise_argmax,
    tokenwise_scores_blocked,
    tokenwise_similarity,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: OpenMP thread hand-offs dominate (and stall badly on a shared, loaded CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _lengths_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    return (torch.arange(length)[None, :] < lengths[:, None]).long()


def _batch(seed: int, a: int = 5, b: int = 4, lt: int = 6, lv: int = 5, d: int = 8, scramble: bool = False):
    """Random features with random valid lengths; ``scramble`` makes non-prefix masks."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(a, lt, d, generator=g)
    v = torch.randn(b, lv, d, generator=g)
    tm = _lengths_mask(torch.randint(1, lt + 1, (a,), generator=g), lt)
    vm = _lengths_mask(torch.randint(1, lv + 1, (b,), generator=g), lv)
    tm[0] = 1  # at least one full text and one full video
    vm[0] = 1
    if scramble:
        tm = tm[:, torch.randperm(lt, generator=g)]
        vm = vm[:, torch.randperm(lv, generator=g)]
    wt = torch.softmax(torch.randn(a, lt, generator=g).masked_fill(tm == 0, float("-inf")), -1)
    wv = torch.softmax(torch.randn(b, lv, generator=g).masked_fill(vm == 0, float("-inf")), -1)
    return t, tm, v, vm, wt, wv


def _brute(t, tm, v, vm, mode, wt, wv, padding):
    """Per-pair Python loops over a, b, i, j in float64 (spec §3.3 written out)."""
    t = t.double()
    v = v.double()
    a_n, lt, _ = t.shape
    b_n, lv, _ = v.shape
    out = torch.zeros(a_n, b_n, dtype=torch.float64)
    for a in range(a_n):
        for b in range(b_n):
            s = [[0.0] * lv for _ in range(lt)]
            for i in range(lt):
                for j in range(lv):
                    cos = float(t[a, i] @ v[b, j] / (t[a, i].norm() * v[b, j].norm()))
                    s[i][j] = cos * float(tm[a, i]) * float(vm[b, j])
            t2v_terms, v2t_terms = [], []
            for i in range(lt):
                if padding == "zero":
                    m = max(s[i][j] for j in range(lv))
                elif tm[a, i]:
                    m = max(s[i][j] for j in range(lv) if vm[b, j])
                else:
                    m = 0.0
                t2v_terms.append(m)
            for j in range(lv):
                if padding == "zero":
                    m = max(s[i][j] for i in range(lt))
                elif vm[b, j]:
                    m = max(s[i][j] for i in range(lt) if tm[a, i])
                else:
                    m = 0.0
                v2t_terms.append(m)
            if mode == "ti":
                t2v = sum(t2v_terms) / float(tm[a].sum())
                v2t = sum(v2t_terms) / float(vm[b].sum())
            else:
                t2v = sum(float(wt[a, i]) * t2v_terms[i] for i in range(lt))
                v2t = sum(float(wv[b, j]) * v2t_terms[j] for j in range(lv))
            out[a, b] = (t2v + v2t) / 2
    return out


@pytest.mark.parametrize("mode", ["ti", "wti"])
@pytest.mark.parametrize("padding", ["zero", "neg_inf"])
@pytest.mark.parametrize("scramble", [False, True])
def test_tokenwise_similarity_matches_brute_force(mode, padding, scramble):
    t, tm, v, vm, wt, wv = _batch(1, scramble=scramble)
    got = tokenwise_similarity(t, tm, v, vm, mode=mode, text_weights=wt, video_weights=wv, padding=padding)
    ref = _brute(t, tm, v, vm, mode, wt, wv, padding)
    assert got.shape == (5, 4)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_random_features_make_the_padding_rules_differ():
    t, tm, v, vm, wt, wv = _batch(2)
    zero = tokenwise_similarity(t, tm, v, vm, mode="ti", padding="zero")
    neg = tokenwise_similarity(t, tm, v, vm, mode="ti", padding="neg_inf")
    assert (zero - neg).abs().max() > 1e-3  # random cosines are often negative: padded 0 wins
    assert bool((zero >= neg - 1e-6).all())  # an extra candidate 0 can only raise a max


def _negative_case():
    """Text: tokens (1,0), (0,1), pad. Video: frames (-1,0), (-0.6,-0.8), pad (1,0) (would score 1)."""
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    tm = torch.tensor([[1, 1, 0]])
    v = torch.tensor([[[-1.0, 0.0], [-0.6, -0.8], [1.0, 0.0]]])
    vm = torch.tensor([[1, 1, 0]])
    return t, tm, v, vm


def test_padded_zero_wins_only_under_zero_rule():
    t, tm, v, vm = _negative_case()
    # token 0: valid sims -1, -0.6 -> zero rule takes the padded 0; token 1: 0, -0.8 -> 0 either way.
    # frame 0: -1, 0 -> 0; frame 1: -0.6, -0.8 -> zero rule 0, neg_inf -0.6.
    zero = tokenwise_similarity(t, tm, v, vm, mode="ti", padding="zero")
    neg = tokenwise_similarity(t, tm, v, vm, mode="ti", padding="neg_inf")
    assert zero.item() == pytest.approx(0.0, abs=1e-7)
    assert neg.item() == pytest.approx((-0.6 / 2 + -0.6 / 2) / 2, abs=1e-6)
    assert zero.item() - neg.item() == pytest.approx(0.3, abs=1e-6)
    feats_t = {"tokens": prepare_tokens(t, tm), "mask": tm}
    feats_v = {"tokens": prepare_tokens(v, vm), "mask": vm}
    for padding, expect in (("zero", zero), ("neg_inf", neg)):
        blocked = tokenwise_scores_blocked(feats_t, feats_v, mode="ti", padding=padding)
        simple = simple_block_loop_scores(feats_t, feats_v, mode="ti", padding=padding)
        torch.testing.assert_close(blocked, expect, atol=1e-6, rtol=0)
        torch.testing.assert_close(simple, expect, atol=1e-6, rtol=0)


def test_argmax_partners_padding_and_ties():
    t, tm, v, vm = _negative_case()
    t2v, v2t = tokenwise_argmax(t, tm, v, vm, padding="zero")
    # token 0 -> padded frame 2 wins; token 1 -> tie of frame 0 (0.0) and padded frame 2 (0) -> first index
    assert t2v[0, :2].tolist() == [2, 0]
    # frame 0: sims (-1, 0, pad 0) -> token 1 (first of the tie); frame 1: (-0.6, -0.8, pad 0) -> padded 2
    assert v2t[0, :2].tolist() == [1, 2]
    t2v, v2t = tokenwise_argmax(t, tm, v, vm, padding="neg_inf")
    assert t2v[0, :2].tolist() == [1, 0]
    assert v2t[0, :2].tolist() == [1, 0]


def test_argmax_matches_brute_force_on_diagonal_pairs():
    t, tm, v, vm, _, _ = _batch(3, a=4, b=4)
    t2v, v2t = tokenwise_argmax(t, tm, v, vm)
    for b in range(4):
        s = [
            [
                float(t[b, i] @ v[b, j] / (t[b, i].norm() * v[b, j].norm())) * float(tm[b, i] * vm[b, j])
                for j in range(5)
            ]
            for i in range(6)
        ]
        for i in range(6):
            row = s[i]
            assert t2v[b, i].item() == row.index(max(row))
        for j in range(5):
            col = [s[i][j] for i in range(6)]
            assert v2t[b, j].item() == col.index(max(col))


def _feats(t, tm, w):
    return {"tokens": prepare_tokens(t, tm), "mask": tm, "weights": w}


@pytest.mark.parametrize("mode", ["ti", "wti"])
@pytest.mark.parametrize("padding", ["zero", "neg_inf"])
def test_blocked_equals_direct_for_several_budgets(mode, padding):
    t, tm, v, vm, wt, wv = _batch(4, a=37, b=23, lt=9, lv=7, d=16, scramble=True)
    ref = tokenwise_similarity(t, tm, v, vm, mode=mode, text_weights=wt, video_weights=wv, padding=padding)
    text, video = _feats(t, tm, wt), _feats(v, vm, wv)
    budgets = [
        _block_bytes(2, 9, 3, 7, 16, 4),  # tiny blocks
        _block_bytes(5, 9, 7, 7, 16, 4),  # blocks that divide neither 37 nor 23
        _block_bytes(11, 9, 23, 7, 16, 4),
        256 * 2**20,  # everything in one block
    ]
    for budget in budgets:
        got = tokenwise_scores_blocked(text, video, mode=mode, padding=padding, budget_bytes=budget)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    simple = simple_block_loop_scores(text, video, mode=mode, padding=padding, block=5)
    torch.testing.assert_close(simple, ref, atol=1e-5, rtol=0)
    simple32 = simple_block_loop_scores(text, video, mode=mode, padding=padding)
    torch.testing.assert_close(simple32, ref, atol=1e-5, rtol=0)


def test_blocked_accepts_frames_key_bool_masks_and_out_device():
    t, tm, v, vm, wt, wv = _batch(5)
    ref = tokenwise_similarity(t, tm, v, vm, mode="wti", text_weights=wt, video_weights=wv)
    text = {"tokens": prepare_tokens(t, tm), "mask": tm.bool(), "weights": wt}
    video = {"frames": prepare_tokens(v, vm), "mask": vm.bool(), "weights": wv}
    got = tokenwise_scores_blocked(text, video, mode="wti", out_device="cpu")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_blocked_rejects_bad_inputs():
    t, tm, v, vm, wt, wv = _batch(6)
    text, video = _feats(t, tm, wt), _feats(v, vm, wv)
    with pytest.raises(DataError, match="not prepared"):
        tokenwise_scores_blocked({"tokens": t, "mask": tm}, video, mode="ti")
    with pytest.raises(ConfigError, match="weights"):
        tokenwise_scores_blocked({"tokens": text["tokens"], "mask": tm}, video, mode="wti")
    with pytest.raises(ConfigError, match="padding"):
        tokenwise_scores_blocked(text, video, mode="ti", padding="ninf")
    with pytest.raises(ConfigError, match="too small"):
        tokenwise_scores_blocked(text, video, mode="ti", budget_bytes=100)
    empty = tm.clone()
    empty[2] = 0
    with pytest.raises(DataError, match=r"item\(s\) \[2\]"):
        tokenwise_similarity(t, empty, v, vm, mode="ti")
    with pytest.raises(DataError, match="mask"):
        tokenwise_similarity(t, tm[:, :-1], v, vm, mode="ti")


def test_training_gradient_matches_reference_style_chunk():
    t, tm, v, vm, wt, wv = _batch(7)
    grads = []
    for fn in (tokenwise_similarity, _drl_style_chunk):
        tt = t.clone().requires_grad_(True)
        vv = v.clone().requires_grad_(True)
        s = fn(tt, tm, vv, vm, mode="wti", text_weights=wt, video_weights=wv, padding="zero")
        (s * torch.arange(s.numel()).view_as(s)).sum().backward()
        grads.append((tt.grad, vv.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-4)


def test_wti_heads_receive_gradients_through_the_similarity():
    torch.manual_seed(0)
    t, tm, v, vm, _, _ = _batch(8, a=4, b=4, d=16)
    t.requires_grad_(True)
    text_head, video_head = WTIHead(16), WTIHead(16)
    wt = text_head(t, tm)
    wv = video_head(v, vm)
    s = tokenwise_similarity(t, tm, v, vm, mode="wti", text_weights=wt, video_weights=wv)
    logits = 100.0 * s  # the caller's logit scale
    labels = torch.arange(4)
    loss = (
        torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels)
    ) / 2
    loss.backward()
    for head in (text_head, video_head):
        for name, p in head.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert t.grad is not None and t.grad.abs().sum() > 0


def test_wti_head_init_structure_and_weights():
    torch.manual_seed(0)
    head = WTIHead(256, arch=2)
    assert set(head.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(WTIHead(8, arch=1).state_dict()) == {"weight", "bias"}
    assert set(WTIHead(8, arch=3).state_dict()) == {f"{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")}
    w = head.get_parameter("0.weight")
    assert abs(w.std().item() - 0.02) < 0.0005
    assert abs(w.mean().item()) < 0.0005
    for name, p in head.named_parameters():
        if name.endswith("bias"):
            assert bool((p == 0).all()), name
    x = torch.randn(3, 5, 256)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    weights = head(x, mask)
    assert bool((weights[mask == 0] == 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    lin0, lin2 = head.get_submodule("0"), head.get_submodule("2")
    manual = lin2(torch.relu(lin0(x))).squeeze(-1).masked_fill(mask == 0, float("-inf")).softmax(-1)
    torch.testing.assert_close(weights, manual)
    assert weights[2, 0].item() == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        WTIHead(8, arch=4)


def test_dp_similarity_and_eot():
    g = torch.Generator().manual_seed(9)
    tokens = torch.randn(3, 6, 8, generator=g)
    tmask = _lengths_mask(torch.tensor([6, 3, 1]), 6)
    eot = select_eot(tokens, tmask)
    torch.testing.assert_close(eot, torch.stack([tokens[0, 5], tokens[1, 2], tokens[2, 0]]))
    frames = torch.randn(2, 4, 8, generator=g)
    vmask = _lengths_mask(torch.tensor([4, 2]), 4)
    got = dp_similarity(eot, frames, vmask)
    for a in range(3):
        for b in range(2):
            fs = [frames[b, j] / frames[b, j].norm() for j in range(int(vmask[b].sum()))]
            pooled = sum(fs) / len(fs)
            expect = float(eot[a] @ pooled / (eot[a].norm() * pooled.norm()))
            assert got[a, b].item() == pytest.approx(expect, abs=1e-6)
    assert dp_video_embedding(frames, vmask).norm(dim=-1).sub(1).abs().max() < 1e-6


def test_bigger_shapes_stay_exact_under_a_tight_budget():
    """A wider case: many texts of very different lengths, blocked with a tight budget."""
    g = torch.Generator().manual_seed(10)
    nt, nv, lt, lv, d = 150, 70, 32, 12, 32
    t = torch.randn(nt, lt, d, generator=g)
    v = torch.randn(nv, lv, d, generator=g)
    tm = _lengths_mask(torch.randint(1, lt + 1, (nt,), generator=g), lt)
    vm = _lengths_mask(torch.randint(1, lv + 1, (nv,), generator=g), lv)
    wt = torch.softmax(torch.randn(nt, lt, generator=g).masked_fill(tm == 0, float("-inf")), -1)
    wv = torch.softmax(torch.randn(nv, lv, generator=g).masked_fill(vm == 0, float("-inf")), -1)
    ref = tokenwise_similarity(t, tm, v, vm, mode="wti", text_weights=wt, video_weights=wv)
    budget = 2 * 2**20
    assert _block_bytes(nt, lt, nv, lv, d, 4) > 5 * budget  # really blocked
    got = tokenwise_scores_blocked(_feats(t, tm, wt), _feats(v, vm, wv), mode="wti", budget_bytes=budget)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert math.isfinite(got.abs().max().item())
