"""``trainer.contrastive_chunk`` through Lightning: the same training as without it, and refusals that name the layer.

A tiny recipe (seqTransf, gradient clipping on) trained 2 epochs with chunks of 3 ends with the weights of the
unchunked run to 1e-5 (float32) and the same test metrics; HCQ on MMT features refuses because its encoders
normalise over the batch (the text experts' context gating has a BatchNorm); a chunked run cut after one
epoch and resumed ends where the uninterrupted chunked run does (rehearsal, ``make rehearse-grad-cache``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.mmt_fixtures import write_msrvtt, write_tiny_bert_vocab
from tests.test_hcq_mmt import MAIN as HCQ_MMT
from tests.test_hcq_mmt import tiny_mmt
from vidbench import runner
from vidbench.config import compose, run_dir
from vidbench.errors import ConfigError

RECIPE = "clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt"
COMMON = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.cpu_threads=1",
    "data.batch_size=8",
    "data.num_workers=0",
    "eval.efficiency=false",
    "eval.dsl=false",
]


def _cfg(synth: Path, runs: Path, extra: list[str]):
    return compose(RECIPE, [f"paths.synth_root={synth}", f"paths.runs_dir={runs}", *COMMON, *extra])


def _weights(cfg) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(cfg) / "last.ckpt", weights_only=False)["state_dict"]


def _train_and_test(cfg) -> tuple[dict[str, torch.Tensor], dict]:
    runner.fit(cfg)
    record = runner.test(cfg)
    return _weights(cfg), record


def test_chunked_training_matches_unchunked(small_synth: Path, tmp_path: Path):
    plain_w, plain = _train_and_test(_cfg(small_synth, tmp_path / "plain", []))
    chunk_w, chunked = _train_and_test(_cfg(small_synth, tmp_path / "chunk", ["trainer.contrastive_chunk=3"]))
    assert set(plain_w) == set(chunk_w)
    moved = 0
    for key, value in plain_w.items():
        torch.testing.assert_close(chunk_w[key], value, rtol=0, atol=1e-5, msg=key)
        moved += value.is_floating_point() and value.abs().sum() > 0
    assert moved > 10
    assert chunked["protocols"]["base"]["metrics"] == plain["protocols"]["base"]["metrics"]
    assert chunked["training"]["contrastive_chunk"] == 3 and plain["training"]["contrastive_chunk"] is None
    assert chunked["training"]["global_batch"] == chunked["training"]["per_device_batch"] == 8


def test_hcq_on_mmt_features_refuses_chunking(tmp_path: Path):
    root = tmp_path / "data"
    write_msrvtt(root / "mmt" / "MSRVTT")
    vocab = write_tiny_bert_vocab(root / "vocab" / "vocab.txt").parent
    extra = ["trainer.contrastive_chunk=2", "eval.select_on_test=false"]
    cfg = compose(HCQ_MMT, [*tiny_mmt(root, vocab, tmp_path / "runs", epochs=1), *extra])
    with pytest.raises(ConfigError, match=r"text_experts\..*batch_norm \(BatchNorm1d\)"):
        runner.fit(cfg)


@pytest.mark.rehearsal
def test_chunked_run_resumed_matches_uninterrupted(small_synth: Path, tmp_path: Path):
    chunk = ["trainer.contrastive_chunk=3"]
    straight = _cfg(small_synth, tmp_path / "a", chunk)
    runner.fit(straight)
    cut = _cfg(small_synth, tmp_path / "b", [*chunk, "trainer.stop_after_epochs=1"])
    runner.fit(cut)
    resumed = _cfg(small_synth, tmp_path / "b", chunk)
    runner.fit(resumed)
    want, got = _weights(straight), _weights(resumed)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_leaderboard_shows_the_training_batch_and_marks_accumulation(tmp_path: Path):
    """Batch fields reach the full tables and the headline; accumulation is marked; an older record (no
    ``training``) stays readable and forms its own row."""
    from tests.test_aggregate import metrics, record, write_run
    from vidbench.results.aggregate import aggregate
    from vidbench.results.schema import result_problems

    runs = tmp_path / "runs"
    base = {"base": {"postprocess": "none", "metrics": metrics(44.0)}}
    training = {
        "num_nodes": 2,
        "devices_per_node": 4,
        "world_size": 8,
        "per_device_batch": 16,
        "global_batch": 128,
        "contrastive_chunk": 8,
        "accumulate_grad_batches": 1,
        "samples_per_step": 128,
        "precision": "bf16-mixed",
        "train_split": "train-7k",
        "deviations": [],
    }
    chunked = record("c4c_b128", "CLIP4Clip (meanP)", "clip4clip", 0, base, None) | {"training": training}
    accumulated = record("c4c_b64x2", "CLIP4Clip (meanP)", "clip4clip", 0, base, None) | {
        "training": training | {"global_batch": 64, "accumulate_grad_batches": 2, "deviations": ["accumulation x2"]}
    }
    older = record("c4c_old", "CLIP4Clip (meanP)", "clip4clip", 0, base, None)
    for rec in (chunked, accumulated, older):
        assert result_problems(rec) == []
        write_run(runs, rec)
    assert result_problems(chunked | {"training": training | {"global_batch": 0}})  # validated, not just stored
    report = aggregate(runs, tmp_path / "out", reference=None)
    md = report.leaderboard_path.read_text()
    assert "| CLIP4Clip (meanP) | 2 × 4 | 16 | 128 | 8 | 1 | bf16-mixed | train-7k |" in md
    assert "CLIP4Clip (meanP) [protocol deviation: gradient accumulation]" in md and "accumulation x2" in md
    assert "128 · train-7k" in md and "— · train-9k" in md  # headline: batch · split; older record: its split
    assert len(report.table("msrvtt", "test-1ka", "base").rows) == 3


def test_out_of_memory_at_the_first_step_suggests_a_chunk(small_synth: Path, tmp_path: Path, monkeypatch):
    from vidbench.errors import VidbenchError
    from vidbench.methods.clip4clip import Clip4Clip

    def no_memory(self, batch):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Clip4Clip, "global_loss_terms", no_memory)
    with pytest.raises(VidbenchError, match=r"trainer\.contrastive_chunk=2 .*same gradients"):
        runner.fit(_cfg(small_synth, tmp_path / "oom", ["trainer.max_epochs=1"]))
