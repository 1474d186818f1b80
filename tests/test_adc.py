"""Retrieval on codes: ADC equals dense scoring of the reconstruction; FAISS returns ADC's top-10."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from vidbench.eval.adc import (
    AdcIndex,
    adc_match_flops,
    adc_scores,
    decode_codes,
    dense_level_scores,
    export_faiss,
    faiss_search,
    reconstruction_scores,
    to_faiss_index,
)
from vidbench.models.quantization import ProductQuantizer


def _setup(g=3, m=4, k=16, d=8, n=300, nq=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    codebooks = torch.randn(g, m, k, d, generator=gen)
    codebooks = codebooks / codebooks.norm(dim=-1, keepdim=True)
    codes = torch.randint(0, k, (n, g, m), generator=gen).to(torch.uint8)
    queries = torch.randn(nq, g, m * d, generator=gen)
    weights = torch.tensor([0.5] + [0.5 / (g - 1)] * (g - 1))
    return codebooks, codes, queries, weights


def test_adc_equals_dense_cosine_on_the_reconstructed_vectors():
    codebooks, codes, queries, weights = _setup()
    adc = adc_scores(queries, codebooks, codes, weights)
    assert adc.shape == (12, 300)
    torch.testing.assert_close(adc, reconstruction_scores(queries, codebooks, codes, weights), rtol=0, atol=1e-5)
    # the explicit formula, level by level
    rec = decode_codes(codes, codebooks)
    sub = queries.reshape(12, 3, 4, 8)
    unit_subs = (sub / sub.norm(dim=-1, keepdim=True)).reshape(12, 3, 32)  # what the quantiser sees
    manual = sum(
        weights[g] * torch.nn.functional.cosine_similarity(unit_subs[:, None, g], rec[None, :, g], dim=-1)
        for g in range(3)
    )
    torch.testing.assert_close(adc, manual, rtol=0, atol=1e-5)


def test_adc_in_query_groups_matches_one_pass(monkeypatch):
    import vidbench.models.pq_scoring as adc_module  # where adc_scores reads its budget

    codebooks, codes, queries, weights = _setup()
    whole = adc_scores(queries, codebooks, codes, weights)
    monkeypatch.setattr(adc_module, "LUT_BUDGET_BYTES", 5 * 3 * 4 * 16 * 4)  # tables of 5 queries at a time
    torch.testing.assert_close(adc_scores(queries, codebooks, codes, weights), whole, rtol=0, atol=1e-6)


def test_decode_matches_the_quantiser_and_adc_ranks_like_the_layer():
    torch.manual_seed(1)
    pqs = [ProductQuantizer(32, 4, 16) for _ in range(2)]
    x = torch.randn(50, 2, 32)
    codes = torch.stack([pq.encode(x[:, i]) for i, pq in enumerate(pqs)], dim=1)
    codebooks = torch.stack([pq.codebook for pq in pqs])
    rec = decode_codes(codes, codebooks)
    for i, pq in enumerate(pqs):
        torch.testing.assert_close(rec[:, i], pq(x[:, i]).hard)


def test_index_search_returns_the_dense_top_k():
    codebooks, codes, queries, weights = _setup(n=500)
    index = AdcIndex(codebooks, weights, codes[:200])
    index.add(codes[200:])
    assert index.ntotal == 500 and index.bytes_per_item == 12
    assert index.nbytes == 500 * 12 + codebooks.numel() * 4
    scores, ids = index.search(queries, 10, query_chunk=5)
    ref = torch.topk(reconstruction_scores(queries, codebooks, codes, weights), 10, dim=1)
    assert torch.equal(ids, ref.indices)
    torch.testing.assert_close(scores, ref.values, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        index.add(codes.long())


@pytest.mark.parametrize("k", [256, 16])
def test_faiss_index_returns_the_same_top10_as_adc(k):
    codebooks, codes, queries, weights = _setup(g=2, m=8, k=k, d=4, n=2000, nq=20, seed=k)
    index = to_faiss_index(codebooks, codes)
    assert index.ntotal == 2000 and index.code_size == 2 * 8 * int(np.log2(k)) // 8
    # FAISS decodes the exported codes to exactly our reconstruction (bit packing included)
    rec = index.reconstruct_n(0, 2000)
    np.testing.assert_array_equal(rec, decode_codes(codes, codebooks).reshape(2000, -1).numpy())
    f_scores, f_ids = faiss_search(index, queries, 8, weights, 10)
    a_scores, a_ids = AdcIndex(codebooks, weights, codes).search(queries, 10)
    assert torch.equal(f_ids, a_ids)
    torch.testing.assert_close(f_scores, a_scores, rtol=0, atol=1e-5)


def test_export_writes_an_index_a_user_can_load_and_search(tmp_path):
    codebooks, codes, queries, weights = _setup(g=2, m=4, k=256, d=4, n=400)
    path = export_faiss(tmp_path / "idx.faiss", codebooks, codes, weights, recipe="demo")
    loaded = faiss.read_index(str(path))
    meta = json.loads((tmp_path / "idx.faiss.json").read_text())
    assert meta["ntotal"] == 400 and meta["code_bytes_per_item"] == 8 and meta["dim"] == 32
    assert meta["recipe"] == "demo" and meta["level_weights"] == pytest.approx(weights.tolist())
    _, ids = faiss_search(loaded, queries, meta["num_subspaces"], torch.tensor(meta["level_weights"]), 10)
    _, ref = AdcIndex(codebooks, weights, codes).search(queries, 10)
    assert torch.equal(ids, ref)


def test_dense_level_scores_and_flop_formula():
    _, _, queries, weights = _setup()
    items = torch.randn(7, 3, 32)
    got = dense_level_scores(queries, items, weights)
    cos = torch.nn.functional.cosine_similarity(queries[:, None], items[None], dim=-1)  # [nq, N, G]
    torch.testing.assert_close(got, (cos * weights).sum(-1), rtol=0, atol=1e-5)
    # 8 levels x 32 sub-codebooks x 256 codewords at D = 512, N = 1000
    tables = 2 * 8 * 256 * 512 + 8 * 32 * 256
    assert adc_match_flops(1000, 8, 32, 256, 512) == tables + 1000 * 8 * 32
