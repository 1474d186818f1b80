"""SLURM: sbatch scripts from a template, submission, and preemption-safe requeue.

``vidbench submit`` turns (recipe, seed) pairs into sbatch scripts: one array job over all pairs that share
resources (or one job per pair), each task running ``srun python -m vidbench.cli run-task RECIPE run.seed=K``
in the repository's environment. Re-submitting is safe: pairs whose run directory already holds a
``result.json`` are left out of the array, and a task that finds one at run time exits at once.

Preemption and time limits: ``#SBATCH --signal=USR1@<lead>`` asks SLURM to send SIGUSR1 shortly before the
time limit (and ``scancel --signal=USR1`` does the same by hand). What happens then (record the signal,
checkpoint and requeue where every rank is in step, resume from the newest checkpoint) lives in
:mod:`vidbench.checkpointing`, beneath both this module and the runner; this module imports the runner to
run a task, never the reverse.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vidbench.config import compose, config_hash, run_dir
from vidbench.errors import ConfigError, VidbenchError

log = logging.getLogger(__name__)

RESULT = "result.json"


# -- submission -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """The sbatch directives of one job; from a recipe's ``slurm`` section, then the command line."""

    job_name: str = "vidbench"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "24:00:00"
    nodes: int = 1
    gpus_per_node: int = 0
    ntasks_per_node: int | None = None
    cpus_per_task: int = 8
    mem: str | None = None
    signal_lead_s: int = 90
    max_parallel: int | None = None
    extra: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()

    @property
    def tasks_per_node(self) -> int:
        return self.ntasks_per_node or self.gpus_per_node or 1

    @classmethod
    def from_config(cls, slurm: DictConfig | dict, **overrides: Any) -> Resources:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(slurm).items() if k in names}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["extra"] = tuple(values.get("extra") or ())
        values["setup"] = tuple(values.get("setup") or ())
        res = cls(**values)
        res.validate()
        return res

    def validate(self) -> None:
        def bad(key: str, value: Any, fix: str) -> ConfigError:
            return ConfigError(f"slurm.{key} = {value!r}: {fix}")

        if not re.fullmatch(r"\d+|\d+:\d{1,2}(:\d{1,2})?|\d+-\d{1,2}(:\d{1,2}){0,2}", str(self.time)):
            raise bad("time", self.time, "use minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS (sbatch --time)")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?", str(self.mem)):
            raise bad("mem", self.mem, "use a size like 64G or 16000M (sbatch --mem, per node)")
        for key in ("nodes", "cpus_per_task"):
            if int(getattr(self, key)) < 1:
                raise bad(key, getattr(self, key), "must be at least 1")
        if self.gpus_per_node < 0:
            raise bad("gpus_per_node", self.gpus_per_node, "must be 0 (CPU) or more")
        if self.ntasks_per_node is not None and self.ntasks_per_node < 1:
            raise bad("ntasks_per_node", self.ntasks_per_node, "must be at least 1")
        if self.signal_lead_s < 1:
            raise bad("signal_lead_s", self.signal_lead_s, "must be at least 1 second")
        for line in self.extra:
            if not str(line).startswith("-") or "\n" in str(line):
                raise bad("extra", line, "each entry is one sbatch option, e.g. --constraint=a100")
        for name in (self.job_name, self.partition, self.account, self.qos):
            if name is not None and not re.fullmatch(r"[\w.+:@,-]+", str(name)):
                raise bad("job_name/partition/account/qos", name, "use letters, digits and -_.")

    def directives(self) -> list[str]:
        d = [
            f"--nodes={self.nodes}",
            f"--ntasks-per-node={self.tasks_per_node}",
        ]
        if self.gpus_per_node:
            d.append(f"--gres=gpu:{self.gpus_per_node}")
        d.append(f"--cpus-per-task={self.cpus_per_task}")
        if self.mem:
            d.append(f"--mem={self.mem}")
        d.append(f"--time={self.time}")
        for key in ("partition", "account", "qos"):
            if getattr(self, key):
                d.append(f"--{key}={getattr(self, key)}")
        d += [f"--signal=USR1@{self.signal_lead_s}", "--requeue", "--open-mode=append"]
        d += list(self.extra)
        return d


