"""Run-directory writes that every DDP rank performs at once must not collide."""

from __future__ import annotations

import multiprocessing as mp

from vidbench.config import compose
from vidbench.runner import _write_config


def _writer(out: str) -> bool:
    cfg = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt")
    from pathlib import Path

    for _ in range(100):
        _write_config(cfg, Path(out))
    return True


def test_concurrent_config_writes_from_several_ranks(tmp_path):
    out = tmp_path / "run"
    with mp.get_context("fork").Pool(3) as pool:
        assert all(pool.map(_writer, [str(out)] * 3))
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    assert "clip4clip" in (out / "config.yaml").read_text()
