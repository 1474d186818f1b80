"""Serving cost at 10k / 100k / 1M videos: ms per query and recall@10 against exact search, next to the memory floor.

Usage::

    nice .venv/bin/python benchmarks/bench_serving.py                      # 10k, 100k, 1M (about 20 min on 2 cores)
    .venv/bin/python benchmarks/bench_serving.py --sizes 10000 --queries 4  # quick
    .venv/bin/python benchmarks/bench_serving.py --figure benchmarks/serving_1m.png

Galleries are method-shaped and synthetic (no weights or datasets exist here):

- dense (CLIP4Clip / EERCF-coarse / DRL's two-stage recall): one 512-d unit vector per video, drawn around
  4,096 cluster centres so IVF has structure to use; queries are noisy copies of gallery videos;
- HCQ: G = 8 levels x M = 32 sub-codebooks x K = 256 codewords (256 code bytes per video), random unit
  codewords and random codes, level weights 1/8.

Rows: dense flat fp32 (torch matmul), dense flat fp16 (FAISS IndexScalarQuantizer fp16), dense IVF-Flat
(nlist = min(1024, 4 sqrt(N)), trained on 20 nlist vectors;
nprobe 8 and 64), HCQ ADC (vidbench's compiled scorer, :mod:`vidbench.models.adc_kernels`),
FAISS IndexPQ on the same codebooks and codes, and a 4-bit fast-scan PQ retrained on the decoded HCQ vectors
(its recall is against exact ADC). Each row is timed with one thread and with all threads, on single queries
(median over ``--queries``) and on one batch of 64 queries (ms per query = batch time / 64).

Memory floor: the bytes a query must read from memory (the whole payload for an exhaustive scan; the probed
lists for IVF) divided by this machine's measured read bandwidth (a numpy sum over 1 GiB, same threads); a
batch of 64 reads the payload once, so its floor per query is 1/64 of that.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import faiss
import numpy as np
import torch

from vidbench.eval.adc import AdcIndex, decode_codes, faiss_query_vectors, faiss_search, to_faiss_index
from vidbench.models import adc_kernels

DIM, G, M, K, TOP = 512, 8, 32, 256, 10


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    adc_kernels.set_threads(n)


def timed(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def read_bandwidth(threads: int) -> float:
    """Bytes/s a full read of 1 GiB runs at (median of 3), with ``threads`` threads."""
    buf = np.ones(2**28, dtype=np.float32)
    parts = np.array_split(buf, threads)
    if threads == 1:
        ms = timed(lambda: buf.sum(), 3)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            ms = timed(lambda: list(pool.map(np.sum, parts)), 3)
    return buf.nbytes / (ms / 1000)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / exact.shape[1]


def dense_gallery(n: int, nq: int, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = gen.standard_normal((4096, DIM), dtype=np.float32)
    x = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        x[s:e] = centres[gen.integers(0, 4096, e - s)] + 0.6 * gen.standard_normal((e - s, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[gen.integers(0, n, nq)] + 0.3 * gen.standard_normal((nq, DIM), dtype=np.float32)
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


def run_rows(
    name: str,
    payload: int,
    search: Callable[[np.ndarray], np.ndarray],
    queries: np.ndarray,
    exact: np.ndarray,
    args,
    bw: dict[int, float],
    n: int,
    scanned: float | None = None,
) -> list[dict]:
    """Time ``search`` (queries [nq, ...] -> ids [nq, 10]) at each thread count, single and batched."""
    rows = []
    scanned = payload * n if scanned is None else scanned
    ids = search(queries[:64])
    rec = recall(ids, exact[:64])
    for threads in args.threads:
        set_threads(threads)
        single = timed(lambda: [search(queries[i : i + 1]) for i in range(args.queries)], 1) / args.queries
        batch = timed(lambda: search(queries[:64]), 1) / 64
        floor = scanned / bw[threads] * 1000
        rows.append(
            {
                "N": n,
                "row": name,
                "threads": threads,
                "bytes": payload,
                "single": single,
                "batch": batch,
                "recall": rec,
                "floor": floor,
                "floor64": floor / 64,
            }
        )
        print(
            f"| {n:,} | {name} | {threads} | {payload:,} | {single:.2f} | {batch:.2f} | {rec:.3f} | "
            f"{floor:.2f} | {single / floor:.1f}x | {floor / 64:.3f} |",
            flush=True,
        )
    return rows


def bench(n: int, args, bw: dict[int, float]) -> list[dict]:
    gen = np.random.default_rng(n)
    out: list[dict] = []
    nq = max(64, args.queries)
    set_threads(max(args.threads))
    # ---- dense
    x, q = dense_gallery(n, nq, gen)
    xt = torch.from_numpy(x)

    def flat32(qs: np.ndarray) -> np.ndarray:
        return torch.topk(torch.from_numpy(qs) @ xt.t(), TOP, dim=1).indices.numpy()

    exact = flat32(q)
    out += run_rows("dense flat fp32 (torch)", DIM * 4, flat32, q, exact, args, bw, n)
    fp16 = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    fp16.add(x)
    out += run_rows(
        "dense flat fp16 (FAISS SQfp16)", DIM * 2, lambda qs: fp16.search(qs, TOP)[1], q, exact, args, bw, n
    )
    fp16.reset()  # free its payload before the next row
    nlist = min(1024, int(4 * math.sqrt(n)))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x[gen.choice(n, min(n, 20 * nlist), replace=False)])
    ivf.add(x)
    for nprobe in (8, 64):
        ivf.nprobe = nprobe
        out += run_rows(
            f"dense IVF-Flat nlist={nlist} nprobe={nprobe}",
            DIM * 4,
            lambda qs: ivf.search(qs, TOP)[1],
            q,
            exact,
            args,
            bw,
            n,
            scanned=n * DIM * 4 * nprobe / nlist,
        )
    ivf.reset()
    xt = x = None  # free the dense gallery before the HCQ rows
    # ---- HCQ codes
    tg = torch.Generator().manual_seed(n)
    books = torch.randn(G, M, K, DIM // M, generator=tg)
    books = books / books.norm(dim=-1, keepdim=True)
    weights = torch.full((G,), 1.0 / G)
    codes = torch.randint(0, K, (n, G, M), generator=tg, dtype=torch.uint8)
    hq = torch.randn(nq, G, DIM, generator=tg)
    adc = AdcIndex(books, weights, codes)

    def ours(qi: np.ndarray) -> np.ndarray:
        return adc.search(hq[torch.from_numpy(qi)], TOP, query_chunk=64)[1].numpy()

    qidx = np.arange(nq)
    exact = ours(qidx)
    out += run_rows("HCQ ADC (vidbench, compiled)", G * M, ours, qidx, exact, args, bw, n)
    pq = to_faiss_index(books, codes)
    out += run_rows(
        "HCQ FAISS IndexPQ (same codes)",
        G * M,
        lambda qi: faiss_search(pq, hq[torch.from_numpy(qi)], M, weights, TOP)[1].numpy(),
        qidx,
        exact,
        args,
        bw,
        n,
    )
    pq.reset()
    fs = faiss.IndexPQFastScan(G * DIM, G * M, 4, faiss.METRIC_INNER_PRODUCT)
    scale = (weights / M).sqrt().repeat_interleave(DIM).numpy()  # fold level weights into both sides

    def decoded(lo: int, hi: int) -> np.ndarray:
        rec = decode_codes(codes[lo:hi], books).reshape(hi - lo, -1).numpy()
        return np.ascontiguousarray(rec * scale, dtype=np.float32)

    fs.train(decoded(0, min(n, 20_000)))
    for s in range(0, n, 10_000):  # 10k x 4,096 floats per block: the 1M run was OOM-killed with 50k blocks
        fs.add(decoded(s, min(n, s + 10_000)))
    fq = faiss_query_vectors(hq, M, weights) / scale

    out += run_rows(
        "HCQ 4-bit fast-scan PQ (retrained)", G * M // 2, lambda qi: fs.search(fq[qi], TOP)[1], qidx, exact, args, bw, n
    )
    return out


def ab_hcq(n: int, reps: int) -> None:
    """vidbench's ADC against FAISS IndexPQ on the same codes, alternating query by query (1 thread), so both
    see the same machine load: on a shared machine the fair comparison."""
    set_threads(1)
    tg = torch.Generator().manual_seed(n)
    books = torch.randn(G, M, K, DIM // M, generator=tg)
    books = books / books.norm(dim=-1, keepdim=True)
    weights = torch.full((G,), 1.0 / G)
    codes = torch.randint(0, K, (n, G, M), generator=tg, dtype=torch.uint8)
    hq = torch.randn(reps + 1, G, DIM, generator=tg)
    adc, pq = AdcIndex(books, weights, codes), to_faiss_index(books, codes)
    ours, theirs = [], []
    for i in range(reps + 1):
        for fn, acc in (
            (lambda i=i: adc.search(hq[i : i + 1], TOP), ours),
            (lambda i=i: faiss_search(pq, hq[i : i + 1], M, weights, TOP), theirs),
        ):
            start = time.perf_counter()
            fn()
            if i:  # the first round warms up
                acc.append((time.perf_counter() - start) * 1000)
    print(
        f"A/B at N = {n:,}, 1 thread, {reps} alternating single queries: vidbench ADC median "
        f"{statistics.median(ours):.1f} ms, FAISS IndexPQ median {statistics.median(theirs):.1f} ms; "
        f"ADC faster in {sum(a < b for a, b in zip(ours, theirs, strict=True))}/{reps} pairs"
    )


def figure(rows: list[dict], n: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["N"] != n or r["threads"] != 1:
            continue
        ax.scatter(r["single"], r["recall"], s=40, label=r["row"])
    ax.set_xscale("log")
    ax.set_xlabel("ms / query (1 thread, single query)")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title(f"Serving at N = {n:,} (synthetic, method-shaped)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=10, help="single queries timed per row (median)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--figure", help="PNG: recall@10 against ms/query at the largest size")
    parser.add_argument("--ab-hcq", type=int, metavar="N", help="only the alternating ADC vs IndexPQ test at N")
    args = parser.parse_args()
    if args.ab_hcq:
        ab_hcq(args.ab_hcq, args.queries)
        return
    args.threads = sorted(set(args.threads))
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, faiss {faiss.__version__}, numba kernel {adc_kernels.available()}; "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    bw = {t: read_bandwidth(t) for t in args.threads}
    print("read bandwidth: " + ", ".join(f"{t} thread(s) {b / 1e9:.1f} GB/s" for t, b in bw.items()))
    print()
    print(
        "| N | row | threads | bytes / video | ms / query (single) | ms / query (batch 64) | recall@10 | "
        "floor ms (single) | single / floor | floor ms (batch, per query) |"
    )
    print("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    rows: list[dict] = []
    for n in args.sizes:
        rows += bench(n, args, bw)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if args.figure:
        figure(rows, max(args.sizes), args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
