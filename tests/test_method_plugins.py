"""Method plugins: the example package under tests/plugin_example found by entry point and by dotted path,
trained, tested and aggregated into a leaderboard row with cost columns; the errors of broken plugins."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import TINY
from vidbench import cli
from vidbench.config import compose
from vidbench.errors import ConfigError
from vidbench.methods import registry

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_example"
RECIPE = PLUGIN_DIR / "maxpool-clip_tiny_8f_b64_synth-msrvtt.yaml"
DOTTED = "vidbench_maxpool.method:MaxPoolClip"


def _dist_info(site: Path, name: str, entry_points: str) -> None:
    """What `pip install` leaves behind for entry points: a dist-info folder with entry_points.txt."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def isolated_registry(monkeypatch):
    """A fresh view of the registry, sys.path and the plugin's modules; restored after the test."""
    registry.load_builtins()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [m for m in sys.modules if m.startswith(("vidbench_maxpool", "broken_plugin", "half_plugin"))]:
        monkeypatch.delitem(sys.modules, name)
    yield


@pytest.fixture
def installed_plugin(tmp_path, isolated_registry):
    """The example package as an installed one: its folder and a dist-info with the entry point on sys.path."""
    site = tmp_path / "site"
    _dist_info(
        site,
        "vidbench-maxpool-example",
        """
        [vidbench.methods]
        maxpool-clip = vidbench_maxpool.method:MaxPoolClip
        """,
    )
    sys.path[:0] = [str(site), str(PLUGIN_DIR)]
    return site


def _run_args(small_synth: Path, runs: Path) -> list[str]:
    return [
        *TINY,
        "trainer.cpu_threads=1",
        f"paths.synth_root={small_synth}",
        f"paths.runs_dir={runs}",
    ]


