"""Retrieval on product-quantisation codes: asymmetric distance computation (ADC) and FAISS export.

An HCQ gallery stores each video as ``G = L + 1`` levels x ``M`` uint8 codes (``G * M`` bytes) plus the
shared codebooks ``[G, M, K, D/M]``. A query keeps its raw embeddings ``[G, D]``. Per query and level, a
look-up table holds the inner product of each normalised query sub-vector with every codeword, scaled by
``w_l / M``; a video's score is the sum of ``G * M`` table entries picked by its codes::

    score(q, v) = sum_l w_l / M * sum_m <q^_{l,m}, C_l[m, code_{v,l,m}]>

Because the sub-normalised query ``q^_l`` and a concatenation of unit codewords both have norm sqrt(M),
this is ``sum_l w_l cos(q^_l, decode(code_{v,l}))``: the dense cosine on the reconstructed vectors
(:func:`reconstruction_scores`), which is how HCQ's reference scores its test set. (A dead, all-zero
codeword from the reference's k-means breaks the norm identity; the LUT score then counts that sub-vector
as 0, as any PQ engine does.)

The same arithmetic is a FAISS ``IndexPQ`` with inner-product metric over ``G * D`` dimensions and
``G * M`` sub-quantisers whose centroids are the concatenated codebooks; :func:`to_faiss_index` builds it
from the learnt codebooks and codes, and :func:`faiss_query_vectors` turns queries into its input.

Cost accounting (``match_flops``, 1 multiply-add = 2 FLOPs; a table read is not a FLOP): the tables take
``2 * G * K * D`` FLOPs per query (``G * M * K`` inner products of length D/M) plus ``G * M * K``
multiplies to fold the level weight and 1/M into them; the scan takes one add per code,
``G * M`` per video.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidbench.errors import ConfigError, VidbenchError

# The scoring functions live in models/ (the HCQ head uses them); imported here, where evaluation finds them.
from vidbench.models.pq_scoring import (
    LUT_BUDGET_BYTES,
    _check,
    adc_scan,
    adc_scores,
    build_luts,
    decode_codes,
    dense_level_scores,
    reconstruction_scores,
    scan_codes,
)
from vidbench.models.quantization import split_normalize

__all__ = [
    "LUT_BUDGET_BYTES",
    "adc_scan",
    "adc_scores",
    "build_luts",
    "decode_codes",
    "dense_level_scores",
    "reconstruction_scores",
    "scan_codes",
]


def adc_match_flops(n_gallery: int, levels: int, num_subspaces: int, num_codewords: int, dim: int) -> float:
    """FLOPs per query of ADC over ``n_gallery`` coded videos (see the module docstring)."""
    tables = 2.0 * levels * num_codewords * dim + levels * num_subspaces * num_codewords
    return tables + float(n_gallery) * levels * num_subspaces


class AdcIndex:
    """A searchable gallery of uint8 codes with the codebooks and level weights needed to score queries.

    Memory is ``N * G * M`` bytes for the codes (item-major, as the compiled scan and FAISS read them) plus
    the codebooks, independent of the embedding size.
    """

    def __init__(self, codebooks: Tensor, weights: Tensor, codes: Tensor | None = None) -> None:
        g, m, k, d = _check(codebooks)
        if weights.shape != (g,):
            raise ValueError(f"level weights must be [{g}], got {tuple(weights.shape)}")
        self.codebooks = codebooks.float()
        self.weights = weights.float()
        self.levels, self.num_subspaces, self.num_codewords, self.sub_dim = g, m, k, d
        self.codes = torch.empty(0, g * m, dtype=torch.uint8, device=codebooks.device)
        if codes is not None:
            self.add(codes)

    @property
    def ntotal(self) -> int:
        return self.codes.shape[0]

    @property
    def bytes_per_item(self) -> int:
        return self.levels * self.num_subspaces

    @property
    def nbytes(self) -> int:
        """Bytes held: codes plus codebooks."""
        return self.codes.numel() + self.codebooks.numel() * self.codebooks.element_size()

    def add(self, codes: Tensor) -> None:
        """Append items' codes ``[N, G, M]`` (uint8)."""
        _check(self.codebooks, codes)
        if codes.dtype != torch.uint8:
            raise ValueError(f"codes must be uint8, got {codes.dtype}")
        new = codes.reshape(codes.shape[0], -1).to(self.codes.device)
        self.codes = torch.cat([self.codes, new]).contiguous()

    def scores(self, queries: Tensor) -> Tensor:
        """``[nq, N]`` ADC scores of raw queries ``[nq, G, D]``."""
        return scan_codes(build_luts(queries.to(self.codebooks.device), self.codebooks, self.weights), self.codes)

    def search(self, queries: Tensor, k: int, query_chunk: int = 64) -> tuple[Tensor, Tensor]:
        """Top-``k`` ``(scores, ids)``, each ``[nq, k]``, best first."""
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be in 1..{self.ntotal}, got {k}")
        starts = range(0, queries.shape[0], query_chunk)
        parts = [torch.topk(self.scores(queries[i : i + query_chunk]), k, dim=1) for i in starts]
        return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


