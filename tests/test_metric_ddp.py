"""RetrievalScoreboard: 2-process gloo sync with DistributedSampler padding, plus single-process checks."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from vidbench.eval.metric import RetrievalScoreboard, assemble_query_rows
from vidbench.eval.metrics import retrieval_metrics
from vidbench.eval.postprocess import apply_postprocess

WORLD = 2


def _cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    single = torch.randint(0, 4, (5, 5), generator=gen).float()  # ties on purpose; 5 queries -> padded to 6
    multi_cv = torch.tensor([0, 0, 1, 2, 2, 2, 1])  # 7 captions over 3 videos -> padded to 8
    multi = torch.randn(7, 3, generator=gen)
    return {"single": (single, torch.arange(5)), "multi": (multi, multi_cv)}


def _expected(sim: torch.Tensor, cv: torch.Tensor) -> dict[str, float]:
    out = dict(retrieval_metrics(sim, cv))
    out.update({f"strict/{k}": v for k, v in retrieval_metrics(sim, cv, strict=True).items()})
    t2v, v2t = apply_postprocess(sim, "dsl")
    out.update({f"dsl/{k}": v for k, v in retrieval_metrics(t2v, cv, sim_v2t=v2t).items()})
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        results = {}
        for name, (sim, cv) in _cases().items():
            sampler = DistributedSampler(range(sim.shape[0]), num_replicas=WORLD, rank=rank, shuffle=False)
            indices = torch.tensor(list(sampler))
            board = RetrievalScoreboard(cv, strict=True, postprocess=("dsl",))
            for batch in indices.split(2):  # several updates per rank, like a test loop
                board.update(sim[batch], batch)
            results[name] = {"metrics": board.compute(), "indices": indices.tolist()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_compute_matches_full_matrix(tmp_path: Path) -> None:
    # fork: children inherit the imported torch/torchmetrics (a spawn re-imports them, ~10 s each on a busy
    # machine); each worker sets 1 intra-op thread first, as DataLoader workers do, so fork is safe here.
    context = mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process scoreboard test hung for 120 s")
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, (sim, cv) in _cases().items():
        seen = per_rank[0][name]["indices"] + per_rank[1][name]["indices"]
        assert len(seen) > sim.shape[0]  # the sampler really padded with a duplicate
        expected = _expected(sim, cv)
        for rank in range(WORLD):
            got = per_rank[rank][name]["metrics"]
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, rel=1e-12), (name, rank, key)


def test_single_process_dedup_and_order() -> None:
    sim, cv = _cases()["multi"]
    board = RetrievalScoreboard(cv.tolist(), strict=True)
    order = torch.tensor([6, 2, 0, 5, 1, 3, 4, 6, 0])  # shuffled, with two padded repeats
    for batch in order.split(4):
        board.update(sim[batch], batch)
    got = board.compute()
    assert got == {
        **retrieval_metrics(sim, cv),
        **{f"strict/{k}": v for k, v in retrieval_metrics(sim, cv, strict=True).items()},
    }
    torch.testing.assert_close(assemble_query_rows(sim[order], order, 7), sim)
    board.reset()
    board.update(sim, torch.arange(7))
    assert board.compute()["t2v_R1"] == got["t2v_R1"]


def test_missing_queries_are_reported() -> None:
    sim, cv = _cases()["single"]
    board = RetrievalScoreboard(cv)
    board.update(sim[[0, 1, 3, 0]], torch.tensor([0, 1, 3, 0]))
    with pytest.raises(
        ValueError, match=r"2 of 5 text queries have no similarity row \(first missing: \[2, 4\]\)"
    ):
        board.compute()


def test_scoreboard_input_errors() -> None:
    sim, cv = _cases()["single"]
    board = RetrievalScoreboard()
    board.update(sim, torch.arange(5))
    with pytest.raises(ValueError, match="caption_video is not set"):
        board.compute()
    board.caption_video = cv
    assert board.compute()["t2v_R1"] == retrieval_metrics(sim, cv)["t2v_R1"]
    with pytest.raises(ValueError, match="not batch positions"):
        board.update(sim[:1], torch.tensor([7]))
        board.compute()
    with pytest.raises(ValueError, match="earlier updates had 5"):
        board.update(sim[:, :3], torch.arange(5))
    with pytest.raises(ValueError, match="one entry per row"):
        board.update(sim, torch.arange(4))
    with pytest.raises(ValueError, match="none, dsl"):
        RetrievalScoreboard(cv, postprocess="sharpen")
