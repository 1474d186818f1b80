"""Two compute hosts for real: `vidbench submit --nodes 2` and `torchrun --nnodes 2` across network namespaces.

``.ci/slurm_two_nodes.sh`` starts a SLURM cluster of two hosts on this machine (each a network namespace with
its own address, hostname and slurmd; one slurmctld; shared munge) beside any single-node SLURM; the module
fixture starts it and always takes it down. On it, the tiny recipe (2 ranks x 1 CPU process, gloo, global
batch 2) runs as:

- ``one_node``: 1 node x 2 tasks, uninterrupted (the reference);
- ``two_nodes``: 2 nodes x 1 task: final weights and metrics equal the reference bit for bit;
- ``preempted``: 2 nodes, ``scancel --signal=USR1`` once epoch 1 is on disk (``requeue_at=epoch``):
  requeued, resumed, equal to the reference;
- ``torchrun``: ``torchrun --nnodes 2`` of ``vidbench fit``, one launcher in each namespace: equal weights;
- ``node_failure`` (alone, afterwards): every process of host 2 (its slurmd and the task) is killed mid-run;
  the job ends with vidbench's message in the run log; once the host is back a resubmission resumes from
  the last checkpoint and ends equal to the reference; every checkpoint on disk loads.

Needs root (namespaces, daemons); Debian's SLURM packages are installed by the script when missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".ci" / "slurm_two_nodes.sh"
RECIPE = "clip4clip-meanp_tiny_8f_b64_synth-msrvtt"
STEPS, EPOCHS = 10, 3
DEADLINE_S = 420
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
COMMON = [
    "trainer.strategy=ddp",
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.cpu_threads=1",
    "data.batch_size=2",  # global: 1 sample per rank per step
    "data.num_workers=0",
    "eval.efficiency=false",
]


def _run(*cmd: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def cluster():
    """The two-host cluster's environment (SLURM_CONF set); taken down afterwards, on failure too."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        pytest.skip("the two-host SLURM harness needs root and iproute2/util-linux (ip, nsenter)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_CONF="/tmp/vidbench-2nodes/slurm.conf", PYTHONPATH=str(REPO))
    try:
        up = _run("bash", str(SCRIPT), "up", timeout=900, env=env)
        assert up.returncode == 0, f"two-host SLURM did not start:\n{up.stdout}\n{up.stderr}"
        yield env
    finally:
        _run("bash", str(SCRIPT), "down", timeout=120, env=env)


@dataclass
class Job:
    name: str
    run_dir: Path
    job_id: str
    signal: bool = False
    stage: str = "start"
    events: list[str] = field(default_factory=list)
    record: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.record.get("JobState", "")

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.run_dir.glob("slurm-*.log")))


def _submit(env: dict, base: Path, name: str, nodes: int, tasks: int, extra: list[str]) -> Job:
    cmd = [
        *(sys.executable, "-m", "vidbench.cli", "submit", RECIPE),
        *("--nodes", str(nodes), "--ntasks-per-node", str(tasks), "--cpus-per-task", "1", "--time", "15"),
        *("--job-name", f"vb2n-{name}", "--chdir", str(REPO)),
        *COMMON,
        f"paths.synth_root={base / 'synth'}",
        f"paths.runs_dir={base / name}",
        *extra,
    ]
    proc = _run(*cmd, env=env, timeout=120)
    m = re.search(r"submitted job (\d+)", proc.stdout)
    assert proc.returncode == 0 and m, f"vidbench submit failed:\n{proc.stdout}\n{proc.stderr}"
    return Job(name, base / name / RECIPE / "seed0", m.group(1))


def _poll(env: dict, job: Job) -> None:
    out = _run("scontrol", "-o", "show", "job", job.job_id, env=env).stdout
    if out.strip():
        job.record = dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0]))


