"""Heads on given features (no backbone), and heads attached to a method without changing its state-dict keys."""

from __future__ import annotations

import torch

from vidbench.config import compose
from vidbench.eval.adc import decode_codes
from vidbench.methods import build_method
from vidbench.models.hcq_head import HCQHead
from vidbench.models.quantization import EmbeddingReservoir, split_normalize


def _head(dim=16, fine=3, m=4, k=8) -> HCQHead:
    torch.manual_seed(0)
    return HCQHead(dim, fine, 1, m, k)


def _feats(b=6, n=5, dim=16, seed=1):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(b, dim, generator=gen)
    tokens = torch.randn(b, n, dim, generator=gen)
    mask = torch.ones(b, n)
    mask[0, 3:] = 0
    return coarse, tokens, mask


def test_hcq_head_levels_put_the_coarse_vector_first_then_per_item_fine_levels():
    head = _head().eval()
    coarse, tokens, mask = _feats()
    levels = head.levels(coarse, tokens, mask)
    assert levels.shape == (6, 4, 16)
    torch.testing.assert_close(levels[:, 0], coarse)
    # the same GhostVLAD serves text and video: one call on a batch equals calls on its parts (eval BN)
    again = torch.cat([head.levels(coarse[:3], tokens[:3], mask[:3]), head.levels(coarse[3:], tokens[3:], mask[3:])])
    torch.testing.assert_close(levels, again)
    moved = tokens.clone()
    moved[1, 0] += 1.0  # a token of item 1 changes item 1's fine levels only
    changed = (head.levels(coarse, moved, mask) - levels).abs().sum(dim=(1, 2))
    assert changed[1] > 0 and changed[[0, 2, 3, 4, 5]].sum() == 0


def test_hcq_head_training_containers_are_straight_through_quantisations():
    head = _head().train()
    coarse, tokens, mask = _feats()
    out = head(coarse, tokens, mask)
    assert set(out) == {"levels", "quantized"} and out["levels"].shape == out["quantized"].shape == (6, 4, 16)
    # every quantised sub-vector is a (unit) codeword
    norms = out["quantized"].reshape(6, 4, 4, 4).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
    tokens.requires_grad_(True)
    head(coarse, tokens, mask)["quantized"].sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0  # straight-through reaches the tokens


def test_hcq_head_scores_equal_brute_force_on_decoded_codes():
    head = _head().eval()
    coarse, tokens, mask = _feats()
    text = head(coarse, tokens, mask)
    video = head(*_feats(b=7, seed=2))
    assert text["codes"].shape == (6, 4, 4) and set(text) == {"levels", "codes"}
    w = torch.tensor([0.4, 0.2, 0.2, 0.2])
    books = head.codebooks()
    recon = decode_codes(video["codes"], books)  # [7, G, D]
    brute = torch.einsum("tgd,vgd,g->tv", text["levels"], split_normalize(recon, 4), w) / 4
    # adc_scores averages the M sub-cosines of each level; compare against the independent formula
    adc = head.adc_score(text, video, w)
    torch.testing.assert_close(adc, brute, rtol=0, atol=1e-5)
    dense = head.dense_score(text, video, w)
    torch.testing.assert_close(dense, torch.einsum("tgd,vgd,g->tv", text["levels"], video["levels"], w) / 4)
    v2t = head.text_code_score(text, video, w)
    assert v2t.shape == (6, 7)


def test_hcq_head_kmeans_moves_codebooks_towards_the_cached_embeddings():
    head = _head()
    caches = [EmbeddingReservoir(1000) for _ in range(head.num_levels)]
    gen = torch.Generator().manual_seed(3)
    for c in caches:
        c.reset(0)
        c.add(torch.randn(200, 16, generator=gen))
    before = head.codebooks().clone()
    stats = head.update_codebooks(caches, iters=5, tol=0.0, empty="keep")
    assert stats["kmeans_vectors"] == 800.0
    assert not torch.allclose(before, head.codebooks())


def test_attached_head_keeps_state_dict_keys_and_follows_train_mode():
    method = build_method(compose("hcq-clip_tiny_8f_b64_synth-msrvtt"))
    keys = list(method.state_dict())
    assert not [k for k in keys if k.startswith("head.")]
    assert {k.split(".")[0] for k in keys} == {"clip", "vlad", "quantizers"}
    assert method.head.vlad is method.vlad and method.head.quantizers is method.quantizers
    method.eval()
    assert not method.head.training and not method.quantizers[0].training
    method.train()
    assert method.head.training