@dataclass(frozen=True)
class Task:
    """One array task: a recipe at one seed, and the run directory it writes."""

    recipe: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...] = ()
    # Folders a plugin method was imported from (not installed, e.g. ``method.name: pkg.mod:Cls`` found
    # beside its recipe): the job's PYTHONPATH gets them, so the task and its requeues import the same code.
    python_path: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return (self.run_dir / RESULT).is_file()


def array_spec(indices: list[int], max_parallel: int | None = None) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (``%N`` appended to run at most N tasks at once)."""
    if not indices:
        raise ValueError("an array needs at least one task")
    parts, ordered = [], sorted(set(indices))
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    spec = ",".join(parts)
    return f"{spec}%{max_parallel}" if max_parallel else spec


_TEMPLATE = """#!/bin/bash
# {{title}}
# Written by `vidbench submit`. Safe to re-submit: a run with result.json is skipped, an interrupted run
# resumes from its run directory (SIGUSR1 {{lead}} s before the time limit: checkpoint, then requeue).
#SBATCH --job-name={{job_name}}
{{directives}}
set -euo pipefail

# array task id -> recipe, seed, run directory
RECIPES=(
{{recipes}})
SEEDS=({{seeds}})
RUN_DIRS=(
{{run_dirs}})
TASK="${SLURM_ARRAY_TASK_ID:-0}"
RECIPE="${RECIPES[$TASK]}"
SEED="${SEEDS[$TASK]}"
RUN_DIR="${RUN_DIRS[$TASK]}"

echo "vidbench: job ${SLURM_JOB_ID} task ${TASK} restart ${SLURM_RESTART_COUNT:-0}: ${RECIPE} seed ${SEED}"
if [ -f "${RUN_DIR}/result.json" ]; then
    echo "vidbench: ${RUN_DIR}/result.json exists; nothing to do"
    exit 0
fi
mkdir -p "${RUN_DIR}"
cd {{workdir}}
{{setup}}{{pythonpath}}export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"

# One process per task: Lightning's SLURMEnvironment takes the ranks from SLURM. The log goes to the run directory.
srun --unbuffered --kill-on-bad-exit=1 --label --open-mode=append --output="${RUN_DIR}/slurm-%j.log" \\
    {{python}} -m vidbench.cli run-task "${RECIPE}" "run.seed=${SEED}"{{overrides}}
