"""Against a real SLURM on this machine (started by .ci/setup_slurm.sh): DDP jobs, preemption, requeue, resume.

Three 2-task CPU DDP jobs of the tiny recipe are submitted at once with `vidbench submit`'s API and driven
to the end by one loop (they share this machine's two CPUs, so SLURM runs them one after another):

- ``ref``: an array over seeds 0 and 1 where seed 1 already has a result: only seed 0 runs, uninterrupted;
- ``epoch``: ``slurm.requeue_at=epoch``; gets ``scancel --signal=USR1`` once its first epoch is on disk;
- ``batch``: the default (checkpoint at the next batch); gets the same signal at the same point.

A requeued job waits for its BeginTime (SLURM delays requeued jobs by ~2 minutes); the loop moves it up with
``scontrol update StartTime=now``, as an operator could.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from vidbench import checkpointing, slurm

REPO = Path(__file__).resolve().parent.parent
RECIPE = "clip4clip-meanp_tiny_8f_b64_synth-msrvtt"
STEPS_PER_EPOCH = 40  # 2 ranks x 1 sample per step
EPOCHS = 4
DEADLINE_S = 600
RESOURCES = {"ntasks_per_node": 2, "cpus_per_task": 1, "time": "20"}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def _run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def _slurm_problem() -> str | None:
    """None when a SLURM controller answers and a node is usable; otherwise why not."""
    for tool in ("sbatch", "scontrol", "sinfo", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        ping = _run("scontrol", "ping", timeout=30)
        if "UP" not in ping.stdout:
            return f"slurmctld does not answer: {(ping.stdout + ping.stderr).strip()}"
        states = _run("sinfo", "-h", "-o", "%t", timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"SLURM commands fail: {exc}"
    if not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no usable node (sinfo states: {states})"
    return None


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    problem = _slurm_problem()
    if problem is None:
        return
    try:
        setup = _run("bash", str(REPO / ".ci" / "setup_slurm.sh"), timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"SLURM is not running ({problem}) and .ci/setup_slurm.sh could not run: {exc}")
    problem_after = _slurm_problem()
    if setup.returncode or problem_after:
        tail = "\n".join((setup.stdout + setup.stderr).strip().splitlines()[-15:])
        pytest.skip(f"SLURM is not running ({problem}) and .ci/setup_slurm.sh could not start it:\n{tail}")


def _job_records(job: str) -> list[dict[str, str]]:
    out = _run("scontrol", "-o", "show", "job", job).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


@dataclass
class Job:
    name: str
    run_dir: Path
    job_id: str
    signal_after_ckpt: bool
    stage: str = "start"
    records: list[dict[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.records[-1].get("JobState", "") if self.records else ""

    @property
    def restarts(self) -> int:
        return max((int(r.get("Restarts", "0")) for r in self.records), default=0)

    @property
    def finished(self) -> bool:
        return bool(self.records) and all(r.get("JobState") in TERMINAL for r in self.records)

    @property
    def log(self) -> str:
        logs = sorted(self.run_dir.glob("slurm-*.log"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def step(self) -> None:
        """Advance this job's scenario by one poll: signal, release after requeue, notice the end."""
        self.records = _job_records(self.job_id) or self.records
        if self.signal_after_ckpt and self.stage == "start" and (self.run_dir / "last.ckpt").exists():
            _run("scancel", "--signal=USR1", self.job_id)
            self.stage = "signalled"
            self.events.append(f"signalled at {time.strftime('%T')}")
        elif self.stage == "signalled" and self.restarts >= 1 and self.state == "PENDING":
            _run("scontrol", "update", f"JobId={self.job_id}", "StartTime=now")
            self.stage = "released"
            self.events.append(f"requeued, released at {time.strftime('%T')}")


@pytest.fixture(scope="module")
def slurm_runs(slurm_cluster, small_synth, tmp_path_factory) -> dict[str, Job]:
    base = tmp_path_factory.mktemp("slurm_runs")
    common = [
        f"paths.synth_root={small_synth}",
        "trainer.accelerator=cpu",
        "trainer.strategy=ddp",
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "data.batch_size=2",
        "data.num_workers=0",
        "eval.efficiency=false",
    ]
    done_seed1 = base / "ref" / RECIPE / "seed1"
    done_seed1.mkdir(parents=True)
    (done_seed1 / "result.json").write_text('{"kept": true}')

    def submit(name: str, seeds: list[int], extra: list[str]) -> slurm.Submission:
        subs = slurm.submit(
            [(RECIPE, s) for s in seeds],
            [*common, f"paths.runs_dir={base / name}", *extra],
            cli_resources=RESOURCES,
            workdir=REPO,
            job_name=f"vbtest-{name}",
        )
        assert len(subs) == 1 and subs[0].job_id, subs
        return subs[0]

    ref = submit("ref", [0, 1], [])
    assert ref.pending == (0,) and "#SBATCH --array=0\n" in ref.text
    jobs = {
        "ref": Job("ref", base / "ref" / RECIPE / "seed0", ref.job_id, signal_after_ckpt=False),
        "epoch": Job(
            "epoch",
            base / "epoch" / RECIPE / "seed0",
            submit("epoch", [0], ["slurm.requeue_at=epoch"]).job_id,
            True,
        ),
        "batch": Job("batch", base / "batch" / RECIPE / "seed0", submit("batch", [0], []).job_id, True),
    }
    start = time.monotonic()
    try:
        while True:
            for j in jobs.values():
                j.step()
            if all(j.finished for j in jobs.values()):
                break
            if time.monotonic() - start > DEADLINE_S:
                detail = "\n".join(
                    f"--- {j.name} (job {j.job_id}, {j.state}, {j.events}):\n{j.log[-3000:]}" for j in jobs.values()
                )
                pytest.fail(f"SLURM jobs not done within {DEADLINE_S}s\n{_run('squeue').stdout}\n{detail}")
            time.sleep(0.25)
    finally:
        for j in jobs.values():
            if not j.finished:
                _run("scancel", j.job_id)
    return jobs


