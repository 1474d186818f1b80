"""Scores on product-quantisation codes, as the HCQ head needs them: ADC look-up tables and the dense sum.

Pure tensor functions shared by the model (:class:`~vidbench.models.hcq_head.HCQHead` scores with them) and
evaluation (:mod:`vidbench.eval.adc` builds indices, FAISS export and cost accounting on top). They live in
``models/`` so the head does not import ``eval/`` (DESIGN.md: models know nothing of evaluation). The maths
is explained in :mod:`vidbench.eval.adc`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidbench.models import adc_kernels
from vidbench.models.pooling import l2_normalize
from vidbench.models.quantization import split_normalize


def _check(codebooks: Tensor, codes: Tensor | None = None) -> tuple[int, int, int, int]:
    if codebooks.dim() != 4:
        raise ValueError(f"codebooks must be [G, M, K, D/M], got {tuple(codebooks.shape)}")
    g, m, k, d = codebooks.shape
    if codes is not None and (codes.dim() != 3 or tuple(codes.shape[1:]) != (g, m)):
        raise ValueError(f"codes must be [N, {g}, {m}] to match codebooks {tuple(codebooks.shape)}")
    return g, m, k, d


def build_luts(queries: Tensor, codebooks: Tensor, weights: Tensor) -> Tensor:
    """Look-up tables ``[nq, G * M, K]`` for queries ``[nq, G, D]`` (level weight and 1/M folded in)."""
    g, m, k, d = _check(codebooks)
    if queries.dim() != 3 or tuple(queries.shape[1:]) != (g, m * d):
        raise ValueError(f"queries must be [nq, {g}, {m * d}], got {tuple(queries.shape)}")
    q = split_normalize(queries.float(), m).reshape(-1, g, m, d)
    scale = (weights.to(q) / m).reshape(1, g, 1, 1)
    luts = torch.einsum("qgmd,gmkd->qgmk", q, codebooks.to(q)) * scale
    return luts.reshape(-1, g * m, k)


def adc_scan(luts: Tensor, codes_t: Tensor) -> Tensor:
    """Scores ``[nq, N]``: for every sub-quantiser j, add ``luts[:, j, codes_t[j]]``.

    ``codes_t`` is ``[J, N]`` uint8 (sub-quantiser-major, so each pass reads one contiguous row of codes).
    The working set is the ``[nq, N]`` accumulator; no ``[nq, N, J]`` tensor is ever built.
    """
    if luts.dim() != 3 or codes_t.dim() != 2 or luts.shape[1] != codes_t.shape[0]:
        raise ValueError(
            f"adc_scan: luts [nq, J, K] and codes [J, N] disagree: {tuple(luts.shape)}, {tuple(codes_t.shape)}"
        )
    out = torch.zeros(luts.shape[0], codes_t.shape[1], dtype=luts.dtype, device=luts.device)
    for j in range(codes_t.shape[0]):
        out += luts[:, j].index_select(1, codes_t[j].long())
    return out


LUT_BUDGET_BYTES = 64 * 2**20  # look-up tables built at once (256 KiB per query at G=8, M=32, K=256)


def scan_codes(luts: Tensor, codes: Tensor) -> Tensor:
    """``[nq, N]`` scores of tables ``[nq, J, K]`` over item-major codes ``[N, J]`` (uint8).

    On CPU with numba this is the compiled kernel of :mod:`vidbench.models.adc_kernels` (torch's thread
    count); elsewhere the torch scan. Both sum each item's entries in sub-quantiser order, so they agree
    bitwise.
    """
    if adc_kernels.available() and codes.device.type == "cpu" and luts.device.type == "cpu":
        adc_kernels.set_threads(torch.get_num_threads())
        tables = luts.detach().float().numpy()
        return torch.from_numpy(adc_kernels.scan(tables, codes.numpy()))
    return adc_scan(luts, codes.t().contiguous())


def adc_scores(queries: Tensor, codebooks: Tensor, codes: Tensor, weights: Tensor) -> Tensor:
    """``[nq, N]`` ADC scores of raw queries ``[nq, G, D]`` against coded items ``[N, G, M]`` (uint8).

    Queries are processed in groups whose tables fit :data:`LUT_BUDGET_BYTES`.
    """
    g, m, k, _ = _check(codebooks, codes)
    flat = codes.reshape(codes.shape[0], g * m).contiguous()
    step = max(1, LUT_BUDGET_BYTES // (g * m * k * 4))
    parts = [
        scan_codes(build_luts(queries[i : i + step], codebooks, weights), flat).to(queries.device)
        for i in range(0, queries.shape[0], step)
    ]
    return torch.cat(parts) if parts else queries.new_zeros(0, codes.shape[0])


def decode_codes(codes: Tensor, codebooks: Tensor) -> Tensor:
    """Reconstruct ``[N, G, D]`` from codes ``[N, G, M]``: each sub-vector becomes its codeword."""
    g, m, _, d = _check(codebooks, codes)
    levels = torch.arange(g, device=codes.device).view(1, g, 1)
    subs = torch.arange(m, device=codes.device).view(1, 1, m)
    return codebooks[levels, subs, codes.long()].reshape(codes.shape[0], g, m * d)


def reconstruction_scores(queries: Tensor, codebooks: Tensor, codes: Tensor, weights: Tensor) -> Tensor:
    """The dense reference: ``sum_l w_l cos(q^_l, decode(code_l))`` ``[nq, N]`` (what ADC must equal),
    with ``q^`` the query with each sub-vector normalised, as the quantiser sees it."""
    rec = l2_normalize(decode_codes(codes, codebooks).float())
    q = l2_normalize(split_normalize(queries.float(), codebooks.shape[1]))
    return torch.einsum("qgd,ngd,g->qn", q, rec, weights.to(q))


def dense_level_scores(queries: Tensor, items: Tensor, weights: Tensor) -> Tensor:
    """Unquantised ``sum_l w_l cos(q_l, v_l)`` for ``[nq, G, D]`` x ``[N, G, D]`` (one matmul)."""
    g = queries.shape[1]
    w = weights.to(device=queries.device, dtype=torch.float32).sqrt().view(1, g, 1)
    q = (l2_normalize(queries.float()) * w).reshape(queries.shape[0], -1)
    v = (l2_normalize(items.float()) * w).reshape(items.shape[0], -1)
    return q @ v.t()
