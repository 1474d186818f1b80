"""EERCF: TIB, weak poolings, Pearson constraint, the training loss, two-stage retrieval and its FLOP count,
each against a direct (loop-by-loop) formula of spec methods-eercf-hcq.md Part A."""

from __future__ import annotations

import math

import pytest
import torch

from vidbench.config import compose
from vidbench.errors import ConfigError, DataError
from vidbench.eval.efficiency import count_flops
from vidbench.eval.retrieval import chunked_scores
from vidbench.eval.two_stage import gather_candidates, merge_reranked, recall_topk, two_stage_scores
from vidbench.methods import build_method
from vidbench.models.eercf import (
    ScoreMix,
    candidate_scores,
    match_flops,
    paired_tib,
    pearson_constraint,
    pearson_correlation,
    symmetric_ce,
    weak_pool,
)

D, T, P = 16, 5, 3
REF_MIX = ScoreMix(video=0.5, frame_weak=0.8, frame_tib=0.2, patch_weak=0.2)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def make_video(n: int, seed: int = 0, *, pad: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, T, dtype=torch.uint8)
    if pad:
        mask[0, T - pad :] = 0
    return {
        "coarse": unit(torch.randn(n, D, generator=g, dtype=torch.float64)),
        "frames_raw": unit(torch.randn(n, T, D, generator=g, dtype=torch.float64)),
        "frames": unit(torch.randn(n, T, D, generator=g, dtype=torch.float64)),
        "frame_mask": mask,
        "patches": unit(torch.randn(n, T, P, D, generator=g, dtype=torch.float64)),
    }


