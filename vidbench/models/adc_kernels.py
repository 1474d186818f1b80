"""Compiled ADC scan kernel: for each item, the sum of the table entries picked by its uint8 codes.

Why compiled: the scan is ``N * J`` random reads from a small table, one add each. As torch ops it is
either ``J`` passes over an ``N``-long accumulator (memory-bound: 2x slower than FAISS at 1M items) or an
``embedding_bag`` whose per-row overhead dominates at one float per row. A loop compiled by numba reads each
item's ``J`` codes once, contiguous, against a table that stays in cache.

Layout and order:

- ``codes`` ``[N * J]`` uint8, item-major (FAISS's layout too);
- ``tables`` ``[Q, J * K]`` float32: entry ``j * K + c`` of row ``q`` is sub-quantiser ``j``'s value for
  codeword ``c`` and query ``q`` (flat offsets into one table);
- every item's score is the float32 sum over ``j = 0 .. J-1`` in that order, starting from 0: bitwise the
  sum the torch scan (:func:`vidbench.models.pq_scoring.adc_scan`) computes. Four items are summed side by side, so
  four independent add chains hide the add latency without reordering any item's sum;
- indices are unsigned, so no negative-index wrap-around test sits in the inner loop.

Items are cut into blocks of :data:`BLOCK` (512 KiB of codes at J = 256) spread over numba's threads
(``numba.set_num_threads``). Within a block every query of a batch is scanned in turn, so the block's codes
are read from memory once per batch, not once per query, and each query's table (256 KiB at J = K = 256)
stays in L2. A score never depends on the thread count or the batch it was computed in.
"""

from __future__ import annotations

import numpy as np

try:  # a declared dependency; without it vidbench falls back to the torch scan (slower, same scores)
    import numba
    from numba import njit, prange, uint64
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None

BLOCK = 2048

if numba is not None:

    @njit(cache=True, nogil=True, boundscheck=False, inline="always")
    def _scan_block(table, codes, out, lo, hi, j_total, k):  # pragma: no cover - compiled
        ju_total = uint64(j_total)
        ku = uint64(k)
        four = lo + (hi - lo) - (hi - lo) % 4
        for i in range(lo, four, 4):
            b0 = uint64(i) * ju_total
            b1 = b0 + ju_total
            b2 = b1 + ju_total
            b3 = b2 + ju_total
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            off = uint64(0)
            for j in range(j_total):
                ju = uint64(j)
                s0 += table[off + uint64(codes[b0 + ju])]
                s1 += table[off + uint64(codes[b1 + ju])]
                s2 += table[off + uint64(codes[b2 + ju])]
                s3 += table[off + uint64(codes[b3 + ju])]
                off += ku
            out[i] = s0
            out[i + 1] = s1
            out[i + 2] = s2
            out[i + 3] = s3
        for i in range(four, hi):
            b0 = uint64(i) * ju_total
            s0 = np.float32(0.0)
            off = uint64(0)
            for j in range(j_total):
                s0 += table[off + uint64(codes[b0 + uint64(j)])]
                off += ku
            out[i] = s0

    @njit(cache=True, parallel=True, nogil=True, boundscheck=False)
    def _scan(tables, codes, out, j_total, k):  # pragma: no cover - compiled
        n = out.shape[1]
        for b in prange((n + BLOCK - 1) // BLOCK):
            lo = b * BLOCK
            hi = min(n, lo + BLOCK)
            for q in range(tables.shape[0]):
                _scan_block(tables[q], codes, out[q], lo, hi, j_total, k)


def available() -> bool:
    """Whether the compiled kernel can run (numba importable)."""
    return numba is not None


def scan(tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``[Q, N]`` float32 scores of ``tables`` ``[Q, J, K]`` float32 over ``codes`` ``[N, J]`` uint8."""
    q, j_total, k = tables.shape
    if codes.ndim != 2 or codes.shape[1] != j_total or codes.dtype != np.uint8:
        raise ValueError(f"codes must be uint8 [N, {j_total}], got {codes.dtype} {codes.shape}")
    flat_codes = np.ascontiguousarray(codes).reshape(-1)
    flat_tables = np.ascontiguousarray(tables, dtype=np.float32).reshape(q, j_total * k)
    out = np.empty((q, codes.shape[0]), dtype=np.float32)
    if codes.shape[0]:
        _scan(flat_tables, flat_codes, out, j_total, k)
    return out


def set_threads(n: int) -> None:
    """Threads the kernel uses (numba's pool; at most the cores numba saw at start-up)."""
    if numba is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
