"""`vidbench submit` without a cluster: the sbatch script (golden file), task resolution, skipping, resume choice.

Regenerate the golden file after an intended template change with ``python -m tests.test_slurm_script``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vidbench import checkpointing, runner, slurm
from vidbench.cli import main
from vidbench.config import compose, run_dir
from vidbench.errors import ConfigError, VidbenchError
from vidbench.slurm import Resources, Task

GOLDEN = Path(__file__).parent / "golden" / "sbatch_array.sh"
TINY = "clip4clip-meanp_tiny_8f_b64_synth-msrvtt"


def golden_script() -> str:
    """A two-node, 4-GPU array over 2 recipes x seeds where task 1 already has its result."""
    overrides = ("paths.data_root=/datasets", "trainer.num_nodes=2", "trainer.devices=4")
    runs = [
        ("clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka", 0),
        ("clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka", 1),
        ("clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka", 0),
        ("clip4clip-seqtransf_vitb32_12f_b128_5e_msrvtt-9k_1ka", 1),
    ]
    tasks = [Task(r, s, Path(f"/scratch/runs/{r}/seed{s}"), overrides) for r, s in runs]
    res = Resources(
        job_name="vidbench-msrvtt",
        partition="gpu",
        account="vision",
        qos="high",
        time="1-00:00:00",
        nodes=2,
        gpus_per_node=4,
        cpus_per_task=8,
        mem="256G",
        signal_lead_s=120,
        max_parallel=2,
        extra=("--constraint=a100", "--exclusive"),
        setup=("module load cuda/12.1",),
    )
    return slurm.render_script(
        tasks,
        res,
        python="/opt/vidbench/.venv/bin/python",
        workdir=Path("/opt/vidbench"),
        log_dir=Path("/scratch/runs/slurm"),
        pending=[0, 2, 3],
    )


def test_sbatch_script_matches_golden_file():
    got = golden_script()
    assert got == GOLDEN.read_text(), "sbatch template changed: review, then `python -m tests.test_slurm_script`"
    for line in (
        "#SBATCH --array=0,2-3%2",
        "#SBATCH --ntasks-per-node=4",  # one process per GPU: Lightning's SLURMEnvironment requires it
        "#SBATCH --gres=gpu:4",
        "#SBATCH --signal=USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --constraint=a100",
    ):
        assert line in got.splitlines()
    subprocess.run(["bash", "-n", str(GOLDEN)], check=True)  # valid shell


def _fake_srun(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/bash\nfor a in "$@"; do echo "ARG $a"; done\n')
    srun.chmod(0o755)
    return bin_dir


def test_script_resolves_array_task_and_skips_finished_runs(tmp_path):
    """Run the generated script with a stand-in srun: task id -> (recipe, seed, run dir); done -> exit early."""
    tasks = [Task("recipe-a", 0, tmp_path / "a s0", ("x=1",)), Task("recipe-b", 3, tmp_path / "b s3", ("x=1",))]
    script = tmp_path / "job.sh"
    res = Resources(job_name="t", cpus_per_task=1, time="5")
    script.write_text(slurm.render_script(tasks, res, python="/py", workdir=tmp_path, log_dir=tmp_path))
    env = {**os.environ, "PATH": f"{_fake_srun(tmp_path)}:{os.environ['PATH']}", "SLURM_JOB_ID": "7"}

    out = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    args = [line[4:] for line in out.stdout.splitlines() if line.startswith("ARG ")]
    assert args[-7:] == ["/py", "-m", "vidbench.cli", "run-task", "recipe-b", "run.seed=3", "x=1"]
    assert f"--output={tmp_path / 'b s3'}/slurm-%j.log" in args
    assert (tmp_path / "b s3").is_dir() and not (tmp_path / "a s0").exists()

    (tmp_path / "a s0").mkdir()
    (tmp_path / "a s0" / "result.json").write_text("{}")
    out = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "0"}, capture_output=True, text=True)
    assert out.returncode == 0 and "nothing to do" in out.stdout and "ARG" not in out.stdout


def test_array_spec_compresses_ranges():
    assert slurm.array_spec([0, 1, 2, 5]) == "0-2,5"
    assert slurm.array_spec([3, 1, 2], max_parallel=4) == "1-3%4"
    assert slurm.array_spec([0, 2, 4, 5]) == "0,2,4-5"
    with pytest.raises(ValueError):
        slurm.array_spec([])


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("time", "tomorrow", "slurm.time"),
        ("mem", "lots", "slurm.mem"),
        ("extra", ("constraint=a100",), "slurm.extra"),
        ("nodes", 0, "slurm.nodes"),
        ("partition", "gpu; rm -rf /", "partition"),
    ],
)
def test_bad_resources_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Resources.from_config({}, **{key: value})


def test_resources_come_from_recipe_section_then_command_line():
    cfg = compose(TINY, ["slurm.partition=cpu", "slurm.time=30", "slurm.extra=[--exclusive]"])
    res = Resources.from_config(cfg.slurm, time="45", cpus_per_task=None)
    assert (res.partition, res.time, res.extra, res.cpus_per_task) == ("cpu", "45", ("--exclusive",), 8)
    assert res.tasks_per_node == 1 and Resources(gpus_per_node=4).tasks_per_node == 4
    with pytest.raises(ConfigError, match="slurm.requeue_at"):
        compose(TINY, ["slurm.requeue_at=sometimes"])


def test_slurm_job_id_for_plain_and_array_jobs():
    assert checkpointing.slurm_job_id({"SLURM_JOB_ID": "41"}) == "41"
    assert (
        checkpointing.slurm_job_id({"SLURM_JOB_ID": "45", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "5"})
        == "40_5"
    )


def test_submit_dry_run_leaves_out_finished_runs(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    over = [f"paths.runs_dir={runs_dir}", "trainer.accelerator=cpu"]
    done = run_dir(compose(TINY, [*over, "run.seed=1"]))
    done.mkdir(parents=True)
    (done / "result.json").write_text("{}")
    subs = slurm.submit([(TINY, 0), (TINY, 1), (TINY, 2)], over, cli_resources={"ntasks_per_node": 2}, dry_run=True)
    assert len(subs) == 1 and subs[0].job_id is None and subs[0].pending == (0, 2)
    text = subs[0].text
    assert "#SBATCH --array=0,2\n" in text and "trainer.devices=2" in text and "trainer.num_nodes=1" in text
    assert not (runs_dir / "slurm").exists()  # a dry run writes nothing

    assert main(["submit", "--dry-run", "--seeds", "1", TINY, *over]) == 0
    out = capsys.readouterr().out
    assert "already have result.json" in out and "#!/bin/bash" in out

    with pytest.raises(ConfigError, match="--seeds"):
        slurm.submit([(TINY, 0)], [*over, "run.seed=3"], dry_run=True)


def test_submit_without_sbatch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    with pytest.raises(VidbenchError, match="sbatch not found.*--dry-run"):
        slurm.submit([(TINY, 0)], [f"paths.runs_dir={tmp_path}"])


def test_run_task_skips_a_run_with_a_result(tmp_path, monkeypatch):
    cfg = compose(TINY, [f"paths.runs_dir={tmp_path}"])
    out = run_dir(cfg)
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps({"config_hash": "old"}))

    def must_not_run(cfg):
        raise AssertionError("fit ran although result.json exists")

    monkeypatch.setattr(runner, "fit", must_not_run)
    assert slurm.run_task(cfg) == out


def test_resume_prefers_the_newest_checkpoint(tmp_path):
    assert checkpointing.latest_checkpoint(tmp_path) is None
    last, hpc1 = tmp_path / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    last.write_bytes(b"a")
    hpc1.write_bytes(b"b")
    os.utime(last, ns=(10**18, 10**18))
    os.utime(hpc1, ns=(2 * 10**18, 2 * 10**18))
    assert checkpointing.latest_checkpoint(tmp_path) == hpc1
    assert checkpointing.next_hpc_path(tmp_path).name == "hpc_ckpt_2.ckpt"
    os.utime(last, ns=(3 * 10**18, 3 * 10**18))
    assert checkpointing.latest_checkpoint(tmp_path) == last
    assert checkpointing.prune_hpc_checkpoints(tmp_path) == [hpc1] and not hpc1.exists()


# -- the requeue callback in one process, with scontrol stubbed -------------------------------------------


class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)), batch_size=4)


class _SignalAt(L.Callback):
    """Deliver SIGUSR1 to this process after a given global step (as `scancel --signal=USR1` would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    checkpointing.clear_requeue()


def _trainer(out: Path, at: str, signal_step: int) -> L.Trainer:
    return L.Trainer(
        default_root_dir=out,
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_SignalAt(signal_step), checkpointing.RequeueOnSignal(out, at=at)],
        plugins=[checkpointing.AtomicCheckpointIO()],
    )