def make_text(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = unit(torch.randn(n, D, generator=g, dtype=torch.float64))
    wg = torch.eye(D, dtype=torch.float64) + 0.1 * torch.randn(D, D, generator=g, dtype=torch.float64)
    return {"text": t, "text_g": t @ wg}


# ---------------------------------------------------------------------------------- direct formulas (loops)
def direct_softmax(values: list[float], tau: float, valid: list[bool] | None = None) -> list[float]:
    valid = valid or [True] * len(values)
    e = [math.exp(v / tau) if ok else 0.0 for v, ok in zip(values, valid, strict=True)]
    return [x / sum(e) for x in e]


def direct_pair(t, v, i, j, wf, *, masked=False):
    """Every fine score of text i against video j, straight from spec A.3."""
    valid = [bool(v["frame_mask"][j, f]) or not masked for f in range(T)]
    s = [float(t["text"][i] @ v["frames_raw"][j, f]) for f in range(T)]
    a = direct_softmax(s, 0.01, valid)
    mixed = [sum(a[g] * float(wf[g, f]) for g in range(T)) * (1.0 if valid[f] else 0.0) for f in range(T)]
    frame_weak = sum(s[f] * mixed[f] for f in range(T))
    b = direct_softmax(s, 0.1, valid)
    u = sum(b[f] * v["frames"][j, f] for f in range(T))
    frame_tib = float(t["text"][i] @ (u / u.norm()))
    patches = v["patches"][j].reshape(T * P, D)
    pvalid = [valid[q // P] for q in range(T * P)]
    q = [float(t["text"][i] @ patches[n]) for n in range(T * P)]
    c = direct_softmax(q, 0.01, pvalid)
    patch_weak = sum(q[n] * c[n] for n in range(T * P))
    w = sum(c[n] * patches[n] for n in range(T * P))
    patch_tib = float(t["text"][i] @ (w / w.norm()))
    video = float(t["text_g"][i] @ v["coarse"][j])
    return {
        "video": video,
        "frame_weak": frame_weak,
        "frame_tib": frame_tib,
        "patch_weak": patch_weak,
        "patch_tib": patch_tib,
    }


def f64(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def all_candidates(n_text: int, n_video: int) -> torch.Tensor:
    return torch.arange(n_video).expand(n_text, n_video)


# ---------------------------------------------------------------------------------- poolings and TIB
@pytest.mark.parametrize("masked", [False, True])
def test_candidate_scores_match_direct_formulas(masked):
    text, video = make_text(3), make_video(4, pad=2)
    wf = torch.eye(T, dtype=torch.float64) + 0.2 * torch.randn(T, T, generator=torch.Generator().manual_seed(5))
    wf = wf.to(torch.float64)
    cand = all_candidates(3, 4)
    every = ScoreMix(video=1, frame_weak=1, frame_tib=1, patch_weak=1, patch_tib=1)
    got = candidate_scores(
        text["text"], gather_candidates(video, cand, video.keys()), every, frame_mix=wf, mask_padded=masked
    )
    for name in ("frame_weak", "frame_tib", "patch_weak", "patch_tib"):
        want = f64([[direct_pair(text, video, i, j, wf, masked=masked)[name] for j in range(4)] for i in range(3)])
        torch.testing.assert_close(got[name].double(), want, rtol=1e-5, atol=1e-6, msg=name)


def test_padded_frames_enter_the_softmax_by_default_and_not_when_masked():
    video = make_video(1, pad=2)
    sims = torch.tensor([[0.1, 0.2, 0.3, 0.9, 0.8]], dtype=torch.float64)  # the padded frames 3, 4 score highest
    mask = video["frame_mask"]
    ref = weak_pool(sims, 0.01)
    masked = weak_pool(sims, 0.01, mask)
    assert ref.item() > 0.85  # the padded frame at 0.9 dominates, as in the reference
    assert masked.item() == pytest.approx(0.3, abs=1e-4)  # only valid frames: the 0.3 frame dominates
    u = paired_tib(sims, video["frames"][0][None], 0.1, mask)
    w = torch.softmax(sims[0, :3] / 0.1, 0)
    want = unit((w[:, None] * video["frames"][0, :3]).sum(0))
    torch.testing.assert_close(u[0], want)


def test_paired_tib_weights_come_from_the_paired_caption_and_are_detached():
    sims = torch.randn(4, T, dtype=torch.float64, requires_grad=True)
    feats = unit(torch.randn(4, T, D, dtype=torch.float64)).requires_grad_(True)
    u = paired_tib(sims, feats, 0.1)
    want = unit(torch.einsum("bf,bfd->bd", torch.softmax(sims / 0.1, -1), feats))
    torch.testing.assert_close(u, want)
    u.sum().backward()
    assert sims.grad is None and feats.grad is not None and feats.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------- Pearson constraint
def test_pearson_correlation_is_scaled_pearson_r_and_loss_matches_direct_formula():
    g = torch.Generator().manual_seed(3)
    a, z = torch.randn(9, 6, generator=g, dtype=torch.float64), torch.randn(9, 6, generator=g, dtype=torch.float64)
    z = z + 0.7 * a
    c = pearson_correlation(a, z)
    r = torch.stack([torch.corrcoef(torch.stack([a[:, d], z[:, d]]))[0, 1] for d in range(6)])
    torch.testing.assert_close(torch.diagonal(c), (8 / 9) * r)
    want = 0.14 * sum((c[d, d] - 1) ** 2 for d in range(6))
    torch.testing.assert_close(pearson_constraint(a, z), want)
    off = sum(c[d, e] ** 2 for d in range(6) for e in range(6) if d != e)
    torch.testing.assert_close(pearson_constraint(a, z, 0.14, 0.5), want + 0.5 * off)
    with pytest.raises(DataError, match="at least 2 pairs"):
        pearson_constraint(a[:1], z[:1])


# ---------------------------------------------------------------------------------- the method's training loss
@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    cfg = compose("eercf_tiny_8f_b64_synth-msrvtt", ["data.max_frames=5"])
    m = build_method(cfg).double()
    with torch.no_grad():
        m.frame_logit_weight.add_(0.1 * torch.randn(T, T, dtype=torch.float64))
    return m


def test_training_loss_matches_the_spec_mix(method):
    text, video = make_text(4), make_video(4, pad=1)
    terms = method.training_loss(text, video)
    ls = method.clip.logit_scale.exp().double()
    wf = method.frame_logit_weight.detach()
    pair = [[direct_pair(text, video, i, j, wf) for j in range(4)] for i in range(4)]
    weak = f64([[0.5 * p["video"] + 0.5 * p["frame_weak"] + 0.05 * p["patch_weak"] for p in row] for row in pair])
    # training TIB: video j re-weighted by its own caption j, then scored against every text i
    u = torch.stack(
        [
            unit(
                sum(
                    w * video["frames"][j, f]
                    for f, w in enumerate(
                        direct_softmax([float(text["text"][j] @ video["frames_raw"][j, f]) for f in range(T)], 0.1)
                    )
                )
            )
            for j in range(4)
        ]
    )
    strong = text["text"] @ u.t()
    torch.testing.assert_close(terms["loss_weak"].double(), 0.8 * symmetric_ce(ls * weak), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["loss_strong"].double(), 0.2 * symmetric_ce(ls * strong), rtol=1e-5, atol=1e-6)
    intra = pearson_constraint(text["text"], video["coarse"]) + pearson_constraint(text["text"], u)
    torch.testing.assert_close(terms["loss_pearson"].double(), 0.001 * intra, rtol=1e-5, atol=1e-8)
    assert set(terms) == {"loss_weak", "loss_strong", "loss_pearson"}


def test_extra_parameters_start_at_identity_and_frame_count_is_checked():
    cfg = compose("eercf_tiny_8f_b64_synth-msrvtt")
    m = build_method(cfg)
    assert torch.equal(m.global_mat_weight.detach(), torch.eye(64))
    assert torch.equal(m.frame_logit_weight.detach(), torch.eye(8))
    with pytest.raises(ConfigError, match="frame_logit_weight"):
        m.frame_mix(9)


# ---------------------------------------------------------------------------------- two-stage retrieval
def rerank_protocol(method, text, video, name):
    return next(p for p in method.protocols(text, video) if p.name == name)


def test_two_stage_with_k_equal_n_is_the_rerank_mix_of_every_pair(method):
    text, video = make_text(5), make_video(7, pad=1)
    with torch.no_grad():
        got = two_stage_scores(
            text, video, coarse_fn=method.score, fine_fn=method._fine_fn(REF_MIX), k=7, keys=video.keys()
        )
    wf = method.frame_logit_weight.detach()
    want = f64(
        [
            [sum(getattr(REF_MIX, n) * s for n, s in direct_pair(text, video, i, j, wf).items()) for j in range(7)]
            for i in range(5)
        ]
    )
    torch.testing.assert_close(got.double(), 100.0 + want, rtol=1e-5, atol=1e-6)  # the reference's 100 + ls * mix


def test_two_stage_with_k_one_keeps_the_coarse_top1_and_candidates_outrank_the_rest(method):
    text, video = make_text(6), make_video(20)
    coarse = method.score(text, video)
    with torch.no_grad():
        one = two_stage_scores(
            text, video, coarse_fn=method.score, fine_fn=method._fine_fn(REF_MIX), k=1, keys=video.keys()
        )
        five = two_stage_scores(
            text, video, coarse_fn=method.score, fine_fn=method._fine_fn(REF_MIX), k=5, keys=video.keys()
        )
    assert torch.equal(one.argmax(1), coarse.argmax(1))
    cand = recall_topk(coarse, 5)
    is_cand = torch.zeros_like(coarse, dtype=torch.bool).scatter(1, cand, True)
    for i in range(6):
        assert five[i][is_cand[i]].min() > five[i][~is_cand[i]].max()
        torch.testing.assert_close(five[i][~is_cand[i]], coarse[i][~is_cand[i]])  # non-candidates keep coarse
        # candidates are ordered by the rerank mix, not by the coarse score
        order = torch.argsort(five[i][cand[i]], descending=True)
        wf = method.frame_logit_weight.detach()
        mixed = [
            sum(getattr(REF_MIX, n) * s for n, s in direct_pair(text, video, i, int(j), wf).items()) for j in cand[i]
        ]
        assert order.tolist() == torch.argsort(torch.tensor(mixed), descending=True).tolist()


def test_merge_reranked_scales_every_score_and_lifts_candidates_by_100():
    coarse = torch.tensor([[0.9, 0.1, 0.5, 0.3]], dtype=torch.float64)
    cand = torch.tensor([[0, 2]])
    out = merge_reranked(coarse, cand, torch.tensor([[-0.2, 0.3]], dtype=torch.float64), logit_scale=20.0)
    torch.testing.assert_close(out, torch.tensor([[100.0 - 4.0, 2.0, 106.0, 6.0]], dtype=torch.float64))
    whole = merge_reranked(coarse, torch.tensor([[3, 2, 1, 0]]), torch.tensor([[4.0, 3.0, 2.0, 1.0]]).double())
    assert whole.tolist() == [[101.0, 102.0, 103.0, 104.0]]


def test_two_stage_protocol_is_chunk_invariant_over_texts(method):
    text, video = make_text(9), make_video(12)
    proto = rerank_protocol(method, text, video, "rerank@10")
    assert proto.whole_gallery
    one = chunked_scores(proto.score, text, video, text_chunk=9, video_chunk=12)
    chunked = chunked_scores(proto.score, text, video, text_chunk=2, video_chunk=12)
    torch.testing.assert_close(one, chunked)


# ---------------------------------------------------------------------------------- index bytes and FLOPs
def test_protocols_and_index_bytes_per_choice(method):
    text, video = make_text(3), make_video(4)
    protos = {p.name: p for p in method.protocols(text, video)}
    assert list(protos) == ["base", "rerank@10", "rerank@10-frames"]
    coarse, frames, mask, patches = D * 8, 2 * T * D * 8, T, T * P * D * 8  # float64 features, uint8 mask
    assert protos["base"].index_bytes_per_video == coarse
    assert protos["rerank@10-frames"].index_bytes_per_video == coarse + frames + mask
    assert protos["rerank@10"].index_bytes_per_video == coarse + frames + mask + patches
    no_patches = {k: v for k, v in video.items() if k != "patches"}
    assert [p.name for p in method.protocols(text, no_patches)] == ["base", "rerank@10-frames"]


@pytest.mark.parametrize(("n_gallery", "k"), [(40, 10), (120, 7)])
@pytest.mark.parametrize("name", ["base", "rerank@10", "rerank@10-frames"])
def test_match_flops_formula_equals_the_flop_counter_on_the_real_score(method, n_gallery, k, name):
    cfg = compose("eercf_tiny_8f_b64_synth-msrvtt", ["data.max_frames=5", f"method.rerank_k={k}"])
    torch.manual_seed(0)
    m = build_method(cfg).double().eval()
    text, video = make_text(1), make_video(n_gallery)
    proto = rerank_protocol(m, text, video, name.replace("@10", f"@{k}"))
    with torch.no_grad():
        counted = count_flops(lambda: proto.score(text, video)).total
    formula = proto.match_flops(n_gallery)
    assert counted > 0 and abs(formula - counted) <= 0.05 * counted, (formula, counted)
    if name == "base":
        assert formula == 2 * n_gallery * D


def test_spec_convention_reproduces_the_spec_a7_numbers():
    full, frames_only = REF_MIX, REF_MIX.without_patches()
    per_candidate = match_flops(1000, 1, 512, 12, 49, full, convention="spec") - 2 * 1000 * 512
    assert per_candidate == pytest.approx(632e3, rel=0.005)
    no_patch = match_flops(1000, 1, 512, 12, 49, frames_only, convention="spec") - 2 * 1000 * 512
    assert no_patch == pytest.approx(27e3, rel=0.02)
    per_pair = match_flops(1000, 50, 512, 12, 49, full, convention="spec") / 1000
    assert per_pair == pytest.approx(32.6e3, rel=0.005)
    assert match_flops(1000, 50, 512, 12, 49, frames_only, convention="spec") / 1000 == pytest.approx(2.4e3, rel=0.01)
    # counted convention: a fraction of token-wise matching (2 * 32 * 12 * 512 per pair) at k = 50 of 1,000
    assert match_flops(1000, 50, 512, 12, 49, full) / 1000 < 0.1 * (2 * 32 * 12 * 512)
    with pytest.raises(ConfigError):
        match_flops(1000, 50, 512, 12, 49, full, convention="macs")


def test_bfloat16_features_score_close_to_full_precision():
    text, video = make_text(3), make_video(4, pad=1)
    feats = gather_candidates(video, all_candidates(3, 4), video.keys())
    every = ScoreMix(video=1, frame_weak=1, frame_tib=1, patch_weak=1, patch_tib=1)
    wf = torch.eye(T)
    full = candidate_scores(text["text"].float(), {k: v.float() for k, v in feats.items()}, every, frame_mix=wf)
    half = candidate_scores(
        text["text"].bfloat16(), {k: v.bfloat16() for k, v in feats.items()}, every, frame_mix=wf.bfloat16()
    )
    for name, value in full.items():
        assert half[name].dtype == torch.float32 or name.endswith("tib")
        torch.testing.assert_close(half[name].float(), value, atol=3e-2, rtol=0, msg=name)
