"""Every method's test-time path at each dataset's real size: gather, scoring per protocol, metrics.

Usage::

    .venv/bin/python benchmarks/bench_protocols.py                      # every dataset x method (long)
    .venv/bin/python benchmarks/bench_protocols.py --datasets msrvtt-1ka --methods drl-wti
    .venv/bin/python benchmarks/bench_protocols.py --device cuda        # on a GPU (peak = CUDA allocator)

What runs, per (method, dataset), in a fresh subprocess (so one run's memory never counts in the next):

1. The method is built from its recipe with a random ViT-B/32 CLIP at the real widths
   (``model.clip=random-vitb32``), the dataset's frames and words; one real-shaped item (uint8 frames
   ``[1, T, 3, 224, 224]``, ``T`` token ids) is encoded in eval mode, which gives every feature's key, shape and
   dtype. The full split's features are then drawn at random with those shapes: floats L2-normalised as the
   method's own were, masks with realistic valid lengths (see ``DATASETS``), codes uniform over the codebook.
2. ``score/<protocol>``: ``chunked_scores`` with the method's own protocols and the recipe's eval budget, as
   ``RetrievalMethod.on_test_epoch_end`` calls it. Where scoring every query would take too long on this
   CPU (``--max-rows``), the first rows are scored and the time is extrapolated linearly (blocks are
   independent; the table marks it ``~``); the peak memory includes the full ``[n_text, n_video]`` output.
3. ``metrics/<protocol>``: ``RetrievalScoreboard`` on the full score matrix (DSL too where the protocol
   reports it, the MMT metric family for HCQ), with the dataset's caption-to-video mapping.
4. ``ddp``: two gloo processes, each holding half of both splits' features, run the test step's gather
   (``all_gather`` of every feature, as Lightning's does) and hold their share of the score rows; the figure is
   each rank's peak, i.e. what a GPU rank holds after the gather.

Memory on CPU is the resident-set high-water mark (``VmHWM``) during the stage minus the resident set just
before it (reset with ``/proc/self/clear_refs``; ``MALLOC_MMAP_THRESHOLD_`` at 64 KiB so freed buffers go
back to the OS), so model weights and inputs built beforehand do not count. On CUDA it is
``max_memory_allocated`` minus the allocation before the stage. Output: a Markdown table, and ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30


# EERCF's patch index at 64 frames: n_video x 64 frames x 49 patches x 512 x 4 B (31.6 GB for ActivityNet's
# 4,917 videos) does not fit a 24 GiB GPU, nor this machine; there the benchmark (and a user) sets
# method.index_patches=false, which reports the frames-only re-rank (rerank@k-frames) and drops the patch one.
PATCH_NOTE = "method.index_patches=false: the patch index would need {gib:.1f} GiB"


@dataclass(frozen=True)
class Dataset:
    name: str
    n_text: int
    n_video: int
    frames: int
    words: int
    text_len: tuple[float, float]  # valid text tokens: 2 + Poisson(mean), capped at words; (mean, unused)
    video_len: tuple[int, int]  # valid frames: uniform in [lo, hi] seconds at 1 fps, capped at frames


# Real test-split sizes (captions x videos) from the papers; lengths resemble each dataset (not measured).
DATASETS = {
    "msrvtt-1ka": Dataset("msrvtt-1ka", 1000, 1000, 12, 32, (10, 0), (10, 32)),
    "msrvtt-full": Dataset("msrvtt-full", 59800, 2990, 12, 32, (10, 0), (10, 32)),
    "msvd": Dataset("msvd", 27763, 670, 12, 32, (8, 0), (2, 60)),
    "vatex": Dataset("vatex", 15000, 1500, 12, 32, (14, 0), (8, 10)),
    "activitynet": Dataset("activitynet", 4917, 4917, 64, 64, (58, 0), (20, 240)),
    "didemo": Dataset("didemo", 1004, 1004, 64, 64, (28, 0), (25, 35)),
}

# One recipe per test path (recipes sharing a method share it; frames and words are set per dataset).
METHODS = {
    "clip4clip-meanp": "clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka",
    "clip4clip-seqtransf": "clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka",
    "drl-ti": "drl-ti-none_vitb32_12f_b128_5e_msrvtt-9k_1ka",
    "drl-wti": "drl-wti-seqtransf-cdcr_vitb32_12f_b128_5e_msrvtt-9k_1ka",
    "eercf": "eercf_vitb32_12f_b128_5e_msvd",
    "hcq": "hcq-clip_vitb32_12f_b128_5e_msrvtt-9k_1ka",
}


# -- memory ---------------------------------------------------------------------------------------------


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Peak:
    """Peak memory of a stage above what was held when it started (CPU: RSS high-water; CUDA: allocator)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with contextlib.suppress(OSError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _rss_kib() * 1024
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.bytes = _rss_kib("VmHWM") * 1024 - self.base
        self.seconds = time.perf_counter() - self.t0


# -- features ---------------------------------------------------------------------------------------------


def _lengths(n: int, cap: int, kind: str, spec: tuple, g: torch.Generator) -> torch.Tensor:
    if kind == "text":
        x = 2 + torch.poisson(torch.full((n,), float(spec[0])), generator=g).long()
    else:
        x = torch.randint(int(spec[0]), int(spec[1]) + 1, (n,), generator=g)
    return x.clamp(1, cap)


def random_like(sample: dict[str, torch.Tensor], n: int, lengths: torch.Tensor, num_codewords: int, seed: int):
    """``n`` items shaped as ``sample``'s one: masks from ``lengths``, unit-norm floats where the sample's
    were, codes uniform; padded positions zeroed where the sample zeroed them. Built in slices of 1024."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, t in sample.items():
        shape = (n, *t.shape[1:])
        if "mask" in key:
            steps = torch.arange(t.shape[1])
            out[key] = (steps[None, :] < lengths[:, None]).to(t.dtype)
            continue
        if not t.is_floating_point():
            out[key] = torch.randint(0, num_codewords, shape, generator=g).to(t.dtype)
            continue
        norms = t.float().norm(dim=-1)
        norms = norms[norms > 0]  # padded rows are zero where the method prepared its tokens
        unit = t.ndim >= 2 and norms.numel() > 0 and bool(torch.allclose(norms, torch.ones(()), atol=1e-3))
        x = torch.empty(shape, dtype=t.dtype)
        for i in range(0, n, 1024):
            block = torch.randn((min(1024, n - i), *t.shape[1:]), generator=g)
            x[i : i + 1024] = torch.nn.functional.normalize(block, dim=-1) if unit else block
        out[key] = x
    # zero the padded token/frame positions of [n, L, D] features sharing a mask's L (as encoders leave them)
    masks = [v for k, v in out.items() if "mask" in k]
    for key, x in out.items():
        if x.is_floating_point() and x.ndim == 3 and masks:
            m = next((m for m in masks if m.shape[1] == x.shape[1]), None)
            if m is not None and bool((sample[key][0][~sample_mask(sample, x.shape[1])] == 0).all()):
                x.mul_(m.unsqueeze(-1).to(x.dtype))
    return out


def sample_mask(sample: dict[str, torch.Tensor], length: int) -> torch.Tensor:
    m = next(v for k, v in sample.items() if "mask" in k and v.shape[1] == length)
    return m[0] != 0


def caption_video(ds: Dataset) -> torch.Tensor:
    """Each caption's video: captions spread as evenly as the split's counts allow (20 per MSRVTT video...)."""
    return torch.arange(ds.n_text) * ds.n_video // ds.n_text


# -- one (method, dataset) ----------------------------------------------------------------------------------


def build(method: str, ds: Dataset, device: torch.device):
    from vidbench.config import compose
    from vidbench.methods import build_method

    overrides = [
        "model.clip=random-vitb32",
        "model.tokenizer=tiny",
        f"data.max_frames={ds.frames}",
        f"data.max_words={ds.words}",
        "eval.efficiency=false",
    ]
    if method == "eercf" and ds.frames > 12:
        overrides.append("method.index_patches=false")  # see PATCH_NOTE
    cfg = compose(METHODS[method], overrides)
    torch.manual_seed(0)
    model = build_method(cfg).to(device).eval()
    return cfg, model


@torch.no_grad()
def sample_features(model, ds: Dataset, device: torch.device) -> tuple[dict, dict]:
    ids = torch.randint(1, 100, (1, ds.words), device=device)
    ids[0, 0], ids[0, ds.words // 2] = 49406 % model.clip.vocab_size, 49407 % model.clip.vocab_size
    amask = torch.zeros(1, ds.words, dtype=torch.long, device=device)
    amask[0, : ds.words // 2 + 1] = 1
    ids = ids * amask
    video = torch.randint(0, 256, (1, ds.frames, 3, 224, 224), dtype=torch.uint8, device=device)
    vmask = torch.zeros(1, ds.frames, dtype=torch.long, device=device)
    vmask[0, : max(1, ds.frames * 2 // 3)] = 1
    text = model.encode_text(ids, amask)
    vid = model.encode_video(video, vmask)
    return {k: v.detach().float() if v.is_floating_point() else v for k, v in text.items()}, {
        k: v.detach().float() if v.is_floating_point() else v for k, v in vid.items()
    }


def _nbytes(feats: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in feats.values())


_BUILT: dict[tuple, tuple] = {}
# The metrics stage's cost depends on the split's size and the metric families asked for, not on the method
# (its input is a score matrix); measured once per (dataset, dsl, mmt) in one run and shared between the
# per-method processes through a file named after the driver's pid (reused rows say "same as measured").
_METRICS: dict[str, dict] = {}


def _metrics_cache() -> Path:
    return Path(os.environ.get("BENCH_METRICS_CACHE", f"/tmp/bench_protocols_metrics_{os.getppid()}.json"))


def _load_metrics_cache() -> None:
    with contextlib.suppress(OSError, ValueError):
        _METRICS.update(json.loads(_metrics_cache().read_text()))


def _save_metrics_cache() -> None:
    from vidbench.io import write_text_atomic

    write_text_atomic(_metrics_cache(), json.dumps(_METRICS))


def run_one(method: str, dataset: str, device_name: str, max_rows: int, ddp_max_gib: float = 3.0) -> dict:
    """One (method, dataset); the model and its sample features are reused across datasets of one shape."""
    from vidbench.eval.metric import RetrievalScoreboard
    from vidbench.eval.retrieval import chunked_scores, slice_features

    device = torch.device(device_name)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    ds = DATASETS[dataset]
    t0 = time.perf_counter()
    key = (method, ds.frames, ds.words)
    if key not in _BUILT:
        _BUILT.clear()
        cfg, model = build(method, ds, device)
        _BUILT[key] = (cfg, model, *sample_features(model, ds, device))
    cfg, model, st, sv = _BUILT[key]
    g = torch.Generator().manual_seed(1)
    k = int(cfg.method.get("num_codewords", 256) or 256) if "method" in cfg else 256
    text = random_like(st, ds.n_text, _lengths(ds.n_text, ds.words, "text", ds.text_len, g), k, 2)
    video = random_like(sv, ds.n_video, _lengths(ds.n_video, ds.frames, "video", ds.video_len, g), k, 3)
    text = {k_: v.to(device) for k_, v in text.items()}
    video = {k_: v.to(device) for k_, v in video.items()}
    cv = caption_video(ds).to(device)
    e = cfg.eval
    record = {
        "method": method,
        "dataset": dataset,
        "n_text": ds.n_text,
        "n_video": ds.n_video,
        "frames": ds.frames,
        "words": ds.words,
        "text_bytes": _nbytes(text),
        "video_bytes": _nbytes(video),
        "setup_s": time.perf_counter() - t0,
        "stages": [],
    }
    multi = ds.n_text != ds.n_video
    with torch.no_grad():
        for proto in model.protocols(text, video):
            print(f"{method} {dataset} {proto.name}", file=sys.stderr, flush=True)
            rows = min(ds.n_text, max_rows) if max_rows > 0 else ds.n_text
            with Peak(device) as p:
                sims = torch.empty(ds.n_text, ds.n_video, device=device)
                sims[:rows] = chunked_scores(
                    proto.score,
                    slice_features(text, 0, rows),
                    video,
                    budget_bytes=e.budget_mb * 2**20,
                    bytes_per_pair=proto.bytes_per_pair,
                    text_chunk=e.text_chunk,
                    video_chunk=ds.n_video if proto.whole_gallery else e.video_chunk,
                    out_device=device,
                )
            if rows < ds.n_text:  # the rest: random scores (the metrics below need a full matrix)
                sims[rows:] = torch.randn(ds.n_text - rows, ds.n_video, generator=g).to(device)
            record["stages"].append(
                {
                    "stage": f"score/{proto.name}",
                    "seconds": p.seconds * ds.n_text / rows,
                    "extrapolated_from_rows": rows if rows < ds.n_text else None,
                    "peak_bytes": p.bytes,
                }
            )
            mkey = f"{dataset}|dsl={bool(proto.dsl)}|mmt={bool(proto.mmt_metrics)}"
            _load_metrics_cache()
            if mkey in _METRICS:  # the same cost as measured for an earlier protocol: not measured twice
                record["stages"].append(
                    {**_METRICS[mkey], "stage": f"metrics/{proto.name}" + ("+dsl" if proto.dsl else "")}
                )
                del sims
                continue
            with Peak(device) as p:
                board = RetrievalScoreboard(
                    caption_video=cv,
                    strict=e.strict,
                    postprocess=["dsl"] if proto.dsl else [],
                    postprocess_kwargs={"dsl": {"temperature": e.dsl_temperature}},
                    multi_caption=multi,
                    mmt=proto.mmt_metrics,
                ).to(device)
                board.update(sims, torch.arange(ds.n_text, device=device))
                metrics = board.compute()
            _METRICS[mkey] = {"seconds": p.seconds, "peak_bytes": p.bytes, "shared": True}
            _save_metrics_cache()
            record["stages"].append(
                {
                    "stage": f"metrics/{proto.name}" + ("+dsl" if proto.dsl else ""),
                    "seconds": p.seconds,
                    "peak_bytes": p.bytes,
                    "t2v_R1": float(metrics["t2v_R1"]),
                }
            )
            del sims, board
    if method == "eercf" and ds.frames > 12:
        record["note"] = PATCH_NOTE.format(gib=ds.n_video * ds.frames * model.clip.num_patches * 512 * 4 / GIB)
    held = record["text_bytes"] + record["video_bytes"] + (ds.n_text + 1) // 2 * ds.n_video * 4
    del text, video
    gc.collect()
    if 64 * 2**20 <= held <= ddp_max_gib * GIB:
        record["ddp"] = ddp_step(st, sv, ds, k)
    else:  # under 64 MiB (not worth two processes) or too big for two ranks on this machine: computed
        record["ddp"] = {"peak_bytes_per_rank": held, "seconds": float("nan"), "held_bytes": held, "computed": True}
    return record


# -- the 2-process DDP test step --------------------------------------------------------------------------


def _ddp_rank(rank: int, world: int, port: int, st: dict, sv: dict, ds: Dataset, k: int, q) -> None:
    """One rank: its half of both splits (drawn here, so the parent's memory is not inherited), the gather."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(10 + rank)
    nt, nv = len(range(rank, ds.n_text, world)), len(range(rank, ds.n_video, world))
    mine_t = random_like(st, nt, _lengths(nt, ds.words, "text", ds.text_len, g), k, 20 + rank)
    mine_v = random_like(sv, nv, _lengths(nv, ds.frames, "video", ds.video_len, g), k, 30 + rank)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dist.barrier()
        with Peak(torch.device("cpu")) as p:
            held = []
            for side in (mine_t, mine_v):
                for x in side.values():
                    n = torch.tensor([x.shape[0]])
                    sizes = [torch.zeros_like(n) for _ in range(world)]
                    dist.all_gather(sizes, n)
                    pad = int(max(sizes))  # Lightning pads to the longest rank, gathers, then we flatten
                    xp = torch.zeros((pad, *x.shape[1:]), dtype=x.dtype)
                    xp[: x.shape[0]] = x
                    parts = [torch.empty_like(xp) for _ in range(world)]
                    dist.all_gather(parts, xp)
                    held.append(torch.stack(parts).flatten(0, 1))
                    del parts, xp
            rows = torch.zeros(nt, ds.n_video)  # this rank's score rows
            dist.barrier()
        q.put((rank, p.bytes, p.seconds, sum(t.numel() * t.element_size() for t in held) + rows.numel() * 4))
    finally:
        dist.destroy_process_group()


def ddp_step(st: dict, sv: dict, ds: Dataset, k: int) -> dict:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ddp_rank, args=(r, 2, port, st, sv, ds, k, q)) for r in range(2)]
    for proc in procs:
        proc.start()
    got = sorted(q.get(timeout=1800) for _ in procs)
    for proc in procs:
        proc.join()
    return {
        "peak_bytes_per_rank": max(r[1] for r in got),
        "seconds": max(r[2] for r in got),
        "held_bytes": got[0][3],
    }


