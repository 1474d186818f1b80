"""EERCF's ``rerank@k`` in both directions against a brute force of the reference rule (main_eercf.eval_epoch).

The reference writes one logit matrix: every pair ``ls * coarse``, each text's top-k candidates (by coarse)
overwritten by ``100 + ls * mix``; t2v metrics read its rows, v2t metrics its transpose. The brute force
below follows that description with Python loops; the score under test is the method's own protocol.
"""

from __future__ import annotations

import torch

from tests.test_eercf import REF_MIX, direct_pair, make_text, make_video
from vidbench.config import compose
from vidbench.eval.metrics import retrieval_metrics
from vidbench.eval.two_stage import merge_reranked
from vidbench.methods import build_method


def reference_matrix(coarse: list[list[float]], fine: dict[tuple[int, int], float], k: int, ls: float) -> torch.Tensor:
    """The reference's final matrix, pair by pair: ``fine`` holds the mix of every (text, video) pair."""
    out = []
    for i, row in enumerate(coarse):
        top = sorted(range(len(row)), key=lambda j: row[j])[-k:]  # ascending argsort, last k
        out.append([100.0 + ls * fine[i, j] if j in top else ls * row[j] for j in range(len(row))])
    return torch.tensor(out, dtype=torch.float64)


def column_order(sim: torch.Tensor, video: int) -> list[int]:
    """Texts ranked for one video (v2t), best first."""
    return sorted(range(sim.shape[0]), key=lambda i: -float(sim[i, video]))


def row_margin_rule(coarse: torch.Tensor, cand: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """The per-row lift vidbench used before: lift each row's candidates just above its non-candidates."""
    out = coarse.clone()
    outside = out.scatter(1, cand, float("-inf")).amax(1, keepdim=True)
    lift = (outside - fine.amin(1, keepdim=True) + 1.0).clamp_min(0.0)
    return out.scatter(1, cand, fine + lift)


def test_issue_example_column_order_is_the_reference_one():
    """coarse [[0.9, 0.5, 0.0], [0.8, 0.2, 0.1]], both texts' only candidate video 0, fine 0.30 / 0.35: the
    reference ranks text 1 first for video 0; a per-row lift ranks text 0 first."""
    coarse = torch.tensor([[0.9, 0.5, 0.0], [0.8, 0.2, 0.1]], dtype=torch.float64)
    cand = torch.tensor([[0], [0]])
    fine = torch.tensor([[0.30], [0.35]], dtype=torch.float64)
    for ls in (1.0, 100.0):
        got = merge_reranked(coarse, cand, fine, logit_scale=ls)
        want = reference_matrix(coarse.tolist(), {(0, 0): 0.30, (1, 0): 0.35}, 1, ls)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        assert column_order(got, 0)[0] == 1
    assert column_order(row_margin_rule(coarse, cand, fine), 0)[0] == 0  # the case the two rules disagree on


def test_rerank_protocol_equals_the_reference_rule_in_both_directions():
    torch.manual_seed(0)
    cfg = compose("eercf_tiny_8f_b64_synth-msrvtt", ["data.max_frames=5", "method.rerank_k=3"])
    m = build_method(cfg).double().eval()
    with torch.no_grad():
        m.frame_logit_weight.add_(0.1 * torch.randn(5, 5, dtype=torch.float64))
        m.clip.logit_scale.fill_(torch.log(torch.tensor(30.0, dtype=torch.float64)))
    # 8 texts (two captions for videos 0..5, none missing), 6 videos: several texts share candidates
    n_text, n_video, k = 8, 6, 3
    text, video = make_text(n_text, seed=5), make_video(n_video, seed=6, pad=1)
    caption_video = [0, 1, 2, 3, 4, 5, 0, 3]
    proto = next(p for p in m.protocols(text, video) if p.name == "rerank@3")
    with torch.no_grad():
        got = proto.score(text, video)
    wf = m.frame_logit_weight.detach()
    coarse = [[float(text["text_g"][i] @ video["coarse"][j]) for j in range(n_video)] for i in range(n_text)]
    fine = {
        (i, j): sum(getattr(REF_MIX, n) * s for n, s in direct_pair(text, video, i, j, wf).items())
        for i in range(n_text)
        for j in range(n_video)
    }
    want = reference_matrix(coarse, fine, k, float(m.clip.logit_scale.exp()))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for strict in (False, True):
        assert retrieval_metrics(got, caption_video, strict=strict) == retrieval_metrics(
            want, caption_video, strict=strict
        )
    # v2t really reads columns that mix lifted and unlifted texts
    lifted = want > 50
    assert any(0 < int(lifted[:, j].sum()) < n_text for j in range(n_video))
