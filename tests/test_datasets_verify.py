"""The data verification manifest (vidbench/data/verify.py) on real, empty, truncated and fake videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dataset_fixtures import write_clip
from vidbench.data.datasets import load_split
from vidbench.data.verify import format_manifest_summary, verify_split

IDS = ["good_1_3", "-zero_0_2", "trunc_5_9", "text_0_1", "gone_2_4", "good2_mkv"]


@pytest.fixture(scope="module")
def msvd_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MSVD-format folder whose test videos are fine, empty, truncated, not a video, or absent."""
    root = tmp_path_factory.mktemp("verify")
    (root / "test_list.txt").write_text("\n".join(IDS) + "\n")
    (root / "captions_msvd.json").write_text(json.dumps({i: [f"caption of {i}"] for i in IDS}))
    clips = root / "clips"
    write_clip(clips / "good_1_3.mp4", seed=1, seconds=2.0)
    write_clip(clips / "nested" / "good2_mkv.mkv", seed=2, seconds=1.5)
    (clips / "-zero_0_2.mp4").write_bytes(b"")
    full = write_clip(clips / "trunc_full.tmp", seed=3, seconds=3.0).read_bytes()
    (clips / "trunc_full.tmp").unlink()
    (clips / "trunc_5_9.mp4").write_bytes(full[: len(full) // 2])
    (clips / "text_0_1.mp4").write_text("this is not a video\n")
    return root


def test_manifest_statuses_counts_and_file(msvd_like: Path, tmp_path: Path) -> None:
    index = load_split("msvd", msvd_like, "test")
    out = tmp_path / "out" / "manifest.json"
    manifest = verify_split(index, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(manifest))
    status = {r["video_id"]: r["status"] for r in manifest["videos"]}
    assert status == {
        "good_1_3": "present",
        "-zero_0_2": "undecodable",
        "trunc_5_9": "undecodable",
        "text_0_1": "undecodable",
        "gone_2_4": "missing",
        "good2_mkv": "present",
    }
    assert manifest["summary"] == {"annotated": 6, "present": 2, "missing": 1, "undecodable": 3}
    rows = {r["video_id"]: r for r in manifest["videos"]}
    assert rows["good_1_3"]["num_frames"] == 8 and rows["good_1_3"]["duration_s"] == pytest.approx(
        2.0, abs=0.3
    )
    assert rows["good2_mkv"]["num_frames"] == 6 and rows["good2_mkv"]["error"] is None
    assert rows["gone_2_4"]["path"] is None and rows["gone_2_4"]["duration_s"] is None
    assert "empty" in rows["-zero_0_2"]["error"]
    assert all(rows[i]["error"] for i in ("trunc_5_9", "text_0_1"))
    assert [r["video_id"] for r in manifest["videos"]] == IDS  # split order kept
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_manifest_overwrites_and_single_thread_agrees(msvd_like: Path, tmp_path: Path) -> None:
    index = load_split("msvd", msvd_like, "test")
    out = tmp_path / "m.json"
    out.write_text("stale")
    a = verify_split(index, out, workers=1)
    b = verify_split(index, out, workers=3)
    assert a == b and json.loads(out.read_text())["summary"] == a["summary"]


def test_file_that_vanished_after_indexing_is_missing(msvd_like: Path, tmp_path: Path) -> None:
    index = load_split("msvd", msvd_like, "test")
    ref = index.videos[0]
    index.videos[0] = type(ref)(ref.video_id, tmp_path / "deleted.mp4")
    row = verify_split(index, tmp_path / "m.json")["videos"][0]
    assert row["status"] == "missing" and "not found" in row["error"]


def test_summary_lines_name_the_bad_ids_and_the_manifest(msvd_like: Path, tmp_path: Path) -> None:
    manifest = verify_split(load_split("msvd", msvd_like, "test"), tmp_path / "m.json")
    text = format_manifest_summary(manifest)
    lines = text.splitlines()
    assert lines[0] == "msvd test: 6 videos annotated, 2 present, 1 missing, 3 undecodable; 6 captions"
    # where it looked, the names it expected (for a missing id), then the bad ids, the manifest and the fix
    assert lines[1] == (
        f"  searched {msvd_like} recursively for <clip id>.avi (any extension, any depth); "
        "e.g. id 'gone_2_4' matches gone_2_4.<ext> or gone_2_4"
    )
    assert "missing: gone_2_4" in text
    assert "-zero_0_2 (" in text and "trunc_5_9" in text and "text_0_1" in text
    assert f"  manifest: {tmp_path / 'm.json'}" in lines
    assert lines[-1].startswith(f"  fix: put the video files anywhere under {msvd_like} with the names above")
    assert "data.video_root=" in lines[-1] and "re-encode the undecodable" in lines[-1]
    short = format_manifest_summary(manifest, limit=1)
    assert "undecodable (first 1 of 3): -zero_0_2" in short