# -- driver ---------------------------------------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / 2**20:.0f} MiB"


def table(records: list[dict]) -> str:
    lines = [
        "| dataset | texts x videos | method | stage | time | peak memory |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in records:
        size = f"{r['n_text']:,} x {r['n_video']:,} ({r['frames']}f)"
        feats = f"features {_fmt_bytes(r['text_bytes'])} + {_fmt_bytes(r['video_bytes'])}"
        lines.append(f"| {r['dataset']} | {size} | {r['method']} | {feats} | | |")
        for s in r["stages"]:
            approx = "~" if s.get("extrapolated_from_rows") else ""
            same = " (same cost as measured above)" if s.get("shared") and "t2v_R1" not in s else ""
            stage = s["stage"] + same
            lines.append(f"| | | | {stage} | {approx}{s['seconds']:.1f} s | {_fmt_bytes(s['peak_bytes'])} |")
        d = r["ddp"]
        if d.get("computed"):
            lines.append(f"| | | | ddp gather (per rank, 2 ranks; computed) | | {_fmt_bytes(d['held_bytes'])} |")
        else:
            peak = _fmt_bytes(d["peak_bytes_per_rank"])
            lines.append(f"| | | | ddp gather (per rank, 2 ranks) | {d['seconds']:.1f} s | {peak} |")
        if r.get("note"):
            lines.append(f"| | | | note: {r['note']} | | |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-rows", type=int, default=2048, help="score at most this many queries, extrapolate")
    ap.add_argument(
        "--ddp-max-gib",
        type=float,
        default=3.0,
        help="measure the 2-rank step only when each rank holds at most this much (else: computed)",
    )
    ap.add_argument("--json", type=Path, help="also write every record here")
    ap.add_argument("--one", nargs="+", metavar="METHOD DATASET", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # one method, the given datasets in order (one JSON line each)
        method, *datasets = args.one
        for dataset in datasets:
            print(json.dumps(run_one(method, dataset, args.device, args.max_rows, args.ddp_max_gib)), flush=True)
            gc.collect()
        return 0
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(REPO)}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {args.device}")
    records = []
    groups = [
        [d for d in args.datasets if DATASETS[d].frames == f]
        for f in sorted({DATASETS[d].frames for d in args.datasets})
    ]
    for method, datasets in [(m, g) for g in groups for m in args.methods]:  # one model build per process
        cmd = [sys.executable, __file__, "--one", method, *datasets, "--device", args.device]
        cmd += ["--max-rows", str(args.max_rows), "--ddp-max-gib", str(args.ddp_max_gib)]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
            done = set()
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                rec = json.loads(line)
                done.add(rec["dataset"])
                records.append(rec)
                print(table([rec]).split("\n", 2)[2], flush=True)
                if args.json:
                    args.json.write_text(json.dumps(records, indent=1))
            err = proc.stderr.read()
        if proc.returncode:
            missing = [d for d in datasets if d not in done]
            print(f"FAILED {method} at {missing[:1]}:\n{err[-3000:]}", flush=True)
            records += [{"method": method, "dataset": d, "error": err[-2000:]} for d in missing]
    ok = [r for r in records if "error" not in r]
    print("\n" + table(ok))
    worst = max((s["peak_bytes"] for r in ok for s in r["stages"]), default=0)
    worst_ddp = max((r["ddp"]["peak_bytes_per_rank"] for r in ok), default=0)
    print(f"\nlargest stage peak: {_fmt_bytes(worst)}; largest DDP rank peak: {_fmt_bytes(worst_ddp)}")
    return 1 if len(ok) < len(records) else 0


if __name__ == "__main__":
    sys.exit(main())
