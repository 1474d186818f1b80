"""The data path as a cluster user meets it (issue 13): a read-only data root, overrides anywhere on the line,
the verify-data report and exit codes, caption truncation counts, and "not found" messages that say where.

The read-only root is really read-only: a read-only bind mount (as root, which ignores permission bits), or
the same inside ``unshare --mount --map-root-user`` for a normal user.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.dataset_fixtures import write_clip
from vidbench.cli import build_parser, main, parse_args, split_overrides
from vidbench.config import compose, run_dir
from vidbench.data.text import HashTokenizer, tokenize_counted, truncation_counts
from vidbench.errors import DataError, NotWritableError
from vidbench.results.schema import result_problems

RECIPE = "clip4clip-meanp_vitb32_64f_b128_5e_activitynet"
REPO = Path(__file__).resolve().parent.parent

# ActivityNet Captions layout with long paragraphs. Word counts are HashTokenizer token counts (one per word).
TRAIN = {"v_LONGLONGLON": (2.0, 40), "v_EXACTEXACTE": (2.0, 14), "v_ONEOVERONEO": (2.0, 15)}
VAL = {"v_VALLONGVALL": (2.0, 20), "v_VALSHORTVAL": (2.0, 3)}
MAX_WORDS = 16  # 14 content tokens + SOT + EOT
EXPECTED_TEXT = {
    "train": {
        "captions": 3,
        "captions_truncated": 2,  # 40 and 15 words; 14 fits exactly
        "tokens_dropped": 26 + 1,
        "tokens": 40 + 14 + 15,
        "longest_tokens": 40,
        "max_words": MAX_WORDS,
        "ids_without_captions": 1,  # v_NOCAPTIONSX is listed in train_ids.json, absent from train.json
    },
    "val_1": {
        "captions": 2,
        "captions_truncated": 1,
        "tokens_dropped": 6,
        "tokens": 23,
        "longest_tokens": 20,
        "max_words": MAX_WORDS,
        "ids_without_captions": 0,
    },
}


def _paragraph(words: int) -> list[str]:
    """Sentences of at most five words, ``words`` words in all (the adapter joins them with spaces)."""
    ws = ["dog"] * words
    return [" " + " ".join(ws[i : i + 5]) + " " for i in range(0, words, 5)]


def write_long_activitynet(folder: Path, *, videos: bool = True) -> Path:
    """An ActivityNet Captions folder whose paragraphs are longer than max_words; every video present."""

    def ann(d: dict[str, tuple[float, int]]) -> dict:
        return {v: {"duration": dur, "timestamps": [], "sentences": _paragraph(n)} for v, (dur, n) in d.items()}

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_text(json.dumps(ann(TRAIN)))
    (folder / "val_1.json").write_text(json.dumps(ann(VAL)))
    (folder / "train_ids.json").write_text(json.dumps([*TRAIN, "v_NOCAPTIONSX"]))
    (folder / "val_ids.json").write_text(json.dumps(list(VAL)))
    if videos:
        for i, vid in enumerate([*TRAIN, *VAL]):
            write_clip(folder / "videos" / f"{vid}.mp4", seed=900 + i, seconds=2.0)
    return folder


def _overrides(data_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        f"data.max_words={MAX_WORDS}",
        "eval.efficiency=false",
        f"paths.data_root={data_root}",
        f"paths.runs_dir={out / 'runs'}",
        f"paths.cache_dir={out / 'cache'}",
        *extra,
    ]


# -- key=value overrides anywhere -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (
            ["verify-data", "R", "--split", "test", "paths.data_root=/x"],
            {"split": "test", "overrides": ["paths.data_root=/x"]},
        ),
        (["test", "R", "--zero-shot", "a.b=1"], {"zero_shot": True, "overrides": ["a.b=1"]}),
        (["fit", "R", "a=1", "--test", "b.c=2"], {"test": True, "overrides": ["a=1", "b.c=2"]}),
        (["-v", "fit", "x=1", "R"], {"recipe": "R", "overrides": ["x=1"], "verbose": True}),
        (["verify-data", "R", "--out", "o=p", "k=v"], {"out": "o=p", "overrides": ["k=v"]}),
        (["test", "R", "--ckpt", "a=b.ckpt", "k=v"], {"ckpt": "a=b.ckpt", "overrides": ["k=v"]}),
        (["reproduce", "demo", "--seeds", "0", "1", "optim.lr=2"], {"seeds": [0, 1], "overrides": ["optim.lr=2"]}),
        (["run-task", "R", "--", "x=1"], {"recipe": "R", "overrides": ["x=1"]}),
        (["submit", "--dry-run", "R", "--seeds", "1", "optim.lr=3"], {"items": ["R", "optim.lr=3"], "seeds": "1"}),
    ],
)
def test_overrides_are_accepted_anywhere(argv: list[str], expect: dict) -> None:
    args = parse_args(argv)
    for key, value in expect.items():
        assert getattr(args, key) == value, (argv, key)


def test_override_on_a_command_without_overrides_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["aggregate", "--runs", "r", "x=1"])
    assert exc.value.code == 2 and "takes no key=value overrides" in capsys.readouterr().err
    rest, over = split_overrides(build_parser(), ["synth", "--out", "a=b"])
    assert rest == ["synth", "--out", "a=b"] and over == []


# -- truncation counts ----------------------------------------------------------------------------------


def test_truncation_counts_match_a_brute_force_count() -> None:
    tok = HashTokenizer()
    texts = ["a b c", "one two three four five six seven", "", "x " * 30, "hello, world!"]
    for max_words in (2, 3, 5, 9, 40):
        ids, mask, counts = tokenize_counted(tok, texts, max_words)
        lengths = [len(tok.encode(t)) for t in texts]
        keep = max_words - 2
        assert counts["captions_truncated"] == len([n for n in lengths if n > keep])
        assert counts["tokens_dropped"] == sum(n - keep for n in lengths if n > keep)
        assert counts["longest_tokens"] == max(lengths) and counts["tokens"] == sum(lengths)
        # what the cut left is exactly what the ids hold: kept tokens + SOT + EOT per row
        assert int(mask.sum()) == sum(min(n, keep) + 2 for n in lengths)
    assert truncation_counts([], 8)["longest_tokens"] == 0


# -- read-only data root --------------------------------------------------------------------------------


class ReadOnlyRoot:
    """A folder exposed read-only at ``path``, and a way to run the CLI that sees it read-only."""

    def __init__(self, src: Path, path: Path, mode: str) -> None:
        self.src, self.path, self.mode = src, path, mode

    def cli(self, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
        """Exit status and console output (stdout + stderr) of ``vidbench ARGV``."""
        if self.mode == "root":
            capsys.readouterr()
            saved, level = logging.root.handlers[:], logging.root.level
            logging.root.handlers.clear()  # main() logs to this test's captured stderr, as a console would show
            try:
                rc = main(argv)
            finally:
                logging.root.handlers[:] = saved
                logging.root.setLevel(level)
            out = capsys.readouterr()
            return rc, out.out + out.err
        script = (
            f"mount --bind {self.src} {self.path} && mount -o remount,bind,ro {self.path} && "
            f'exec {sys.executable} -m vidbench.cli "$@"'
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr


def _mount_readonly(src: Path, dst: Path) -> None:
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True, capture_output=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(["umount", str(dst)], check=False)
        raise


@pytest.fixture(scope="module")
def readonly_root(tmp_path_factory):
    """<mount>/activitynet/ with long paragraphs, read-only for the code under test."""
    src = tmp_path_factory.mktemp("an_src")
    write_long_activitynet(src / "activitynet")
    dst = tmp_path_factory.mktemp("an_readonly")
    if os.geteuid() == 0 and not os.environ.get("VIDBENCH_TEST_USERNS"):  # set it to test the non-root path
        try:
            _mount_readonly(src, dst)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.fail(f"running as root but `mount --bind` failed: {exc}")
        try:
            with pytest.raises(OSError) as err:  # prove it: even root cannot write there
                (dst / "activitynet" / "probe").write_text("x")
            assert err.value.errno == 30  # EROFS
            yield ReadOnlyRoot(src, dst, "root")
        finally:
            subprocess.run(["umount", str(dst)], check=False)
        return
    if shutil.which("unshare") is None:
        pytest.skip("not root and no `unshare`: cannot make a read-only bind mount")
    probe = subprocess.run(
        ["unshare", "--mount", "--map-root-user", "sh", "-c",
         f"mount --bind {src} {dst} && mount -o remount,bind,ro {dst} && touch {dst}/activitynet/probe"],
        capture_output=True, text=True,
    )  # fmt: skip
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"unprivileged read-only bind mount unavailable here: {probe.stderr.strip()[:200]}")
    yield ReadOnlyRoot(src, dst, "userns")


def test_readonly_data_root_verify_fit_test_complete(readonly_root: ReadOnlyRoot, tmp_path: Path, capsys) -> None:
    """verify-data, fit and test on a read-only root run to completion, writing only under the cache and runs
    folders; the truncation counts appear in the manifest, on the console and in result.json. (~20 s on two
    shared cores: three CLI runs, one of them fit + test.)"""
    ro = readonly_root.path
    args = _overrides(ro, tmp_path)

    rc, out = readonly_root.cli(["verify-data", RECIPE, "--split", "both", *args], capsys)
    assert rc == 0, out
    assert "activitynet train: 3 videos annotated, 3 present, 0 missing, 0 undecodable; 3 captions" in out
    assert "activitynet val_1: 2 videos annotated, 2 present, 0 missing, 0 undecodable; 2 captions" in out
    assert f"searched {ro}/activitynet recursively for v_<id>.<ext> or <id>.<ext>" in out
    assert "text: 3 captions, 2 (66.7%) truncated at max_words=16, 27 tokens dropped (39.1% of 69 tokens)" in out
    assert "longest 40 tokens; 1 listed ids without captions left out" in out
    assert "verify-data: every checked split is complete" in out
    manifests = sorted((tmp_path / "cache" / "manifests").glob("activitynet-*/activitynet_*.json"))
    assert [m.name for m in manifests] == ["activitynet_train.json", "activitynet_val_1.json"]
    for m in manifests:
        split = m.stem.removeprefix("activitynet_")
        assert json.loads(m.read_text())["text"] == EXPECTED_TEXT[split]

    # a flag between the recipe and the overrides, as users type it
    rc, out = readonly_root.cli(["fit", RECIPE, "--test", *args], capsys)
    assert rc == 0, out
    assert out.count("activitynet/train text: 3 captions, 2 (66.7%) truncated") == 1
    cfg = compose(RECIPE, args)
    record = json.loads((run_dir(cfg) / "result.json").read_text())
    assert record["data"]["text"] == EXPECTED_TEXT
    assert result_problems(record) == []
    frames = list((tmp_path / "cache" / "frames").glob("*/meta.json"))
    assert len(frames) == 2  # one frame cache per split, outside the data root

    rc, out = readonly_root.cli(["test", RECIPE, *args], capsys)  # test alone: train counts kept from fit
    assert rc == 0, out
    assert json.loads((run_dir(cfg) / "result.json").read_text())["data"]["text"] == EXPECTED_TEXT
    assert sorted(p.name for p in (readonly_root.src / "activitynet").iterdir()) == [
        "train.json", "train_ids.json", "val_1.json", "val_ids.json", "videos"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "where"),
    [("data.cache_dir", "cache"), ("paths.cache_dir", "manifests"), ("--out", "out"), ("paths.runs_dir", "runs")],
)
def test_readonly_location_gets_one_line_naming_the_setting(
    readonly_root: ReadOnlyRoot, tmp_path: Path, capsys, setting: str, where: str
) -> None:
    ro = readonly_root.path
    inside = ro / "activitynet" / "vidbench_out"
    args = _overrides(ro, tmp_path)
    if where == "out":
        argv = ["verify-data", RECIPE, *args, "--out", str(inside)]
    elif where == "manifests":
        argv = ["verify-data", RECIPE, *args, f"paths.cache_dir={inside}"]
    else:
        argv = ["fit", RECIPE, *args, f"{setting}={inside}"]
    rc, out = readonly_root.cli(argv, capsys)
    assert rc == 2
    lines = [line for line in out.splitlines() if line.startswith("vidbench: error:")]
    # one line, no exception dump (lightning's own log handler may hold a closed capture stream: not ours)
    assert len(lines) == 1 and "[Errno 30]" not in out and "NotWritableError" not in out, out
    folder = {"manifests": f"{inside}/manifests/activitynet-", "runs": f"{inside}/{RECIPE}/seed0 "}.get(
        where, f"{inside} "
    )
    assert f"cannot write to {folder}" in lines[0] and f"(Read-only file system); set {setting}" in lines[0]


# -- verify-data report and exit codes ------------------------------------------------------------------


def test_verify_data_reports_both_splits_and_exits_by_test_completeness(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    an = write_long_activitynet(root / "activitynet")
    args = _overrides(root, tmp_path)

    (an / "videos" / "v_ONEOVERONEO.mp4").unlink()  # a training video missing: skipped by fit, exit 0
    assert main(["verify-data", RECIPE, *args]) == 0
    out = capsys.readouterr().out
    assert "  missing: v_ONEOVERONEO" in out
    assert "e.g. id 'v_ONEOVERONEO' matches v_ONEOVERONEO.<ext> or v_ONEOVERONEO or ONEOVERONEO.<ext>" in out
    assert f"  fix: put the video files anywhere under {root}/activitynet with the names above" in out
    assert "training videos missing or undecodable: train 1" in out
    assert main(["verify-data", RECIPE, *args, "--strict"]) == 1
    capsys.readouterr()

    (an / "videos" / "v_VALSHORTVAL.mp4").unlink()  # a test video missing: exit 1
    (an / "train.json").unlink()  # and the training annotations gone: exit 2, the test split still reported
    assert main(["verify-data", RECIPE, "--split", "both", *args]) == 2
    out = capsys.readouterr().out
    assert "activitynet train: cannot read the annotations:" in out and "train.json" in out
    assert "activitynet val_1: 2 videos annotated, 1 present, 1 missing, 0 undecodable" in out
    assert "test split val_1 incomplete: 1 videos missing or undecodable (exit 1" in out
    assert main(["verify-data", RECIPE, "--split", "test", *args]) == 1
    m = json.loads(next((tmp_path / "cache" / "manifests").glob("*/activitynet_val_1.json")).read_text())
    assert m["search"]["video_root"] == str(root / "activitynet") and m["summary"]["missing"] == 1


# -- "nothing found" messages: folder, pattern, fix -----------------------------------------------------


def test_fit_with_no_videos_names_folder_pattern_and_fix_and_writes_no_cache(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_long_activitynet(root / "activitynet", videos=False)
    empty = tmp_path / "empty_videos"
    empty.mkdir()
    cfg = compose(RECIPE, _overrides(root, tmp_path, f"data.video_root={empty}"))
    from vidbench import runner

    with pytest.raises(DataError) as err:
        runner.fit(cfg)
    msg = str(err.value)
    assert "none of the 3 videos of activitynet/train was found" in msg
    assert f"searched {empty} recursively for v_<id>.<ext> or <id>.<ext>" in msg
    assert f"fix: put the video files anywhere under {empty}" in msg and "data.video_root=" in msg
    assert not (tmp_path / "cache" / "frames").exists() or not any((tmp_path / "cache" / "frames").iterdir())


def test_missing_test_video_error_names_folder_pattern_and_fix(tmp_path: Path) -> None:
    root = tmp_path / "data"
    an = write_long_activitynet(root / "activitynet")
    (an / "videos" / "v_VALLONGVALL.mp4").unlink()
    cfg = compose(RECIPE, _overrides(root, tmp_path))
    from vidbench import runner

    with pytest.raises(DataError) as err:
        runner.test(cfg, ckpt=None)
    msg = str(err.value)
    assert "1 of 2 videos of activitynet/val_1 are missing" in msg and "v_VALLONGVALL" in msg
    assert f"searched {an} recursively for v_<id>.<ext>" in msg
    assert f"fix: put the video files anywhere under {an}" in msg and "missing_policy_test=skip" in msg


def test_reproduce_preflight_names_folder_pattern_fix_and_unwritable_folders(tmp_path: Path) -> None:
    from vidbench.reproduce import preflight
    from vidbench.suites import Suite

    root = tmp_path / "data"
    write_long_activitynet(root / "activitynet", videos=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    suite = Suite(name="t", recipes=(RECIPE,), seeds=(0,))
    with pytest.raises(DataError) as err:
        preflight(suite, _overrides(root, tmp_path, f"data.cache_dir={blocker}/frames"), "tiny")
    msg = str(err.value)
    assert "activitynet/train: none of the 3 videos was found" in msg
    assert f"searched {root}/activitynet recursively for v_<id>.<ext>" in msg and "fix: put the video files" in msg
    assert f"cannot write to {blocker}/frames" in msg and "set data.cache_dir" in msg


def test_cache_root_defaults_to_env_then_home_and_stays_out_of_the_hash(monkeypatch, tmp_path: Path) -> None:
    from vidbench.config import config_hash

    monkeypatch.setenv("VIDBENCH_CACHE", str(tmp_path / "shared"))
    cfg = compose(RECIPE, TINY)
    assert cfg.paths.cache_dir == str(tmp_path / "shared") and cfg.data.cache_dir == f"{tmp_path}/shared/frames"
    monkeypatch.delenv("VIDBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = compose(RECIPE, TINY)
    assert home.paths.cache_dir == f"{tmp_path}/home/.cache/vidbench"
    assert home.data.cache_dir == f"{tmp_path}/home/.cache/vidbench/frames"
    explicit = compose(RECIPE, [*TINY, "data.cache_dir=~/team/frames"])  # a shared cache, pointed at explicitly
    assert explicit.data.cache_dir == f"{tmp_path}/home/team/frames"
    assert config_hash(cfg) == config_hash(home) == config_hash(explicit)  # where caches live is not the experiment


def test_not_writable_error_is_one_line() -> None:
    err = NotWritableError("/ro/x", "data.cache_dir", "Read-only file system")
    assert str(err) == "cannot write to /ro/x (Read-only file system); set data.cache_dir to a writable folder"
