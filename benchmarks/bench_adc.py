"""Retrieval on HCQ codes: ms per query and memory of dense cosine, our ADC and the exported FAISS index.

Usage::

    .venv/bin/python benchmarks/bench_adc.py                       # N = 10k, 100k, 1M (a few minutes)
    .venv/bin/python benchmarks/bench_adc.py --sizes 10000 --queries 5   # quick

Galleries of N random videos at the paper's setting: G = 8 levels (coarse + L = 7), D = 512, M = 32
sub-codebooks x K = 256 codewords (random unit codewords, random uint8 codes), level weights 1/8. Every
query is searched alone (batch 1, top-10), which is the latency a user sees; the figure is the median over
``--queries`` queries after one warm-up. Rows:

- ``dense-512``: one float32 512-d unit vector per video (a CLIP4Clip-style index), matrix-vector product
  and top-k in torch;
- ``dense-HCT``: the unquantised HCQ embeddings, 8 x 512 float32 per video (HCQ's dense variant), skipped
  where it would not fit ``--max-dense-gib``;
- ``ADC (ours)``: :class:`vidbench.eval.adc.AdcIndex`, uint8 codes + per-query look-up tables, scanned by the
  compiled kernel of :mod:`vidbench.models.adc_kernels` (the torch scan where numba is missing);
- ``FAISS IndexPQ``: the same codebooks and codes exported with :func:`vidbench.eval.adc.to_faiss_index`.

Memory: ``index`` is the bytes the index holds (payload + codebooks); ``RSS +`` is the growth of the
process's resident set while building it (both in MiB). The last column checks that FAISS returns the same
top-10 ids as ADC for every timed query.

Threads: one torch and one FAISS (OpenMP) thread by default (``--threads``): the development machine has 2
cores shared with other jobs, and one thread gives steadier, comparable numbers.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable

import faiss
import numpy as np
import torch

from vidbench.eval.adc import AdcIndex, faiss_search, to_faiss_index

MIB = 2**20


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def median_ms(fn: Callable[[int], object], n: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def bench_size(n: int, args: argparse.Namespace, gen: torch.Generator) -> list[dict]:
    g, d, m, k = args.levels, args.dim, args.m, args.k
    rows: list[dict] = []
    codebooks = unit(torch.randn(g, m, k, d // m, generator=gen))
    weights = torch.full((g,), 1.0 / g)
    queries = torch.randn(args.queries, g, d, generator=gen)

    # dense baselines
    for name, width in (("dense-512", d), ("dense-HCT", g * d)):
        nbytes = n * width * 4
        if nbytes > args.max_dense_gib * 2**30:
            rows.append({"N": n, "method": name, "bytes": width * 4, "skipped": f"needs {nbytes / 2**30:.0f} GiB"})
            continue
        before = rss_mib()
        gallery = torch.empty(n, width)
        for s in range(0, n, 65536):  # fill in blocks: no full-size temporary
            gallery[s : s + 65536] = unit(torch.randn(min(65536, n - s), width, generator=gen))
        grown = rss_mib() - before
        q = unit(queries.reshape(args.queries, -1)[:, :width])
        ms = median_ms(lambda i, gallery=gallery, q=q: torch.topk(gallery @ q[i], 10), args.queries)
        rows.append({"N": n, "method": name, "bytes": width * 4, "ms": ms, "index": nbytes / MIB, "rss": grown})
        del gallery
        gc.collect()

    codes = torch.randint(0, k, (n, g, m), generator=gen, dtype=torch.uint8)
    before = rss_mib()
    adc = AdcIndex(codebooks, weights)
    for s in range(0, n, 262144):
        adc.add(codes[s : s + 262144])
    grown = rss_mib() - before
    adc_ids = [adc.search(queries[i : i + 1], 10)[1] for i in range(args.queries)]
    ms = median_ms(lambda i: adc.search(queries[i : i + 1], 10), args.queries)
    rows.append({"N": n, "method": "ADC (ours)", "bytes": g * m, "ms": ms, "index": adc.nbytes / MIB, "rss": grown})

    before = rss_mib()
    index = to_faiss_index(codebooks, codes)
    grown = rss_mib() - before
    same = sum(
        torch.equal(faiss_search(index, queries[i : i + 1], m, weights, 10)[1], adc_ids[i]) for i in range(args.queries)
    )
    ms = median_ms(lambda i: faiss_search(index, queries[i : i + 1], m, weights, 10), args.queries)
    faiss_bytes = index.ntotal * index.code_size + codebooks.numel() * 4
    rows.append(
        {
            "N": n,
            "method": "FAISS IndexPQ",
            "bytes": index.code_size,
            "ms": ms,
            "index": faiss_bytes / MIB,
            "rss": grown,
            "same_top10": f"{same}/{args.queries}",
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10, help="timed queries per row (median reported)")
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-dense-gib", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"faiss {faiss.__version__}, numpy {np.__version__}"
    )
    print(
        f"index: {args.levels} levels x D={args.dim}, M={args.m} x K={args.k} "
        f"-> {args.levels * args.m} code bytes per video; top-10, one query at a time, median of {args.queries}"
    )
    print()
    print("| N | method | bytes / video | ms / query | index MiB | RSS + MiB | same top-10 as ADC |")
    print("|--:|---|--:|--:|--:|--:|--:|")
    for n in args.sizes:
        for r in bench_size(n, args, gen):
            if "skipped" in r:
                print(f"| {r['N']:,} | {r['method']} | {r['bytes']:,} | skipped ({r['skipped']}) | | | |")
                continue
            print(
                f"| {r['N']:,} | {r['method']} | {r['bytes']:,} | {r['ms']:.2f} | {r['index']:.1f} | "
                f"{r['rss']:.0f} | {r.get('same_top10', '')} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