def _drive(env: dict, jobs: list[Job], launchers: list[subprocess.Popen] = ()) -> None:
    """Poll until every job is terminal: signal the preempted one, release it after its requeue."""
    start = time.monotonic()
    try:
        while not (all(j.finished for j in jobs) and all(p.poll() is not None for p in launchers)):
            for j in jobs:
                _poll(env, j)
                if j.signal and j.stage == "start" and (j.run_dir / "last.ckpt").exists():
                    _run("scancel", "--signal=USR1", j.job_id, env=env)
                    j.stage = "signalled"
                    j.events.append("signalled")
                elif j.stage == "signalled" and int(j.record.get("Restarts", 0)) >= 1 and j.state == "PENDING":
                    _run("scontrol", "update", f"JobId={j.job_id}", "StartTime=now", env=env)
                    j.stage = "released"
                    j.events.append("requeued, released")
            if time.monotonic() - start > DEADLINE_S:
                detail = "\n".join(f"--- {j.name} {j.state} {j.events}\n{j.log[-3000:]}" for j in jobs)
                pytest.fail(f"jobs not done within {DEADLINE_S}s\n{_run('squeue', env=env).stdout}\n{detail}")
            time.sleep(0.5)
    finally:
        for j in jobs:
            if not j.finished:
                _run("scancel", j.job_id, env=env)
        for p in launchers:
            if p.poll() is None:
                p.kill()


def _in_host(k: int, cmd: str) -> list[str]:
    """Run ``cmd`` as host ``k`` would: its network namespace, hostname and /etc/hosts."""
    inner = f"mount --bind /etc/netns/vbn{k}/hosts /etc/hosts && hostname vbnode{k} && exec {cmd}"
    return ["nsenter", f"--net=/run/netns/vbn{k}", "unshare", "--mount", "--uts", "sh", "-c", inner]


