"""HCQ's codewords are trainable parameters, as in the reference's PQ layers (``update_codebooks``).

With the soft-code term and the PQ regulariser on, the codeword gradients equal a brute-force computation
(float64, loops over sub-codebooks, written from spec methods-eercf-hcq.md B.3/B.4 and the reference's
PQLayer); the optimiser holds them, the per-step renormalisation and the end-of-epoch k-means act on them in
the reference's order, and checkpoints with codewords as buffers still load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidbench.config import compose
from vidbench.methods import build_method
from vidbench.methods.optim import param_groups
from vidbench.models.aqcl import hybrid_aqcl_loss, level_weights
from vidbench.models.hcq_head import HCQHead
from vidbench.models.quantization import EmbeddingReservoir, spherical_kmeans

DIM, LEVELS, M, K, B = 16, 2, 4, 8, 6
TAU, SMOOTH, CODE_W, REG_W = 0.05, 0.25, 0.7, 0.3
HCQ_TINY = "hcq-clip_tiny_8f_b64_synth-msrvtt"


def head(trainable: bool = True) -> HCQHead:
    torch.manual_seed(0)
    return HCQHead(DIM, LEVELS, 1, M, K, trainable_codebooks=trainable).train()


def brute_force_codeword_loss(codebooks: list[torch.Tensor], text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """The terms that reach the codewords, in float64 with explicit loops: the soft-code InfoNCE (both
    directions, averaged over sub-codebooks, level-weighted) and the PQ regulariser (mean over levels)."""
    w = level_weights(LEVELS).double()
    code_total = torch.zeros((), dtype=torch.float64)
    reg_levels = []
    for g, cb in enumerate(codebooks):
        soft, reg = {}, {}
        for name, x in (("t", text[:, g]), ("v", video[:, g])):
            sub = F.normalize(x.double().reshape(B, M, DIM // M), dim=-1)
            sims = torch.stack([sub[:, m] @ cb[m].t() for m in range(M)], dim=1)  # [B, M, K]
            normed = []
            for m in range(M):  # BatchNorm1d(M, affine=False), training: batch statistics over (b, k)
                s = sims[:, m]
                normed.append((s - s.mean()) / torch.sqrt(s.var(unbiased=False) + 1e-5))
            soft[name] = torch.softmax(torch.stack(normed, dim=1), dim=-1)  # alpha = 1
            codes = sims.argmax(-1)
            hard = torch.stack([cb[m][codes[:, m]] for m in range(M)], dim=1)  # [B, M, d]
            reg[name] = ((sub - hard) ** 2).sum((1, 2)).mean()
        per_m = []
        for m in range(M):
            logits = soft["t"][:, m] @ soft["v"][:, m].t() / TAU
            target = torch.arange(B)
            per_m.append(F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        code_total = code_total + w[g] * torch.stack(per_m).mean()
        reg_levels.append((reg["t"] + reg["v"]) / 2)
    code = (1 - SMOOTH) * CODE_W * code_total
    return code + (1 - SMOOTH) * REG_W * torch.stack(reg_levels).mean()


def test_codeword_gradients_with_both_ablation_terms_equal_brute_force() -> None:
    h = head()
    g = torch.Generator().manual_seed(1)
    text = torch.randn(B, LEVELS + 1, DIM, generator=g)
    video = text + 0.5 * torch.randn(B, LEVELS + 1, DIM, generator=g)
    t, v = h.quantize(text, soft=True, hard=True), h.quantize(video, soft=True, hard=True)
    terms = hybrid_aqcl_loss(
        t["levels"],
        v["levels"],
        t["quantized"],
        v["quantized"],
        level_weights(LEVELS),
        temperature=TAU,
        smooth=SMOOTH,
        code_weight=CODE_W,
        text_soft=t["soft"],
        video_soft=v["soft"],
        pq_reg_weight=REG_W,
        text_hard=t["hard"],
        video_hard=v["hard"],
    )
    sum(terms.values()).backward()
    refs = [pq.codebook.detach().double().requires_grad_(True) for pq in h.quantizers]
    brute_force_codeword_loss(refs, text, video).backward()
    for pq, ref in zip(h.quantizers, refs, strict=True):
        assert ref.grad.abs().max() > 1e-3  # both terms really reach every level's codewords
        torch.testing.assert_close(pq.codebook.grad.double(), ref.grad, rtol=2e-4, atol=1e-6)

    # AQ-CL alone (straight-through) gives the codewords no gradient, as in the reference
    h2 = head()
    t, v = h2.quantize(text.clone().requires_grad_(True)), h2.quantize(video)  # the encoder side needs grads
    aq = hybrid_aqcl_loss(
        t["levels"], v["levels"], t["quantized"], v["quantized"], level_weights(LEVELS), temperature=TAU, smooth=0.0
    )
    sum(aq.values()).backward()
    assert all(pq.codebook.grad is None for pq in h2.quantizers)


def test_update_codebooks_makes_optimiser_parameters_and_old_checkpoints_load() -> None:
    on = ["method.code_loss_weight=0.5", "method.pq_reg_loss_weight=0.5"]
    torch.manual_seed(0)
    trained = build_method(compose(HCQ_TINY, on))
    torch.manual_seed(0)
    plain = build_method(compose(HCQ_TINY))  # the published setting: no term reaches the codewords
    torch.manual_seed(0)
    off = build_method(compose(HCQ_TINY, [*on, "method.update_codebooks=false"]))
    codebook_params = {n for n, p in trained.named_parameters() if n.endswith(".codebook")}
    assert codebook_params == {f"quantizers.{g}.codebook" for g in range(4)}
    assert all(p.requires_grad for n, p in trained.named_parameters() if n in codebook_params)
    for frozen in (plain, off):
        assert not any(n.endswith(".codebook") for n, _ in frozen.named_parameters())
    grouped = {id(p) for grp in param_groups(trained, lr=1e-4, coef_lr=1e-3, weight_decay=0.2) for p in grp["params"]}
    assert all(id(trained.get_parameter(n)) in grouped for n in codebook_params)
    # same state-dict keys: a checkpoint with codewords as buffers loads into trainable codewords and back
    assert set(plain.state_dict()) == set(trained.state_dict())
    with torch.no_grad():
        plain.quantizers[1].codebook.mul_(-1)
    trained.load_state_dict(plain.state_dict(), strict=True)
    assert torch.equal(trained.quantizers[1].codebook.detach(), plain.quantizers[1].codebook)
    assert isinstance(trained.quantizers[1].codebook, nn.Parameter)
    plain.load_state_dict(trained.state_dict(), strict=True)


def test_renormalisation_before_a_step_and_kmeans_after_the_epoch_act_on_the_same_parameter() -> None:
    h = head()
    pq = h.quantizers[0]
    param = pq.codebook
    opt = torch.optim.SGD([param], lr=0.5)
    param.grad = torch.randn_like(param)
    opt.step()  # the optimiser moves codewords off the unit sphere
    assert not torch.allclose(param.detach().norm(dim=-1), torch.ones(M, K))
    moved = param.detach().clone()
    h.renormalize_codebooks()  # before the next step, as the reference's codebook_normalization
    torch.testing.assert_close(param.detach(), F.normalize(moved, dim=-1))
    assert pq.codebook is param

    param.grad = torch.randn_like(param)
    opt.step()
    before_kmeans = param.detach().clone()
    g = torch.Generator().manual_seed(3)
    data = torch.randn(40, DIM, generator=g)
    caches = [EmbeddingReservoir(100) for _ in range(LEVELS + 1)]
    for cache in caches:
        cache.add(data)
    h.update_codebooks(caches, iters=3)  # end of epoch: k-means warm-started from the normalised codewords
    want = spherical_kmeans(data.reshape(-1, M, DIM // M), F.normalize(before_kmeans, dim=-1), iters=3).codebook
    torch.testing.assert_close(param.detach(), want)
    assert pq.codebook is param and param in opt.param_groups[0]["params"]  # written in place