"""


def _title(batch: list[Task]) -> str:
    recipes = list(dict.fromkeys(Path(t.recipe).stem for t in batch))
    seeds = sorted({t.seed for t in batch})
    what = recipes[0] if len(recipes) == 1 else f"{len(recipes)} recipes"
    return f"vidbench: {len(batch)} run(s), {what}, seed(s) {','.join(map(str, seeds))}"


def render_script(
    tasks: list[Task],
    res: Resources,
    *,
    python: str,
    workdir: Path,
    log_dir: Path,
    pending: list[int] | None = None,
    title: str | None = None,
) -> str:
    """The sbatch script for ``tasks`` (an array when there are several, or when ``pending`` is given)."""
    if not tasks:
        raise ValueError("no tasks to render")
    if any(c.isspace() for c in str(log_dir)):
        raise ConfigError(f"log folder '{log_dir}' holds whitespace, which #SBATCH lines cannot carry; pick another")
    shared = tasks[0].overrides
    if any(t.overrides != shared for t in tasks):
        raise ValueError("every task of one script must share its overrides")
    is_array = len(tasks) > 1 or pending is not None
    directives = []
    if is_array:
        indices = list(range(len(tasks))) if pending is None else pending
        directives.append(f"--array={array_spec(indices, res.max_parallel)}")
        directives.append(f"--output={log_dir / '%x-%A_%a.out'}")
    else:
        directives.append(f"--output={log_dir / '%x-%j.out'}")
    directives += res.directives()
    values = {
        "title": title or _title(tasks),
        "lead": str(res.signal_lead_s),
        "job_name": res.job_name,
        "directives": "\n".join(f"#SBATCH {d}" for d in directives),
        "recipes": "".join(f"    {shlex.quote(t.recipe)}  # {i}\n" for i, t in enumerate(tasks)),
        "seeds": " ".join(str(int(t.seed)) for t in tasks),
        "run_dirs": "".join(f"    {shlex.quote(str(t.run_dir))}  # {i}\n" for i, t in enumerate(tasks)),
        "workdir": shlex.quote(str(workdir)),
        "setup": "".join(f"{line}\n" for line in res.setup),
        "python": shlex.quote(python),
        "overrides": "".join(f" {shlex.quote(o)}" for o in shared),
        "pythonpath": _pythonpath_line(tasks),
    }

    def fill(m: re.Match) -> str:
        return values[m.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", fill, _TEMPLATE)


def _pythonpath_line(tasks: list[Task]) -> str:
    """``export PYTHONPATH=...`` for plugin methods that are not installed (empty when none is needed)."""
    folders = list(dict.fromkeys(p for t in tasks for p in t.python_path))
    if not folders:
        return ""
    return f"export PYTHONPATH={shlex.quote(':'.join(folders))}" + '"${PYTHONPATH:+:${PYTHONPATH}}"\n'


def _job_overrides(cfg: DictConfig, res: Resources, user: list[str], said: set[str]) -> tuple[str, ...]:
    """The user's overrides plus the world size SLURM will give (Lightning checks they agree)."""
    devices = cfg.trainer.devices
    tasks = res.tasks_per_node
    if str(devices) not in ("auto", "-1", str(tasks)) and cfg.run.name not in said:
        said.add(cfg.run.name)
        log.warning(
            "%s: trainer.devices=%s becomes %d to match --ntasks-per-node (one process per device)",
            cfg.run.name,
            devices,
            tasks,
        )
    keep = [o for o in user if not o.startswith(("trainer.devices=", "trainer.num_nodes="))]
    return (*keep, f"trainer.num_nodes={res.nodes}", f"trainer.devices={tasks}")


def plan(
    runs: list[tuple[str, int]],
    overrides: list[str],
    cli_resources: dict[str, Any],
    *,
    workdir: Path,
    clip: str | None = None,
) -> list[tuple[Resources, list[Task]]]:
    """Compose every (recipe, seed); group the tasks by the resources and overrides their recipes need.

    ``clip`` is `make reproduce`'s CLIP: ``tiny``, or a folder holding the hub checkpoints by name.
    """
    groups: dict[tuple, tuple[Resources, list[Task]]] = {}
    said: set[str] = set()
    for recipe, seed in runs:
        mine = list(overrides)
        if clip:
            from vidbench.reproduce import clip_override

            mine += clip_override(compose(recipe, overrides).model.clip, clip)
        cfg = compose(recipe, [*mine, f"run.seed={seed}"])
        res = Resources.from_config(cfg.slurm, **cli_resources)
        out = run_dir(cfg)
        out = out if out.is_absolute() else workdir / out
        from vidbench.methods.registry import method_entry  # loaded by compose already

        root = method_entry(cfg.method.name).import_root
        where = str(Path(recipe).resolve()) if Path(recipe).suffix in {".yaml", ".yml"} else recipe  # any --chdir
        task = Task(where, int(seed), out, _job_overrides(cfg, res, mine, said), (str(root),) if root else ())
        key = (res, task.overrides)
        if key not in groups:
            groups[key] = (res, [])
        groups[key][1].append(task)
    return list(groups.values())


@dataclass(frozen=True)
class Submission:
    script: Path
    text: str
    tasks: tuple[Task, ...]
    pending: tuple[int, ...]
    job_id: str | None  # None on a dry run or when every task is done