def _torchrun(env: dict, base: Path, k: int) -> subprocess.Popen:
    args = [
        *(str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1"),
        *(f"--node-rank={k - 1}", "--master-addr=10.231.45.11", "--master-port=29731"),
        *("-m", "vidbench.cli", "fit", RECIPE, *COMMON, "trainer.num_nodes=2", "trainer.devices=1"),
        *(f"paths.synth_root={base / 'synth'}", f"paths.runs_dir={base / 'torchrun'}"),
    ]
    log = open(base / f"torchrun-{k}.log", "w")  # noqa: SIM115 (closed with the process)
    # OMP_NUM_THREADS as the SLURM jobs get it (--cpus-per-task=1): it changes the last bits of the weights
    env = {**env, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(_in_host(k, " ".join(args)), env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> tuple[dict, dict[str, Job], Path]:
    from vidbench.data.synthetic import generate

    base = tmp_path_factory.mktemp("two_nodes")
    generate(base / "synth", seed=0, n_train=48, n_test=16, n_msvd_train=12, n_msvd_test=8, progress=False)
    env = cluster
    jobs = {
        "one_node": _submit(env, base, "one_node", 1, 2, []),
        "two_nodes": _submit(env, base, "two_nodes", 2, 1, []),
        "preempted": _submit(env, base, "preempted", 2, 1, ["slurm.requeue_at=epoch"]),
    }
    jobs["preempted"].signal = True
    launchers = [_torchrun(env, base, 1), _torchrun(env, base, 2)]
    _drive(env, list(jobs.values()), launchers)
    jobs["torchrun"] = Job("torchrun", base / "torchrun" / RECIPE / "seed0", "-")
    jobs["torchrun"].record = {"rc": ",".join(str(p.returncode) for p in launchers)}
    return env, jobs, base


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _result(job: Job) -> dict:
    path = job.run_dir / "result.json"
    assert path.is_file(), f"{job.name}: no result.json ({job.state}, {job.events})\n{job.log[-4000:]}"
    return json.loads(path.read_text())


def _metrics(record: dict) -> dict:
    """Every protocol's metrics (the records also hold measured times, which differ from run to run)."""
    return {name: p["metrics"] for name, p in record["protocols"].items()}


def test_two_nodes_equal_one_node(runs):
    _, jobs, _ = runs
    one, two = jobs["one_node"], jobs["two_nodes"]
    assert one.state == two.state == "COMPLETED", (one.state, two.state, two.log[-3000:])
    assert two.record["NumNodes"] == "2" and two.record["NodeList"] == "vbnode[1-2]", two.record
    assert one.record["NumNodes"] == "1"
    r1, r2 = _result(one), _result(two)
    assert (r1["env"]["world_size"], r1["env"]["num_nodes"]) == (2, 1)
    assert (r2["env"]["world_size"], r2["env"]["num_nodes"]) == (2, 2)
    assert _metrics(r2) == _metrics(r1)
    assert _same_weights(one.run_dir, two.run_dir)
    ckpt = torch.load(two.run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == EPOCHS * STEPS


def test_two_node_preemption_requeues_and_matches(runs):
    _, jobs, _ = runs
    job, ref = jobs["preempted"], jobs["one_node"]
    assert job.state == "COMPLETED" and job.events == ["signalled", "requeued, released"], (job.state, job.events)
    assert int(job.record["Restarts"]) == 1
    saved = re.search(r"requeue signal: saved (\S+) at epoch (\d+), global step (\d+)", job.log)
    resumed = re.search(r"resumed from (\S+) at epoch (\d+), global step (\d+)", job.log)
    assert saved and resumed, job.log[-4000:]
    assert resumed.group(3) == saved.group(3) and 0 < int(saved.group(3)) < EPOCHS * STEPS
    assert _metrics(_result(job)) == _metrics(_result(ref))
    assert _same_weights(job.run_dir, ref.run_dir)


def test_torchrun_two_namespaces_matches(runs):
    _, jobs, base = runs
    job, ref = jobs["torchrun"], jobs["one_node"]
    logs = "".join((base / f"torchrun-{k}.log").read_text(errors="replace") for k in (1, 2))
    assert job.record["rc"] == "0,0", logs[-4000:]
    assert "fit done" in logs
    assert re.search(r"GLOBAL_RANK: 1, MEMBER: 2/2", logs), logs[-3000:]
    assert _same_weights(job.run_dir, ref.run_dir)


def test_node_failure_is_reported_and_a_resubmission_resumes(runs):
    env, jobs, base = runs
    ref = jobs["one_node"]
    job = _submit(env, base, "node_failure", 2, 1, [])
    start = time.monotonic()
    killed = False
    while time.monotonic() - start < DEADLINE_S:
        _poll(env, job)
        if not killed and (job.run_dir / "last.ckpt").exists():
            time.sleep(1.0)  # into epoch 1
            pids = _run("ip", "netns", "pids", "vbn2").stdout.split()
            assert pids, "nothing runs on host 2"
            _run("kill", "-9", *pids)  # host 2 dies: its slurmd, slurmstepd and the rank-1 task
            killed = True
        if killed and (job.finished or (job.state == "PENDING" and int(job.record.get("Restarts", 0)) >= 1)):
            break
        time.sleep(0.5)
    assert killed and (job.finished or job.state == "PENDING"), (job.state, job.log[-4000:])
    if not job.finished:  # SLURM requeued it on the node failure: the operator cancels, then resubmits
        _run("scancel", job.job_id, env=env)
    assert job.state != "COMPLETED"
    log = job.log
    said = r"stopped on rank 0 of 2 \(host vbnode1\) at epoch \d+, global step \d+: a peer rank was lost"
    assert re.search(said, log), log[-4000:]
    assert f"resumes from {job.run_dir / 'last.ckpt'}" in log
    # host 2 comes back; the same submission resumes from the last checkpoint
    back = _run("bash", str(SCRIPT), "up", timeout=300, env=env)
    assert back.returncode == 0, back.stdout + back.stderr
    again = _submit(env, base, "node_failure", 2, 1, [])
    _drive(env, [again])
    assert again.state == "COMPLETED", (again.state, again.log[-4000:])
    resumed = re.search(r"resumed from (\S+) at epoch (\d+), global step (\d+)", again.log)
    assert resumed and Path(resumed.group(1)).name == "last.ckpt" and int(resumed.group(3)) >= STEPS, again.log[-3000:]
    for ckpt in job.run_dir.glob("*.ckpt"):  # nothing written is corrupt
        torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not [p for p in job.run_dir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert _metrics(_result(again)) == _metrics(_result(ref))
    assert _same_weights(again.run_dir, ref.run_dir)


def test_stopped_message_names_a_lost_peer_and_the_resume_point(tmp_path):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from vidbench.runner import stopped_message

    cfg = OmegaConf.create({"run": {"name": "r", "seed": 3}})
    trainer = SimpleNamespace(world_size=2, global_rank=0, current_epoch=1, global_step=13)
    exc = RuntimeError("[gloo/transport/tcp/pair.cc:598] Connection closed by peer [10.231.45.12]:4242")
    said = stopped_message(cfg, tmp_path, trainer, exc)
    assert "stopped on rank 0 of 2" in said and "epoch 1, global step 13" in said
    assert "a peer rank was lost" in said and "starts over (no checkpoint was written yet)" in said
    (tmp_path / "last.ckpt").write_bytes(b"x")
    said = stopped_message(cfg, tmp_path, SimpleNamespace(**{**vars(trainer), "world_size": 1}), ValueError("bad"))
    assert "a peer rank" not in said and "an error: ValueError: bad" in said
    assert f"resumes from {tmp_path / 'last.ckpt'}" in said