def test_example_plugin_trains_tests_and_gets_a_leaderboard_row(installed_plugin, small_synth, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "results"
    # by entry point (installed), with the recipe outside recipes/
    assert cli.main(["fit", str(RECIPE), "--test", *_run_args(small_synth, runs)]) == 0
    # by dotted path: the package is not importable from sys.path, only from the recipe's folder
    sys.path.remove(str(PLUGIN_DIR))
    for name in [m for m in sys.modules if m.startswith("vidbench_maxpool")]:
        del sys.modules[name]
    args = [*_run_args(small_synth, runs), f"method.name={DOTTED}", "run.name=maxpool-clip-dotted"]
    assert cli.main(["fit", str(RECIPE), "--test", *args]) == 0
    assert registry.method_entry(DOTTED).import_root == PLUGIN_DIR
    assert cli.main(["aggregate", "--runs", str(runs), "--out", str(out)]) == 0

    for run in ("maxpool-clip_tiny_8f_b64_synth-msrvtt", "maxpool-clip-dotted"):
        record = json.loads((runs / run / "seed0" / "result.json").read_text())
        assert record["method"] == "maxpool-clip" and record["method_label"] == "MaxPool-CLIP (example plugin)"
        assert record["protocols"]["base"]["description"].startswith("MaxPool-CLIP's protocol")
        eff = record["efficiency"]
        n, d = record["num_gallery"], 64  # tiny CLIP's projection width
        assert eff["match_flops_per_query"] == pytest.approx(2 * n * d)
        assert eff["params_total"] > 0 and eff["index_bytes_per_video"] == 64 * 4
    rows = [r for r in csv.DictReader((out / "results.csv").open()) if r["method"] == "maxpool-clip"]
    assert {r["recipe"] for r in rows} == {"maxpool-clip_tiny_8f_b64_synth-msrvtt", "maxpool-clip-dotted"}
    board = (out / "leaderboard.md").read_text()
    table = board[board.index("protocol `base`") :]
    accuracy = next(line for line in table.splitlines() if line.startswith("| MaxPool-CLIP (example plugin)"))
    assert all(cell.strip() not in ("", "—") for cell in accuracy.split("|")[5:9])  # t2v R@1 .. MdR filled
    cost = table[table.index("Cost:") :]
    cost_row = next(line for line in cost.splitlines() if line.startswith("| MaxPool-CLIP (example plugin)"))
    assert sum(cell.strip() not in ("", "—") for cell in cost_row.split("|")[1:-1]) >= 6
    assert "MaxPool-CLIP's protocol: the text's CLIP vector against each video's element-wise maximum" in board


def test_plugin_schema_is_validated_with_the_recipe_line(installed_plugin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(RECIPE.read_text().replace("  init_temperature: 0.05", "  init_temperature: 0.05\n  temprature: 1"))
    with pytest.raises(ConfigError, match=rf"{bad}:10: invalid key 'method\.temprature'"):
        compose(bad)
    cfg = compose(RECIPE, ["method.init_temperature=0.1"])
    assert cfg.method.init_temperature == 0.1 and cfg.method.min_temperature == 0.01


def _write_module(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_broken_plugins_get_one_clear_error_and_never_break_list_or_builtins(tmp_path, isolated_registry, capsys):
    code = tmp_path / "code"
    _write_module(code, "broken_plugin", "raise RuntimeError('missing CUDA extension')\n")
    _write_module(
        code,
        "half_plugin",
        """
        from vidbench.methods.base import ClipMethod

        class NoScore(ClipMethod):
            method_name = "half"
            variant = method_label = "half"

            def encode_text(self, input_ids, attention_mask):
                return {}

            def encode_video(self, video, video_mask):
                return {}
        """,
    )
    _write_module(code, "not_a_method", "class Thing:\n    pass\n")
    _write_module(code, "needs_dep", "import a_package_nobody_installed\n")
    _dist_info(
        tmp_path / "site",
        "broken-plugin",
        """
        [vidbench.methods]
        broken = broken_plugin:Method
        half = half_plugin:NoScore
        """,
    )
    sys.path[:0] = [str(tmp_path / "site"), str(code)]

    expected = {
        "broken": r"entry point 'broken = broken_plugin:Method'.*failed to import: RuntimeError: missing CUDA ext",
        "half": r"entry point 'half = half_plugin:NoScore'.*does not implement match_flops_per_query, score.*"
        r"no class attribute config_schema",
        "not_a_method:Thing": r"dotted path 'not_a_method:Thing'.*subclass vidbench.methods.base.RetrievalMethod",
        "not_a_method:Missing": r"dotted path 'not_a_method:Missing'.*has no attribute 'Missing'",
        "nowhere.mod:Cls": r"dotted path 'nowhere\.mod:Cls'.*module 'nowhere\.mod' not found",
        "needs_dep:Cls": r"dotted path 'needs_dep:Cls' failed to import: ModuleNotFoundError.*a_package_nobody",
    }
    for name, message in expected.items():
        with pytest.raises(registry.MethodPluginError, match=message):
            registry.method_entry(name)
    with pytest.raises(ConfigError, match=r"method.name 'nope' is unknown; choose one of \[.*'broken'.*'clip4clip'"):
        registry.method_entry("nope")

    # listing works and reports each plugin's state; the built-ins still compose
    assert cli.main(["list", "--methods"]) == 0
    listed = capsys.readouterr().out
    assert "clip4clip" in listed and "hcq_mmt" in listed
    assert "broken" in listed and "missing CUDA extension" in listed and "does not implement" in listed
    assert cli.main(["list"]) == 0
    assert "clip4clip/clip4clip-meanp_tiny_8f_b64_synth-msrvtt" in capsys.readouterr().out
    assert compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt").method.name == "clip4clip"


def test_builtins_register_through_the_registry_without_a_name_list():
    import vidbench.config as config
    import vidbench.methods as methods

    source = Path(methods.__file__).read_text()
    assert not any(f'"{name}"' in source for name in ("clip4clip", "drl", "eercf", "hcq", "hcq_mmt"))
    assert not hasattr(config, "METHOD_SCHEMAS") and not hasattr(config, "Clip4ClipMethod")
    names = {name: source for name, source, problem in registry.available_methods() if problem is None}
    assert {"clip4clip", "drl", "eercf", "hcq", "hcq_mmt"} <= set(names)
    for name in ("clip4clip", "drl", "eercf", "hcq", "hcq_mmt"):
        entry = registry.method_entry(name)
        assert entry.source.startswith("built-in vidbench.methods.") and entry.import_root is None
        assert not registry.contract_problems(entry.cls)
        assert entry.schema.__name__ in {"Clip4ClipMethod", "DRLMethod", "EercfMethod", "HcqMethod", "HcqMmtMethod"}


def test_submit_gives_a_dotted_path_plugin_its_folder_and_the_recipe_path(tmp_path, isolated_registry):
    """The sbatch script of a plugin that is not installed exports the folder it was imported from; under a
    stand-in srun, the task's Python (started in another folder) finds the plugin's package."""
    import os
    import subprocess

    from vidbench import slurm

    over = [f"method.name={DOTTED}", f"paths.runs_dir={tmp_path / 'runs'}", "trainer.accelerator=cpu"]
    relative = os.path.relpath(RECIPE)  # as a user types it; the script gets the absolute path
    (sub,) = slurm.submit([(relative, 0)], over, dry_run=True, workdir=tmp_path)
    assert f"export PYTHONPATH={PLUGIN_DIR}" + '"${PYTHONPATH:+:${PYTHONPATH}}"' in sub.text
    assert sub.tasks[0].recipe == str(RECIPE)  # absolute: the job may run in another folder (--chdir)
    builtin = slurm.submit([("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", 0)], over[1:], dry_run=True, workdir=tmp_path)
    assert "PYTHONPATH" not in builtin[0].text

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # the stand-in drops srun's flags and runs, in the task's environment, a probe for the plugin's package
    probe = "import importlib.util as u; print('FOUND', u.find_spec('vidbench_maxpool').origin)"
    (bin_dir / "srun").write_text(f'#!/bin/bash\nexec {sys.executable} -c "{probe}"\n')
    (bin_dir / "srun").chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(sub.text)
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "1", "PYTHONPATH": repo}
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, cwd=tmp_path).returncode
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"FOUND {PLUGIN_DIR / 'vidbench_maxpool' / '__init__.py'}" in out.stdout


def test_help_is_a_sentence_for_people(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "vidbench trains and evaluates text-to-video retrieval methods" in text
    assert "``" not in text and ":mod:" not in text and "thin layer" not in text


def test_a_suite_outside_recipes_lists_recipe_files_beside_it(tmp_path):
    from vidbench.suites import load_suite

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.yaml").write_text(RECIPE.read_text())
    suite = tmp_path / "suite.yaml"
    suite.write_text("recipes:\n  - mine/a.yaml\n  - clip4clip-meanp_tiny_8f_b64_synth-msrvtt\nseeds: [0, 1]\n")
    loaded = load_suite(str(suite))
    assert loaded.recipes == (str(tmp_path / "mine" / "a.yaml"), "clip4clip-meanp_tiny_8f_b64_synth-msrvtt")
    assert loaded.runs()[:2] == [(str(tmp_path / "mine" / "a.yaml"), 0), (str(tmp_path / "mine" / "a.yaml"), 1)]


def test_readme_shows_the_whole_example():
    readme = (PLUGIN_DIR.parent.parent / "README.md").read_text()
    for part in (PLUGIN_DIR / "vidbench_maxpool" / "method.py", RECIPE):
        assert part.read_text().rstrip() in readme, f"README 'Add a method' no longer shows {part.name} as it is"
    assert 'maxpool-clip = "vidbench_maxpool.method:MaxPoolClip"' in (PLUGIN_DIR / "pyproject.toml").read_text()
