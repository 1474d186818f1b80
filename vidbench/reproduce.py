"""Run a suite (recipes x seeds) one run at a time, then aggregate: `make demo` and `make reproduce-<dataset>`.

Each run is its own `vidbench fit --test` process, so multi-GPU DDP launches cleanly and a crash in one run
does not take the others down. ``in_process=True`` (what `make demo` uses: CPU, one device) runs them in this
process instead, which saves the few seconds of importing torch, Lightning and transformers per run; a failing
run is still reported and the suite goes on. Runs that already have a result.json are skipped: re-running a
suite after an interruption finishes what is missing. Before anything starts, a preflight composes every recipe
and checks that the annotation files, the videos and the CLIP weights are where they should be, and stops
within seconds with what to put where if not, and that every folder a run will write (run directories, frame
caches) can be written: dataset folders are often read-only, and nothing is written there.
"""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from pathlib import Path

from vidbench.config import compose, run_dir
from vidbench.data.datasets import load_split
from vidbench.data.verify import search_hint, video_fix
from vidbench.errors import DataError, VidbenchError
from vidbench.io import ensure_writable
from vidbench.models.clip import ensure_local_weights
from vidbench.suites import Suite

HF_FOLDER = {
    "openai/clip-vit-base-patch32": "clip-vit-base-patch32",
    "openai/clip-vit-base-patch16": "clip-vit-base-patch16",
}


# OpenAI's own file for each hub model (what CLIP4Clip, DRL and EERCF load), used when the HF folder is absent.
OPENAI_FILE = {
    "openai/clip-vit-base-patch32": "ViT-B-32.pt",
    "openai/clip-vit-base-patch16": "ViT-B-16.pt",
}


def clip_override(recipe_clip: str, clip: str | None) -> list[str]:
    """``CLIP=tiny`` swaps in the tiny backbone; ``CLIP=<dir>`` maps each hub name to ``<dir>/<name>``, or to
    OpenAI's ``<dir>/ViT-B-32.pt`` / ``ViT-B-16.pt`` when only that file is there."""
    if not clip:
        return []
    if clip == "tiny":
        return ["model.clip=tiny", "model.tokenizer=tiny", "model.freeze_layer_num=-1"]
    folder = Path(clip) / HF_FOLDER.get(recipe_clip, Path(recipe_clip).name)
    openai = Path(clip) / OPENAI_FILE.get(recipe_clip, "")
    if not folder.exists() and recipe_clip in OPENAI_FILE and openai.is_file():
        return [f"model.clip={openai}"]
    return [f"model.clip={folder}"]


def _written_folders(cfg) -> list[tuple[Path, str]]:
    """Every folder a run writes, with the setting that moves it: the run directory and the frame cache."""
    folders = [(run_dir(cfg), "paths.runs_dir")]
    if cfg.data.cache:
        folders.append((Path(cfg.data.cache_dir), "data.cache_dir (or paths.cache_dir, or $VIDBENCH_CACHE)"))
    return folders


def mmt_preflight(cfg) -> tuple[str | None, str | None]:
    """For a recipe on the MMT features: ``(skip line, problem)``. A user without the features gets a skip
    line naming the folder to fill (not a failure of the suite); one with the features but without the BERT
    weights gets a problem, as missing CLIP weights do."""
    from vidbench.data.mmt import missing_release_message
    from vidbench.models.bert_text import ensure_local_bert

    missing = missing_release_message(cfg.data.root, cfg.data.dataset, cfg.data.mmt.cut)
    if missing is not None:
        return f"skipped {cfg.run.name}: {missing}", None
    try:
        ensure_local_bert(cfg.method.bert)
    except VidbenchError as exc:
        return None, f"{cfg.run.name}: {exc}"
    return None, None


