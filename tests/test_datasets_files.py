"""The shared video file index and annotation lookup (vidbench/data/datasets/files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vidbench.data.datasets.files import (
    Entry,
    build_split,
    find_annotation,
    scan_files,
    split_stem,
)
from vidbench.errors import AnnotationError


def touch(path: Path, data: bytes = b"v") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("a.mp4", "a"),
        ("a.mov.mp4", "a.mov"),
        ("a..mp4", "a."),
        ("a.", "a"),
        ("a", "a"),
        (".hidden", ".hidden"),
    ],
)
def test_split_stem(name: str, stem: str) -> None:
    assert split_stem(name) == stem


def test_index_walks_recursively_and_skips_non_videos(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "b" / "c" / "clip1.avi")
    touch(tmp_path / "clip2.MKV")
    touch(tmp_path / "clip3.json")  # an annotation, never a video
    touch(tmp_path / "clip4.part")  # an unfinished download
    touch(tmp_path / ".cache" / "clip5.mp4")  # hidden folders are not data
    touch(tmp_path / "._clip6.mp4")  # macOS resource forks
    index = scan_files(tmp_path)
    stems = index.table("stem").paths
    assert set(stems) == {"clip1", "clip2"}
    assert stems["clip1"] == tmp_path / "a" / "b" / "c" / "clip1.avi"
    assert index.files_named("clip3.json") == [tmp_path / "clip3.json"]


def test_name_minus_mp4_table(tmp_path: Path) -> None:
    touch(tmp_path / "x.mov.mp4")
    touch(tmp_path / "y..MP4")
    touch(tmp_path / "z.avi")
    table = scan_files(tmp_path).table("name_minus_mp4").paths
    assert set(table) == {"x.mov", "y."}


def test_collisions_prefer_the_shallowest_then_shortest_path(tmp_path: Path) -> None:
    deep = touch(tmp_path / "deep" / "er" / "v1.mp4")
    shallow = touch(tmp_path / "top" / "v1.webm")
    touch(tmp_path / "top" / "v2.mp4")
    touch(tmp_path / "topper" / "v2.mp4")
    index = scan_files(tmp_path)
    tab = index.table("stem")
    assert tab.paths["v1"] == shallow and deep.exists()
    assert tab.paths["v2"] == tmp_path / "top" / "v2.mp4"
    assert tab.collisions == {"v1": 1, "v2": 1}
    split = build_split("x", "test", [Entry("v1", ["c"]), Entry("v3", ["d"])], tmp_path, multi_caption=False)
    assert split.notes["ambiguous_video_files"] == 1 and split.notes["videos_missing"] == 1


def test_symlinks_are_followed_once_and_loops_end(tmp_path: Path) -> None:
    outside = tmp_path / "store"
    touch(outside / "far.mp4")
    root = tmp_path / "root"
    touch(root / "sub" / "near.mp4")
    os.symlink(outside, root / "linked")  # a folder kept elsewhere
    os.symlink(root, root / "sub" / "loop")  # a loop back to the root
    os.symlink(tmp_path / "nowhere", root / "broken")  # a dangling link
    os.symlink(outside, root / "zz_second_link")  # the same folder again: walked once, first name wins
    index = scan_files(root)
    names = sorted(p.name for p in index.files)
    assert names == ["far.mp4", "near.mp4"]
    assert index.table("stem").paths["far"] == root / "linked" / "far.mp4"
    assert index.table("stem").collisions == {}


def test_scan_is_cached_per_root_until_refresh(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    first = scan_files(tmp_path)
    assert scan_files(tmp_path / ".") is first
    touch(tmp_path / "b.mp4")
    assert "b" not in scan_files(tmp_path).table("stem").paths
    assert "b" in scan_files(tmp_path, refresh=True).table("stem").paths


def test_find_annotation_prefers_root_then_shallowest(tmp_path: Path) -> None:
    deep = touch(tmp_path / "x" / "y" / "ann.json", b"{}")
    assert find_annotation(tmp_path, ["ann.json"]) == deep
    top = touch(tmp_path / "ann.json", b"{}")
    assert find_annotation(tmp_path, ["ann.json"]) == top
    assert find_annotation(tmp_path, ["other.json"]) is None


def test_find_annotation_rejects_two_candidates_at_one_depth(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "ann.json", b"{}")
    touch(tmp_path / "b" / "ann.json", b"{}")
    with pytest.raises(AnnotationError, match="2 files named ann.json"):
        find_annotation(tmp_path, ["ann.json"])