# ---------------------------------------------------------------------------------------------------------
# FAISS
# ---------------------------------------------------------------------------------------------------------
def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a declared dependency
        raise VidbenchError("FAISS export needs faiss-cpu: pip install faiss-cpu") from err
    return faiss


def pack_codes(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Pack ``[N, J]`` codes of ``nbits`` each into FAISS's PQ layout (LSB-first bit stream per item)."""
    n, j = codes.shape
    if nbits == 8:
        return np.ascontiguousarray(codes, dtype=np.uint8)
    bits = (codes[..., None].astype(np.uint16) >> np.arange(nbits, dtype=np.uint16)) & 1  # [N, J, nbits]
    return np.packbits(bits.reshape(n, j * nbits).astype(np.uint8), axis=1, bitorder="little")


def to_faiss_index(codebooks: Tensor, codes: Tensor | None = None):
    """A FAISS ``IndexPQ`` (inner product) equivalent to ADC over these codebooks and codes ``[N, G, M]``.

    Its vectors have ``G * D`` dimensions (levels concatenated); search it with :func:`faiss_query_vectors`.
    K must be a power of two (FAISS stores ``log2 K`` bits per code).
    """
    faiss = _faiss()
    g, m, k, d = _check(codebooks, codes)
    nbits = int(round(math.log2(k)))
    if 2**nbits != k:
        raise ConfigError(f"FAISS PQ needs K to be a power of two, got K = {k}")
    index = faiss.IndexPQ(g * m * d, g * m, nbits, faiss.METRIC_INNER_PRODUCT)
    centroids = codebooks.detach().float().cpu().reshape(g * m, k, d).numpy()
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids).ravel(), index.pq.centroids)
    index.is_trained = True
    if codes is not None and codes.shape[0]:
        add_codes_to_faiss(index, codes)
    return index


def add_codes_to_faiss(index, codes: Tensor) -> None:
    """Append ``[N, G, M]`` uint8 codes to an index from :func:`to_faiss_index` (no re-encoding)."""
    flat = codes.detach().cpu().reshape(codes.shape[0], -1).numpy()
    index.add_sa_codes(pack_codes(flat, index.pq.nbits))


def faiss_query_vectors(queries: Tensor, num_subspaces: int, weights: Tensor) -> np.ndarray:
    """``[nq, G * D]`` float32 FAISS queries: each level sub-normalised and scaled by ``w_l / M``."""
    g = queries.shape[1]
    scale = (weights.float().to(queries.device) / num_subspaces).view(1, g, 1)
    q = split_normalize(queries.detach().float(), num_subspaces) * scale
    return np.ascontiguousarray(q.reshape(queries.shape[0], -1).cpu().numpy(), dtype=np.float32)


def faiss_search(index, queries: Tensor, num_subspaces: int, weights: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` ``(scores, ids)`` from a FAISS index, as torch tensors on the queries' device."""
    scores, ids = index.search(faiss_query_vectors(queries, num_subspaces, weights), k)
    return torch.from_numpy(scores).to(queries.device), torch.from_numpy(ids).to(queries.device)


def export_faiss(path: str | Path, codebooks: Tensor, codes: Tensor, weights: Tensor, **meta: Any) -> Path:
    """Write the FAISS index to ``path`` and a JSON sidecar (``path`` + ``.json``) saying how to query it."""
    faiss = _faiss()
    g, m, k, d = _check(codebooks, codes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    index = to_faiss_index(codebooks, codes)
    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    sidecar = {
        "format": "faiss IndexPQ, METRIC_INNER_PRODUCT",
        "levels": g,
        "num_subspaces": m,
        "num_codewords": k,
        "level_dim": m * d,
        "dim": g * m * d,
        "level_weights": [float(w) for w in weights.tolist()],
        "ntotal": int(index.ntotal),
        "code_bytes_per_item": int(index.code_size),
        "query": "concatenate over levels l: (w_l / M) * (query level l with each of its M sub-vectors "
        "L2-normalised); see vidbench.eval.adc.faiss_query_vectors",
        **meta,
    }
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar, indent=2))
    return path