def preflight(
    suite: Suite, overrides: list[str], clip: str | None, skipped: list[str] | None = None
) -> list[tuple[str, list[str]]]:
    """Compose every recipe and check data and weights; returns (recipe, overrides) per recipe to run.

    HCQ-MMT recipes whose feature release is absent are left out, with one line each in ``skipped``.
    """
    planned = []
    problems: list[str] = []
    checked_data: set[tuple[str, str, str]] = set()
    checked_dirs: set[Path] = set()
    for recipe in suite.recipes:
        base_cfg = compose(recipe, overrides)
        if base_cfg.data.mmt is not None:
            skip, problem = mmt_preflight(base_cfg)
            if skip is not None and skipped is not None:
                skipped.append(skip)
            elif skip is not None:
                problems.append(skip)
            if problem is not None:
                problems.append(problem)
            if skip is None and problem is None:
                planned.append((recipe, list(overrides)))
                try:
                    ensure_writable(run_dir(base_cfg), "paths.runs_dir")
                except VidbenchError as exc:
                    problems.append(str(exc))
            continue
        extra = [*overrides, *clip_override(base_cfg.model.clip, clip)]
        cfg = compose(recipe, extra)
        try:
            ensure_local_weights(cfg.model.clip)
        except VidbenchError as exc:
            problems.append(f"{recipe}: {exc}")
        d = cfg.data
        for split in (d.train_split, d.test_split):
            key = (d.dataset, str(d.root), split)
            if key in checked_data:
                continue
            checked_data.add(key)
            try:
                index = load_split(d.dataset, d.root, split, video_root=d.video_root, options=d.get("custom"))
            except VidbenchError as exc:
                problems.append(f"{d.dataset}/{split}: {exc}")
                continue
            found = sum(v.path is not None for v in index.videos)
            if found == 0:
                problems.append(
                    f"{d.dataset}/{split}: none of the {len(index.videos)} videos was found: {search_hint(index)}; "
                    f"fix: {video_fix(index)}"
                )
        for folder, setting in _written_folders(cfg):
            if folder in checked_dirs:
                continue
            checked_dirs.add(folder)
            try:
                ensure_writable(folder, setting)
            except VidbenchError as exc:
                problems.append(str(exc))
        planned.append((recipe, extra))
    if problems:
        unique = list(dict.fromkeys(problems))
        raise DataError(
            "cannot start the suite:\n  - "
            + "\n  - ".join(unique[:12])
            + ("\n  ..." if len(unique) > 12 else "")
            + "\n  Put each dataset under DATA_ROOT/<dataset>/ as the README's 'Data layout' section shows, and "
            "the CLIP weights in the local HF cache or under CLIP=<dir>/clip-vit-base-patch32 (and -patch16).\n"
            "  To see the whole pipeline without data or weights, run `make demo`."
        )
    return planned


def run_suite(
    suite: Suite,
    *,
    overrides: list[str],
    seeds: list[int] | None = None,
    clip: str | None = None,
    runs_dir: str = "runs",
    in_process: bool = False,
) -> list[tuple[str, int, str]]:
    """Fit and test every (recipe, seed); returns (recipe, seed, status) rows."""
    overrides = [f"paths.runs_dir={runs_dir}", *overrides]
    skipped: list[str] = []
    planned = preflight(suite, overrides, clip, skipped)
    for line in skipped:
        print(line, flush=True)
    if not planned:
        raise DataError("nothing to run: " + "; ".join(skipped))
    chosen_seeds = seeds if seeds else list(suite.seeds)
    total = len(planned) * len(chosen_seeds)
    rows = []
    k = 0
    for recipe, extra in planned:
        for seed in chosen_seeds:
            k += 1
            args = [*extra, f"run.seed={seed}"]
            done = run_dir(compose(recipe, args)) / "result.json"
            if done.exists():
                print(f"[{k}/{total}] {recipe} seed {seed}: result exists, skipped ({done})", flush=True)
                rows.append((recipe, seed, "skipped"))
                continue
            print(f"[{k}/{total}] {recipe} seed {seed}: fit + test ...", flush=True)
            start = time.perf_counter()
            if in_process:
                status = _run_here(recipe, args)
            else:
                proc = subprocess.run([sys.executable, "-m", "vidbench.cli", "fit", "--test", recipe, *args])
                status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
            print(f"[{k}/{total}] {recipe} seed {seed}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
            rows.append((recipe, seed, status))
    extras = dict(planned)
    for recipe in suite.zero_shot:
        if recipe not in extras:
            continue  # its data was missing: preflight said so above
        for seed in chosen_seeds:
            rows.append(_zero_shot_run(recipe, [*extras[recipe], f"run.seed={seed}"], seed, in_process))
    return rows


def _zero_shot_run(recipe: str, args: list[str], seed: int, in_process: bool) -> tuple[str, int, str]:
    """``test --zero-shot`` of one recipe and seed (its own run directory, ``<recipe>+zero-shot``)."""
    from vidbench.runner import zero_shot_run_name

    name = zero_shot_run_name(recipe)
    done = run_dir(compose(recipe, [*args, f"run.name={name}"])) / "result.json"
    if done.exists():
        print(f"{name} seed {seed}: result exists, skipped ({done})", flush=True)
        return name, seed, "skipped"
    print(f"{name} seed {seed}: test --zero-shot ...", flush=True)
    if in_process:
        from vidbench import runner
        from vidbench.results.summary import format_result

        try:
            print(format_result(runner.test(compose(recipe, args), ckpt=None)), flush=True)
            status = "ok"
        except Exception as exc:  # one broken run must not stop the suite
            traceback.print_exc()
            status = f"failed ({type(exc).__name__}: {exc})"
    else:
        proc = subprocess.run([sys.executable, "-m", "vidbench.cli", "test", "--zero-shot", recipe, *args])
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return name, seed, status


def _run_here(recipe: str, args: list[str]) -> str:
    """Fit and test one run in this process; any error becomes a 'failed' status with its traceback printed."""
    from vidbench import runner
    from vidbench.results.summary import format_result

    try:
        cfg = compose(recipe, args)
        runner.fit(cfg)
        print(format_result(runner.test(cfg)), flush=True)
    except Exception as exc:  # one broken run must not stop the suite; the traceback says why
        traceback.print_exc()
        return f"failed ({type(exc).__name__}: {exc})"
    return "ok"