@pytest.mark.parametrize(("at", "saved_step"), [("batch", 10), ("epoch", 16)])
def test_requeue_signal_checkpoints_at_a_shared_point(at, saved_step, tmp_path, monkeypatch, restore_signals):
    calls = []
    monkeypatch.setattr(checkpointing, "requeue_self", lambda: calls.append(1) or True)
    with pytest.raises(checkpointing.Requeued):
        _trainer(tmp_path, at, signal_step=10).fit(_Linear())
    assert calls == [1]
    ckpt = checkpointing.latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "hpc_ckpt_1.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == saved_step  # 8 batches per epoch

    # The requeued run resumes there and finishes the schedule: 3 epochs x 8 steps, none repeated or lost.
    trainer = _trainer(tmp_path, at, signal_step=-1)
    trainer.fit(_Linear(), ckpt_path=str(ckpt))
    assert trainer.global_step == 24 and trainer.current_epoch == 3


def test_refused_requeue_lets_training_go_on(tmp_path, monkeypatch, restore_signals):
    monkeypatch.setattr(checkpointing, "requeue_self", lambda: False)
    trainer = _trainer(tmp_path, "batch", signal_step=4)
    trainer.fit(_Linear())
    assert trainer.global_step == 24 and not checkpointing.requeue_pending()
    assert [p.name for p in checkpointing.hpc_checkpoints(tmp_path)] == ["hpc_ckpt_1.ckpt"]


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(golden_script())
    print(f"wrote {GOLDEN}")