def _metrics(record: dict) -> dict:
    """Every protocol's metrics (records also hold measured post-processing times, which differ per run)."""
    return {name: p["metrics"] for name, p in record["protocols"].items()}


def _result(job: Job) -> dict:
    path = job.run_dir / "result.json"
    assert path.is_file(), f"{job.name}: no result.json (state {job.state}, {job.events})\n{job.log[-4000:]}"
    return json.loads(path.read_text())


def _final_progress(job: Job) -> tuple[int, int]:
    ckpt = torch.load(job.run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"]


def _checkpoint_step(job: Job) -> tuple[int, int]:
    """(epoch, global step) where the signal's checkpoint was saved, and check the rerun resumed from it."""
    log = job.log
    saved = re.search(r"requeue signal: saved (\S+) at epoch (\d+), global step (\d+)", log)
    assert saved, f"{job.name}: no checkpoint on the signal ({job.events})\n{log[-4000:]}"
    assert Path(saved.group(1)) == job.run_dir / "hpc_ckpt_1.ckpt"
    resumed = re.search(r"resumed from (\S+) at epoch (\d+), global step (\d+)", log)
    assert resumed, f"{job.name}: the requeued run did not resume\n{log[-4000:]}"
    assert resumed.group(1) == saved.group(1) and resumed.group(3) == saved.group(3)
    return int(resumed.group(2)), int(resumed.group(3))


def test_ddp_array_job_writes_its_result_and_skips_a_finished_task(slurm_runs):
    ref = slurm_runs["ref"]
    assert ref.state == "COMPLETED" and ref.restarts == 0, (ref.state, ref.log[-4000:])
    record = _result(ref)
    assert record["recipe"] == RECIPE and record["seed"] == 0
    assert record["env"]["world_size"] == 2 and record["num_gallery"] == 16
    assert set(record["protocols"]["base"]["metrics"]) >= {"t2v_R1", "v2t_R1", "t2v_MdR"}
    assert re.search(r"^0: ", ref.log, re.M) and re.search(r"^1: ", ref.log, re.M)  # both ranks logged there
    assert _final_progress(ref) == (EPOCHS * STEPS_PER_EPOCH, EPOCHS)
    kept = ref.run_dir.parent / "seed1" / "result.json"
    assert json.loads(kept.read_text()) == {"kept": True}  # the finished task was left alone


def test_signal_at_epoch_end_requeues_and_matches_an_uninterrupted_run(slurm_runs):
    job, ref = slurm_runs["epoch"], slurm_runs["ref"]
    assert job.state == "COMPLETED" and job.restarts == 1, (job.state, job.restarts, job.events)
    epoch, step = _checkpoint_step(job)
    # Saved at an epoch end after the first (the signal came once epoch 1 was on disk), before the last.
    assert step % STEPS_PER_EPOCH == 0 and STEPS_PER_EPOCH < step < EPOCHS * STEPS_PER_EPOCH, step
    assert epoch == step // STEPS_PER_EPOCH  # resumed at the next epoch, not from zero
    assert _final_progress(job) == (EPOCHS * STEPS_PER_EPOCH, EPOCHS)  # no epoch repeated or lost
    assert _metrics(_result(job)) == _metrics(_result(ref))
    mine = torch.load(job.run_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    theirs = torch.load(ref.run_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_signal_mid_epoch_requeues_and_resumes_epoch_and_step(slurm_runs):
    job, ref = slurm_runs["batch"], slurm_runs["ref"]
    assert job.state == "COMPLETED" and job.restarts == 1, (job.state, job.restarts, job.events)
    epoch, step = _checkpoint_step(job)
    assert STEPS_PER_EPOCH < step < EPOCHS * STEPS_PER_EPOCH, step  # after epoch 1, not from zero
    assert epoch == step // STEPS_PER_EPOCH
    assert _final_progress(job) == (EPOCHS * STEPS_PER_EPOCH, EPOCHS)  # the schedule ran to its end
    record = _result(job)
    assert record["env"]["world_size"] == 2
    if step % STEPS_PER_EPOCH == 0:  # the signal happened to land on an epoch's last batch
        assert _metrics(record) == _metrics(_result(ref))
    assert not checkpointing.hpc_checkpoints(job.run_dir)  # superseded by the final last.ckpt, removed
