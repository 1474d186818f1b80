"""``data.dataset: custom``: CSV / JSONL, single- and multi-caption, clips with start/end, each through
verify-data, fit --test and aggregate; every bad-file case gets its message (file, line, fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY
from vidbench import cli
from vidbench.data.custom_example import write_custom_example
from vidbench.data.datasets import load_split
from vidbench.errors import AnnotationError

RECIPE = """\
defaults:
  - base/default
  - data/custom
  - method/clip4clip-meanp
  - trainer/tiny_cpu
"""

CASES = {
    # name: (writer options, data.custom overrides, expected caption policy, gallery items per video)
    "csv-multi": ({"fmt": "csv"}, {}, "multi", 1),
    "jsonl-single-paths": ({"fmt": "jsonl", "captions_per_video": 1, "paths": True}, {}, "single", 1),
    "csv-clips": ({"fmt": "csv", "clips": True}, {}, "multi", 2),
}


def test_custom_datasets_verify_fit_test_and_aggregate(small_synth, tmp_path, capsys):
    recipe = tmp_path / "recipes" / "clip4clip-meanp_tiny_custom.yaml"
    recipe.parent.mkdir()
    recipe.write_text(RECIPE)
    runs, out = tmp_path / "runs", tmp_path / "results"
    for name, (opts, _, policy, per_video) in CASES.items():
        ann = tmp_path / name
        files = write_custom_example(small_synth, ann, **opts)
        ext = files["train"].suffix
        if name == "csv-multi":  # a training video that is not there: skipped and counted, never a zero tensor
            files["train"].write_text(files["train"].read_text() + "ghost_video,a video nobody recorded\n")
        over = [
            *TINY,
            "trainer.cpu_threads=1",
            f"paths.synth_root={small_synth}",
            f"paths.runs_dir={runs}",
            f"data.root={ann}",
            f"data.custom.name=synth-{name}",
            f"data.custom.annotations='{{split}}{ext}'",
            f"run.name=custom-{name}",
            "eval.efficiency=false",  # cost columns are the plugin test's subject; here the data path is
        ]
        assert cli.main(["verify-data", str(recipe), *over]) == 0
        report = capsys.readouterr().out
        assert f"synth-{name} test" in report or "test" in report
        if name == "csv-multi":
            assert "ghost_video" in report
        assert cli.main(["fit", str(recipe), "--test", *over]) == 0
        record = json.loads((runs / f"custom-{name}" / "seed0" / "result.json").read_text())
        assert (record["dataset"], record["split"], record["caption_policy"]) == (f"synth-{name}", "test", policy)
        n_test_videos = len((small_synth / "msvd" / "test_list.txt").read_text().split())
        assert record["num_gallery"] == per_video * n_test_videos
        rows = len(files["test"].read_text().strip().splitlines()) - (ext != ".jsonl")
        assert record["num_queries"] == rows and record["data"]["text"]["test"]["captions"] == rows
        assert record["data"]["skipped_videos"] == 0
    assert cli.main(["aggregate", "--runs", str(runs), "--out", str(out)]) == 0
    board = (out / "leaderboard.md").read_text()
    for name in CASES:
        assert f"synth-{name} · test" in board


def _load(root: Path, split: str = "test", **options):
    return load_split("custom", root, split, video_root=root, options={"annotations": "{split}.csv", **options})


def _raises(path: Path, *fragments: str, split: str = "test", **options) -> None:
    with pytest.raises(AnnotationError) as err:
        _load(path.parent, split, **options)
    msg = str(err.value)
    assert str(path) in msg and "fix:" in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_each_bad_file_gets_a_message_naming_file_line_and_fix(tmp_path):
    f = tmp_path / "test.csv"
    f.write_text("video,text\nv1,a cat\n")
    _raises(f, "line 1", "lacks column(s) ['caption']")
    f.write_text("video,caption\nv1,a cat\nv2,   \n")
    _raises(f, "line 3", "empty caption for video 'v2'")
    f.write_text("video,caption\nv1,a cat\nv2,a dog\nv1,a cat\n")
    _raises(f, "line 4", "duplicate of line 2")
    f.write_bytes("video,caption\nv1,a caf\xe9 scene\n".encode("latin-1"))
    _raises(f, "line 2", "not UTF-8", "iconv")
    f.write_text("video,caption,start,end\nv1,a cat,4,2\n")
    _raises(f, "line 2", "end 2.0 is not after start 4.0")
    f.write_text("video,caption\nv1,a cat\nv2,a dog\n")
    (tmp_path / "train.csv").write_text("video,caption\nv3,a bird\nv2,a dog running\n")
    _raises(f, "line 3", "'v2' is listed in split 'test' and in split 'train'", "train.csv, line 3")
    jl = tmp_path / "test.jsonl"
    jl.write_text('{"video": "v1", "caption": "a cat"}\n{"video": "v2"}\n')
    _raises(jl, "line 2", "missing column(s) ['caption']", annotations="{split}.jsonl")
    jl.write_text('{"video": "v1", "caption": "a cat"}\n{"video": "v2", "caption": "a dog"\n')
    _raises(jl, "line 2", "not a JSON object", annotations="{split}.jsonl")
    one = tmp_path / "all.tsv"
    one.write_text("video\tcaption\tsplit\nv1\ta cat\ttrain\nv2\ta dog\ttest\nv1\ta cat sits\ttest\n")
    _raises(one, "line 4", "'v1' is listed in split 'train' (line 2) and in split 'test'", annotations="all.tsv")
    _raises(tmp_path / "val.csv", "annotation file of split 'val' not found", split="val")


def test_one_file_with_a_split_column_paragraphs_and_clips(tmp_path):
    one = tmp_path / "all.tsv"
    one.write_text(
        "video\tcaption\tstart\tend\tsplit\n"
        "long\tsomeone opens a door\t0\t5\ttest\n"
        "long\tthe door is red\t0\t5\ttest\n"
        "long\ta dog runs in\t5\t9.5\ttest\n"
        "other\ta cat\t\t\ttrain\n"
    )
    (tmp_path / "long.mp4").write_bytes(b"")
    multi = _load(tmp_path, annotations="all.tsv")
    assert [v.video_id for v in multi.videos] == ["long@0-5", "long@5-9.5"]
    assert [(v.start_s, v.end_s) for v in multi.videos] == [(0.0, 5.0), (5.0, 9.5)]
    assert all(v.path == tmp_path / "long.mp4" for v in multi.videos)
    assert multi.caption_video == [0, 0, 1] and multi.multi_caption
    para = _load(tmp_path, annotations="all.tsv", captions="paragraph")
    assert para.captions == ["someone opens a door the door is red", "a dog runs in"]
    assert not para.multi_caption and para.text_unit == "paragraph"
    train = _load(tmp_path, "train", annotations="all.tsv", name="mine")
    assert train.dataset == "mine" and [v.video_id for v in train.videos] == ["other"] and train.videos[0].path is None
