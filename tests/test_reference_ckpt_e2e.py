"""The command line on a reference checkpoint: `vidbench test --ckpt`, `import-checkpoint`, `fit --init-from`,
and the aggregator showing the imported run as its own, marked row. About 20 s on an idle 2-core machine
(two test passes and a 2-step fit on the small synthetic benchmark; the whole chain is the point of the test)."""

from __future__ import annotations

import torch

from tests import reference_forward as ref
from vidbench.cli import main
from vidbench.reference_ckpt import sha256_file
from vidbench.results.aggregate import aggregate
from vidbench.results.schema import load_result

RECIPE = "clip4clip-meanp_tiny_8f_b64_synth-msrvtt"


def test_test_import_and_fit_from_a_clip4clip_checkpoint(small_synth, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    common = [
        f"paths.synth_root={small_synth}",
        f"paths.runs_dir={runs}",
        "data.num_workers=0",
        "data.batch_size=8",
        "eval.efficiency=false",
    ]
    reference = tmp_path / "pytorch_model.bin.4"
    torch.save(
        ref.openai_clip_state(width=64, layers=2, vocab=4096, patch=8, grid=4, seed=0, prefix="clip."), reference
    )
    sha = sha256_file(reference)

    assert main(["test", RECIPE, *common, "--ckpt", str(reference)]) == 0
    assert "IMPORTED (clip4clip)" in capsys.readouterr().out
    run = runs / f"{RECIPE}+imported-clip4clip-{sha[:8]}" / "seed0"
    record = load_result(run / "result.json")  # validates the schema, checkpoint entry included
    assert record["checkpoint"] == {"origin": "clip4clip", "path": str(reference), "sha256": sha}
    assert record["train_split"] is None and record["recipe"].endswith(f"+imported-clip4clip-{sha[:8]}")

    report = aggregate(runs, tmp_path / "results")
    board = report.leaderboard_path.read_text()
    assert f"{RECIPE}+imported-clip4clip-{sha[:8]}" in board  # its own row, marked by its recipe column

    converted = tmp_path / "converted.ckpt"
    assert main(["import-checkpoint", str(reference), *common, "--recipe", RECIPE, "--out", str(converted)]) == 0
    # lr 0: the fit keeps exactly the weights it started from, so last.ckpt shows where it started
    fit_args = [*common, "optim.lr=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2"]
    assert main(["fit", RECIPE, *fit_args, "--init-from", str(converted)]) == 0
    start = torch.load(converted, weights_only=True)["state_dict"]
    trained = torch.load(runs / RECIPE / "seed0" / "last.ckpt", weights_only=False)["state_dict"]
    assert set(start) == set(trained)
    for key, value in start.items():
        assert torch.equal(value, trained[key]), key
