"""A float64 run scores in float64: the test-time token preparation and the stored test features keep fp64
(only fp16/bf16 are upcast, to fp32), so DRL's WTI scores match a float64 brute force to 1e-10."""

from __future__ import annotations

import math

import torch

from vidbench.config import compose
from vidbench.methods import build_method
from vidbench.models.interaction import prepare_tokens

F64 = torch.float64


def prefix_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(torch.long)


def brute_wti(t, tm, v, vm, wt_logits, wv_logits) -> list[list[float]]:
    """DRL's WTI, pair by pair in Python floats: padded similarities are 0 inside the max (the reference)."""

    def unit(x):
        n = math.sqrt(sum(float(c) ** 2 for c in x))
        return [float(c) / n for c in x]

    def softmax(logits, valid):
        m = max(float(x) for x, ok in zip(logits, valid, strict=True) if ok)
        e = [math.exp(float(x) - m) if ok else 0.0 for x, ok in zip(logits, valid, strict=True)]
        return [x / sum(e) for x in e]

    out = []
    for a in range(t.shape[0]):
        tv = [bool(x) for x in tm[a]]
        tn = [unit(t[a, i]) for i in range(t.shape[1])]
        wt = softmax(wt_logits[a], tv)
        row = []
        for b in range(v.shape[0]):
            vv = [bool(x) for x in vm[b]]
            vn = [unit(v[b, j]) for j in range(v.shape[1])]
            wv = softmax(wv_logits[b], vv)
            s = [
                [
                    sum(p * q for p, q in zip(tn[i], vn[j], strict=True)) if tv[i] and vv[j] else 0.0
                    for j in range(len(vn))
                ]
                for i in range(len(tn))
            ]
            t2v = sum(wt[i] * max(s[i]) for i in range(len(tn)))
            v2t = sum(wv[j] * max(s[i][j] for i in range(len(tn))) for j in range(len(vn)))
            row.append((t2v + v2t) / 2)
        out.append(row)
    return out


def test_drl_wti_scores_in_float64_match_a_float64_brute_force():
    torch.manual_seed(0)
    m = build_method(compose("drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt")).double().eval()
    g = torch.Generator().manual_seed(3)
    n_text, n_video, lt, lv, d = 4, 5, 6, 3, m.clip.embed_dim
    t = torch.randn(n_text, lt, d, generator=g, dtype=F64)
    v = torch.randn(n_video, lv, d, generator=g, dtype=F64)
    tm, vm = prefix_mask([6, 2, 4, 1], lt), prefix_mask([3, 1, 2, 3, 2], lv)
    with torch.no_grad():
        text = {"tokens": prepare_tokens(t, tm), "mask": tm, "weights": m.text_weight_fc(t, tm)}
        video = {"frames": prepare_tokens(v, vm), "mask": vm, "weights": m.video_weight_fc(v, vm)}
        # through the stored-test-feature path (what on_test_epoch_end scores)
        m.encode_text_batch = lambda batch: text
        m.encode_video_batch = lambda batch: video
        stored_t = m._eval_features({"index": torch.arange(n_text)}, 0)
        stored_v = m._eval_features({"index": torch.arange(n_video)}, 1)
        stored_t.pop("_index"), stored_v.pop("_index")
        assert {k: x.dtype for k, x in stored_t.items() if x.is_floating_point()} == {"tokens": F64, "weights": F64}
        got = m.score(stored_t, stored_v)
        want = torch.tensor(brute_wti(t, tm, v, vm, m.text_weight_fc.logits(t), m.video_weight_fc.logits(v)), dtype=F64)
        as32 = {k: x.float() if x.is_floating_point() else x for k, x in stored_t.items()}
        got32 = m.score(as32, {k: x.float() if x.is_floating_point() else x for k, x in stored_v.items()})
    assert got.dtype == F64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert (got32.double() - want).abs().max() > 1e-10  # a float32 pass would not meet the tolerance


def test_only_half_features_are_upcast_when_stored():
    m = build_method(compose("drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt"))
    feats = {
        "a": torch.ones(2, 3, dtype=torch.bfloat16),
        "b": torch.ones(2, 3, dtype=torch.float16),
        "c": torch.ones(2, 3, dtype=F64),
        "mask": torch.ones(2, 3, dtype=torch.long),
    }
    m.encode_text_batch = lambda batch: feats
    stored = m._eval_features({"index": torch.arange(2)}, 0)
    assert [stored[k].dtype for k in ("a", "b", "c", "mask")] == [torch.float32, torch.float32, F64, torch.long]
    half = torch.randn(2, 4, 8).to(torch.bfloat16)
    assert prepare_tokens(half, torch.ones(2, 4)).dtype == torch.float32
    assert prepare_tokens(half.double(), torch.ones(2, 4)).dtype == F64