def sbatch(script: Path) -> str:
    """Submit ``script``; returns the job id."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise VidbenchError(
            "sbatch not found: run `vidbench submit` on a SLURM login node (Debian: apt-get install slurm-client), "
            "or pass --dry-run to print the script"
        )
    proc = subprocess.run([exe, "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise VidbenchError(f"sbatch {script} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit(
    runs: list[tuple[str, int]],
    overrides: list[str] | None = None,
    *,
    cli_resources: dict[str, Any] | None = None,
    array: bool = True,
    dry_run: bool = False,
    script_dir: Path | None = None,
    workdir: Path | None = None,
    job_name: str | None = None,
    python: str | None = None,
    clip: str | None = None,
) -> list[Submission]:
    """Write and submit sbatch scripts for ``runs``; runs that already have a result are left out.

    One array job per group of runs asking for the same resources (``array=False``: one job per run).
    Scripts go to ``script_dir`` (default ``<runs_dir>/slurm``) as ``<job name>.sbatch``.
    """
    workdir = Path(workdir or Path.cwd()).resolve()
    python = python or sys.executable
    overrides = list(overrides or [])
    if any(o.startswith("run.seed=") for o in overrides):
        raise ConfigError("override run.seed=... is set per run: pass the seeds with --seeds (e.g. --seeds 0,1,2)")
    groups = plan(runs, overrides, cli_resources or {}, workdir=workdir, clip=clip)
    out: list[Submission] = []
    for g, (res, tasks) in enumerate(groups):
        suffix = f"-{g}" if len(groups) > 1 else ""
        for batch in [tasks] if array else [[t] for t in tasks]:
            first = batch[0]
            if len(batch) > 1 or (job_name and len(runs) == 1):
                name = (job_name or f"vidbench-{Path(first.recipe).stem}") + suffix
            else:
                name = f"{job_name or 'vidbench'}-{Path(first.recipe).stem}-s{first.seed}"
            folder = Path(script_dir) if script_dir else first.run_dir.parent.parent / "slurm"
            folder = folder if folder.is_absolute() else workdir / folder
            pending = [i for i, t in enumerate(batch) if not t.done]
            partial = len(batch) > 1 and 0 < len(pending) < len(batch)
            text = render_script(
                batch,
                replace(res, job_name=name[:100]),
                python=python,
                workdir=workdir,
                log_dir=folder,
                pending=pending if partial else None,
            )
            script = folder / f"{name[:100]}.sbatch"
            job = None
            if pending and not dry_run:
                folder.mkdir(parents=True, exist_ok=True)
                script.write_text(text)
                job = sbatch(script)
            out.append(Submission(script, text, tuple(batch), tuple(pending), job))
    return out


# -- running one task -----------------------------------------------------------------------------------


def run_task(cfg: DictConfig) -> Path:
    """Fit then test one (recipe, seed), unless its run directory already has a result (then: nothing)."""
    from vidbench import runner
    from vidbench.checkpointing import install_requeue_handler, under_slurm

    if under_slurm():
        install_requeue_handler()
    out = run_dir(cfg)
    result = out / RESULT
    if result.is_file():
        import json

        try:
            old = json.loads(result.read_text()).get("config_hash")
        except (OSError, ValueError):
            old = None
        if old is not None and old != config_hash(cfg):
            log.warning("%s was written with a different config; delete it to run again", result)
        log.info("%s exists: skipping %s seed %s", result, cfg.run.name, cfg.run.seed)
        return out
    runner.fit(cfg)
    runner.test(cfg)
    return out


# -- command line ---------------------------------------------------------------------------------------

_RESOURCE_FLAGS = {
    "partition": str,
    "account": str,
    "qos": str,
    "time": str,
    "nodes": int,
    "gpus_per_node": int,
    "ntasks_per_node": int,
    "cpus_per_task": int,
    "mem": str,
    "signal_lead_s": int,
    "max_parallel": int,
}


def add_submit_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "submit",
        help="write sbatch scripts for recipes x seeds (or a suite) and submit them",
        description="Resources come from each recipe's `slurm` section, then these flags. Give the recipes and "
        "the key=value overrides together, before or after the options.",
    )
    p.add_argument("items", nargs="*", help="recipe names, and dotlist overrides (key=value) for every run")
    p.add_argument("--data-root", help="folder holding <dataset>/ folders (sets paths.data_root)")
    p.add_argument("--clip", help="'tiny', or a folder holding clip-vit-base-patch32/ and clip-vit-base-patch16/")
    p.add_argument("--suite", help="a suite under recipes/suites (e.g. msrvtt): its recipes and seeds")
    p.add_argument("--seeds", help="seeds, e.g. 0,1,2 (default: the suite's, or 0)")
    p.add_argument("--no-array", dest="array", action="store_false", help="one job per run instead of an array")
    for key, kind in _RESOURCE_FLAGS.items():
        flag = key.replace("_", "-")
        p.add_argument(f"--{flag}", dest=key, type=kind, metavar=key.upper(), help=f"sets slurm.{key}")
    p.add_argument("--extra", action="append", default=None, help="another #SBATCH option (repeatable)")
    p.add_argument("--setup", action="append", default=None, help="a shell line run before srun (repeatable)")
    p.add_argument("--requeue-at", choices=["batch", "epoch"], help="slurm.requeue_at (passed to the runs)")
    p.add_argument("--job-name", help="job name (default: vidbench-<suite or recipe>)")
    p.add_argument("--script-dir", type=Path, help="where scripts and array logs go (default: <runs_dir>/slurm)")
    p.add_argument("--chdir", type=Path, help="working directory of the jobs (default: the current one)")
    p.add_argument("--dry-run", action="store_true", help="print the scripts; write and submit nothing")
    p.set_defaults(func=cmd_submit)
    return p


def add_run_task_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run-task", help="(used by submitted jobs) fit + test one run unless it has a result")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_run_task)
    return p


def _runs_from_args(args: argparse.Namespace) -> tuple[list[tuple[str, int]], list[str]]:
    from vidbench.suites import load_suite

    recipes = [i for i in args.items if "=" not in i]
    overrides = [i for i in args.items if "=" in i]
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in re.split(r"[,\s]+", args.seeds.strip()) if s]
        except ValueError as exc:
            raise ConfigError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from exc
    runs: list[tuple[str, int]] = []
    if args.suite:
        runs += load_suite(args.suite).runs(seeds)
    runs += [(r, s) for r in recipes for s in (seeds or [0])]
    if not runs:
        raise ConfigError("nothing to submit: name recipes or --suite NAME (see `vidbench list`)")
    return runs, overrides


def cmd_submit(args: argparse.Namespace) -> int:
    runs, overrides = _runs_from_args(args)
    if args.data_root:
        overrides.insert(0, f"paths.data_root={Path(args.data_root).resolve()}")
    if args.requeue_at:
        overrides.append(f"slurm.requeue_at={args.requeue_at}")
    cli = {k: getattr(args, k) for k in _RESOURCE_FLAGS}
    if args.extra:
        cli["extra"] = args.extra
    if args.setup:
        cli["setup"] = args.setup
    name = args.job_name or (f"vidbench-{args.suite}" if args.suite else None)
    subs = submit(
        runs,
        overrides,
        cli_resources=cli,
        array=args.array,
        dry_run=args.dry_run,
        script_dir=args.script_dir,
        workdir=args.chdir,
        job_name=name,
        clip=args.clip,
    )
    for s in subs:
        done = len(s.tasks) - len(s.pending)
        note = f" ({done} of {len(s.tasks)} already have result.json)" if done else ""
        if args.dry_run:
            print(f"# dry run: would write {s.script} and run `sbatch {s.script}`{note}")
            print(s.text)
        elif s.job_id is None:
            print(f"nothing to submit for {s.script.name}: all {len(s.tasks)} run(s) have result.json")
        else:
            print(f"submitted job {s.job_id}: {len(s.pending)} run(s){note}, script {s.script}")
    return 0


def cmd_run_task(args: argparse.Namespace) -> int:
    from vidbench.checkpointing import install_requeue_handler, under_slurm

    if under_slurm():
        install_requeue_handler()  # as early as possible: SIGUSR1's default action would kill us
    cfg = compose(args.recipe, args.overrides)
    out = run_task(cfg)
    print(f"run-task done: {out}")
    return 0
