"""Start real multi-process gloo groups on this machine for DDP tests."""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_processes(fn: Callable, world: int = 2, args: tuple = ()) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` spawned processes joined in one gloo group."""
    mp.spawn(_entry, args=(world, free_port(), fn, args), nprocs=world, join=True)
