"""Same seed, same machine, same numbers: each method's tiny recipe trained twice gives identical metrics.

The source of the differences seen between two `make demo` runs was the intra-op thread count: CPU kernels
split reductions and matrix products by it, and torch took it from the machine and OMP_NUM_THREADS. The tiny
recipes now fix it (``trainer.cpu_threads``), the record says which count was used, and these runs check
that nothing else (data order, loader workers, k-means init, ties) varies between two runs.
Five recipes x two short fits: about 15 s of CPU per recipe (more wall time on a loaded machine).
"""

from __future__ import annotations

import pytest
import torch

from vidbench import runner
from vidbench.config import compose, run_dir

TINY_RECIPES = (
    "clip4clip-meanp_tiny_8f_b64_synth-msrvtt",
    "clip4clip-seqtransf_tiny_8f_b64_synth-msrvtt",
    "drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt",
    "eercf_tiny_8f_b64_synth-msrvtt",
    "hcq-clip_tiny_8f_b64_synth-msrvtt",
)
SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "data.num_workers=1",  # one loader worker: worker seeding is part of what must not vary
    "eval.efficiency=false",
]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _train_and_test(recipe: str, synth, runs) -> tuple[dict, dict]:
    cfg = compose(recipe, [f"paths.synth_root={synth}", f"paths.runs_dir={runs}", *SHORT])
    runner.fit(cfg)
    record = runner.test(cfg)
    state = torch.load(run_dir(cfg) / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    return record, state


@pytest.mark.parametrize("recipe", TINY_RECIPES)
def test_same_seed_gives_identical_metrics(recipe, small_synth, tmp_path, restore_threads):
    first, w1 = _train_and_test(recipe, small_synth, tmp_path / "a")
    torch.set_num_threads(1)  # what the environment offers must not matter: the recipe pins the count
    second, w2 = _train_and_test(recipe, small_synth, tmp_path / "b")
    assert first["env"]["torch_threads"] == second["env"]["torch_threads"] == 2
    assert "bit-exact" in first["env"]["deterministic"]
    assert set(first["protocols"]) == set(second["protocols"])
    for name, proto in first["protocols"].items():
        assert proto["metrics"] == second["protocols"][name]["metrics"], f"{recipe}: protocol {name} differs"
    assert w1.keys() == w2.keys()
    different = [k for k in w1 if not torch.equal(w1[k], w2[k])]
    assert not different, f"{recipe}: weights differ after one epoch: {different[:5]}"
