"""Dataset adapters against tiny fixtures in each real on-disk format (tests/dataset_fixtures.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dataset_fixtures import (
    WRITERS,
    FixtureDataset,
    write_activitynet,
    write_msrvtt,
    write_msvd,
    write_vatex,
)
from vidbench.data.datasets import DATASETS, DEFAULTS, load_split
from vidbench.data.datasets.files import clear_file_index_cache
from vidbench.data.types import SplitIndex
from vidbench.errors import AnnotationError, ConfigError

CASES = [(name, split) for name, mod in DATASETS.items() for split in mod.SPLITS]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureDataset]:
    base = tmp_path_factory.mktemp("datasets")
    return {name: write(base / name) for name, write in WRITERS.items()}


def grouped(index: SplitIndex) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for text, vi in zip(index.captions, index.caption_video, strict=True):
        out.setdefault(index.videos[vi].video_id, []).append(text)
    return out


def annotations_only(fx: FixtureDataset, dest: Path) -> Path:
    """Copy the fixture's top-level annotation files (no videos) so a test can damage them."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in fx.root.iterdir():
        if p.is_file():
            shutil.copy(p, dest / p.name)
    return dest


# ---------------------------------------------------------------------------------------------------------
# Every dataset and split: order, caption grouping, file resolution, windows


def test_every_split_has_a_fixture(fixtures: dict[str, FixtureDataset]) -> None:
    assert {(n, s) for n, fx in fixtures.items() for s in fx.splits} == set(CASES)


@pytest.mark.parametrize(("name", "split"), CASES)
def test_split_matches_fixture(fixtures: dict[str, FixtureDataset], name: str, split: str) -> None:
    fx = fixtures[name]
    index = load_split(name, fx.root, split)
    assert (index.dataset, index.split) == (name, split)
    assert [v.video_id for v in index.videos] == fx.splits[split]
    # captions grouped contiguously, in video order, each video's captions in file order
    assert index.caption_video == sorted(index.caption_video)
    assert sorted(set(index.caption_video)) == list(range(len(index.videos)))
    assert grouped(index) == fx.captions[split]
    assert len(index.captions) == sum(len(c) for c in fx.captions[split].values())
    for ref in index.videos:
        assert ref.path == fx.files.get(ref.video_id), ref.video_id
        assert (ref.path is None) == (ref.video_id in fx.missing)
        if ref.video_id in fx.windows:
            assert (ref.start_s, ref.end_s) == fx.windows[ref.video_id]
        else:
            assert ref.start_s is None and ref.end_s is None
    assert index.notes["videos"] == len(index.videos)
    assert index.notes["videos_missing"] == len(index.missing_ids)
    assert index.missing_ids == [v for v in fx.splits[split] if v in fx.missing]


@pytest.mark.parametrize(("name", "split"), CASES[::3])
def test_registry_matches_module(fixtures: dict[str, FixtureDataset], name: str, split: str) -> None:
    fx = fixtures[name]
    via_registry = load_split(name, fx.root, split, video_root=fx.video_root)
    direct = DATASETS[name].load_split(fx.root, split)
    assert via_registry.videos == direct.videos and via_registry.captions == direct.captions


def test_registry_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="msrvtt, msvd, vatex, lsmdc, activitynet, didemo"):
        load_split("youcook2", tmp_path, "test")
    with pytest.raises(ConfigError, match="train-9k, train-7k, train-full, val-full, test-1ka, test-full"):
        load_split("msrvtt", tmp_path, "test")
    with pytest.raises(ConfigError, match="train, val_1"):
        DATASETS["activitynet"].load_split(tmp_path, "val_2")


def test_defaults_follow_the_spec_table() -> None:
    assert set(DEFAULTS) == set(DATASETS)
    for name in ("msrvtt", "msvd", "vatex", "lsmdc"):
        assert DEFAULTS[name] == {"max_words": 32, "max_frames": 12, "framerate": 1, "slice_framepos": 2}
    assert DEFAULTS["activitynet"] == {"max_words": 64, "max_frames": 64, "framerate": 1, "slice_framepos": 2}
    assert DEFAULTS["didemo"]["max_frames"] == 64 and DEFAULTS["didemo"]["window"] == (0.0, 31.0)


# ---------------------------------------------------------------------------------------------------------
# MSR-VTT


def test_msrvtt_protocols_and_sizes(fixtures: dict[str, FixtureDataset]) -> None:
    root = fixtures["msrvtt"].root
    train = load_split("msrvtt", root, "train-9k")
    assert (len(train.videos), len(train.captions), train.multi_caption) == (9, 27, True)
    one_k = load_split("msrvtt", root, "test-1ka")
    assert (len(one_k.videos), len(one_k.captions), one_k.multi_caption) == (3, 3, False)
    assert one_k.captions[0] == 'clip 9 shows a person doing task 1, then "waves"'
    full = load_split("msrvtt", root, "test-full")
    assert (len(full.videos), len(full.captions), full.multi_caption) == (4, 12, True)
    assert full.caption_video == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_msrvtt_finds_nested_videos_and_webm(fixtures: dict[str, FixtureDataset]) -> None:
    fx = fixtures["msrvtt"]
    index = load_split("msrvtt", fx.root, "train-9k", video_root=fx.root / "videos")
    paths = {v.video_id: v.path for v in index.videos}
    assert paths["video0"] == fx.root / "videos" / "all" / "video0.mp4"
    assert paths["video3"] is not None and paths["video3"].name == "video3.webm"


def test_msrvtt_prefers_mp4_over_other_extensions(tmp_path: Path) -> None:
    fx = write_msrvtt(tmp_path)
    (fx.video_root / "video1.avi").write_bytes(b"x")  # same depth, sorts before video1.mp4
    clear_file_index_cache()
    index = load_split("msrvtt", fx.root, "train-7k")
    assert index.videos[1].path == fx.video_root / "video1.mp4"


def test_msrvtt_coco_schema_in_subfolder_matches_official_schema(
    fixtures: dict[str, FixtureDataset], tmp_path: Path
) -> None:
    coco = write_msrvtt(tmp_path / "coco", schema="annotations", full_csv=True)
    for split in ("train-9k", "train-7k", "test-full"):
        a = load_split("msrvtt", coco.root, split)
        b = load_split("msrvtt", fixtures["msrvtt"].root, split)
        assert a.captions == b.captions and [v.video_id for v in a.videos] == [v.video_id for v in b.videos]
    assert (
        load_split("msrvtt", coco.root, "train-9k")
        .notes["caption_source"]
        .endswith("annotation/MSR_VTT.json")
    )


def test_msrvtt_full_csv_takes_precedence_over_json_split_field(tmp_path: Path) -> None:
    fx = write_msrvtt(tmp_path, full_csv=True)
    index = load_split("msrvtt", fx.root, "train-full")
    assert [v.video_id for v in index.videos] == [f"video{n}" for n in range(5, -1, -1)]
    assert index.notes["split_file"].endswith("MSRVTT_train.full.csv")


def test_msrvtt_full_split_without_csv_or_split_field_says_what_to_add(tmp_path: Path) -> None:
    fx = write_msrvtt(tmp_path, schema="annotations")
    with pytest.raises(AnnotationError, match=r"MSRVTT_val\.full\.csv") as err:
        load_split("msrvtt", fx.root, "val-full")
    assert "fix:" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# MSVD and VATEX


def test_msvd_pickle_and_json_give_the_same_split(
    fixtures: dict[str, FixtureDataset], tmp_path: Path
) -> None:
    js = write_msvd(tmp_path / "json", captions="json")
    for split in ("train", "val", "test"):
        a = load_split("msvd", fixtures["msvd"].root, split)
        b = load_split("msvd", js.root, split)
        assert a.captions == b.captions and a.caption_video == b.caption_video and a.multi_caption
    assert load_split("msvd", js.root, "test").notes["caption_source"].endswith("captions_msvd.json")


def test_msvd_test_is_multi_caption_with_dash_and_underscore_ids(fixtures: dict[str, FixtureDataset]) -> None:
    fx = fixtures["msvd"]
    index = load_split("msvd", fx.root, "test")
    assert index.multi_caption
    assert [len(c) for c in grouped(index).values()] == [4, 2, 3]
    assert index.videos[0].video_id == "-vg3vR86fu0_1_6"
    assert index.videos[0].path == fx.video_root / "-vg3vR86fu0_1_6.avi"
    assert index.captions[0] == "a thing number 5 happens in way 0"  # tokens joined with single spaces


@pytest.mark.parametrize("fmt", ["vatex_data", "official"])
def test_vatex_caption_formats_agree(fixtures: dict[str, FixtureDataset], tmp_path: Path, fmt: str) -> None:
    other = write_vatex(tmp_path, captions=fmt)
    for split in ("train", "val", "test"):
        a = load_split("vatex", fixtures["vatex"].root, split)
        b = load_split("vatex", other.root, split)
        assert a.captions == b.captions and a.caption_video == b.caption_video and b.multi_caption


def test_vatex_missing_val_list_is_an_error_not_the_test_list(
    fixtures: dict[str, FixtureDataset], tmp_path: Path
) -> None:
    root = annotations_only(fixtures["vatex"], tmp_path)
    (root / "val_list.txt").unlink()
    with pytest.raises(AnnotationError, match="val_list.txt") as err:
        load_split("vatex", root, "val")
    assert str(root) in str(err.value) and "CLIP2Video" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# LSMDC


def test_lsmdc_groups_repeated_clips_and_keeps_quotes(fixtures: dict[str, FixtureDataset]) -> None:
    fx = fixtures["lsmdc"]
    train = load_split("lsmdc", fx.root, "train")
    assert train.caption_video == [0, 0, 1, 2]
    assert train.captions[:2] == ["SOMEONE opens the door.", "He steps in."]
    assert train.notes["rows"] == 4 and train.notes["repeated_clip_rows"] == 1 and train.multi_caption
    test = load_split("lsmdc", fx.root, "test")
    assert not test.multi_caption and len(test.videos) == len(test.captions) == 3
    assert test.captions[0] == 'SOMEONE says "hi, there" and waves.'
    assert test.videos[0].path is not None and test.videos[0].path.parent.name == "0001_American_Beauty"


def test_lsmdc_line_with_five_fields_names_the_line(
    fixtures: dict[str, FixtureDataset], tmp_path: Path
) -> None:
    root = annotations_only(fixtures["lsmdc"], tmp_path)
    path = root / "LSMDC16_annos_val.csv"
    lines = path.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:5])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"line 3 has 5 tab-separated fields, expected 6") as err:
        load_split("lsmdc", root, "val")
    assert err.value.path == path


# ---------------------------------------------------------------------------------------------------------
# ActivityNet and DiDeMo (paragraphs)


def test_activitynet_paragraphs_windows_and_notes(fixtures: dict[str, FixtureDataset]) -> None:
    fx = fixtures["activitynet"]
    train = load_split("activitynet", fx.root, "train")
    assert train.text_unit == "paragraph" and not train.multi_caption
    assert grouped(train)["v_AAAAAAAAAAA"] == ["A woman enters a room. She starts dancing."]
    assert grouped(train)["v_-CCCCCCCCCC"] == ["Kids play ball in a park."]
    windows = {v.video_id: (v.start_s, v.end_s) for v in train.videos}
    assert windows == {"v_BBBBBBBBBBB": (0.0, 2.0), "v_AAAAAAAAAAA": (0.0, 3.0), "v_-CCCCCCCCCC": (0.0, 2.0)}
    assert train.notes["ids_without_captions"] == 1
    val = load_split("activitynet", fx.root, "val_1")
    names = {v.video_id: v.path.name if v.path else None for v in val.videos}
    assert names == {
        "v_DDDDDDDDDDD": "DDDDDDDDDDD.mp4",
        "v_EEEEEEEEEEE": "v_EEEEEEEEEEE.mkv",
        "v_FFFFFFFFFFF": "FFFFFFFFFFF.webm",
        "v_GGGGGGGGGGG": None,
    }


def test_activitynet_without_ids_file_uses_json_order(tmp_path: Path) -> None:
    fx = write_activitynet(tmp_path)
    (fx.root / "train_ids.json").unlink()
    index = load_split("activitynet", fx.root, "train")
    assert [v.video_id for v in index.videos] == ["v_AAAAAAAAAAA", "v_BBBBBBBBBBB", "v_-CCCCCCCCCC"]
    assert "absent" in str(index.notes["split_file"])


def test_didemo_paragraphs_naming_schemes_and_window(fixtures: dict[str, FixtureDataset]) -> None:
    fx = fixtures["didemo"]
    test = load_split("didemo", fx.root, "test")
    assert test.text_unit == "paragraph" and not test.multi_caption
    assert len(test.videos) == len(test.captions) == 6
    files = {v.video_id: v.path.name if v.path else None for v in test.videos}
    assert files == {
        "11@N01_111_aaa.mov": "11@N01_111_aaa.mov",
        "22@N02_222_bbb.avi": "22@N02_222_bbb.avi.mp4",
        "33@N03_333_ccc.": "33@N03_333_ccc..mp4",
        "44@N04_444_ddd.mp4": "44@N04_444_ddd.mp4",
        "55@N05_555_eee.3gp": "55@N05_555_eee.mp4",
        "66@N06_666_fff.m4v": None,
    }
    assert all((v.start_s, v.end_s) == (0.0, 31.0) for v in test.videos)
    para = grouped(test)["33@N03_333_ccc."][0]
    assert para == " ".join(f"moment {k} of video 33@N03 happens" for k in range(3))
    assert test.notes["annotated_videos_not_in_list"] == 1


# ---------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("name", "split", "filename"),
    [
        ("msrvtt", "train-9k", "MSRVTT_data.json"),
        ("activitynet", "val_1", "val_1.json"),
        ("didemo", "test", "test_data.json"),
        ("vatex", "train", "ref_captions.json"),
    ],
)
def test_malformed_json_names_the_file(
    fixtures: dict[str, FixtureDataset], tmp_path: Path, name: str, split: str, filename: str
) -> None:
    root = annotations_only(fixtures[name], tmp_path)
    path = root / filename
    path.write_text(path.read_text()[:50])
    with pytest.raises(AnnotationError, match="malformed JSON") as err:
        load_split(name, root, split)
    assert err.value.path == path and str(path) in str(err.value)


def test_wrong_json_shape_names_the_key(fixtures: dict[str, FixtureDataset], tmp_path: Path) -> None:
    root = annotations_only(fixtures["activitynet"], tmp_path)
    (root / "train.json").write_text('{"v_x": {"duration": "long", "sentences": ["a"]}}')
    with pytest.raises(AnnotationError, match="'v_x'"):
        load_split("activitynet", root, "train")


@pytest.mark.parametrize(
    ("name", "split", "list_file", "ann_file"),
    [
        ("msvd", "test", "test_list.txt", "raw-captions.pkl"),
        ("vatex", "val", "val_list.txt", "ref_captions.json"),
        ("didemo", "val", "val_list.txt", "val_data.json"),
        ("msrvtt", "train-9k", "MSRVTT_train.9k.csv", "MSRVTT_data.json"),
    ],
)
def test_listed_id_without_annotations_names_id_and_both_files(
    fixtures: dict[str, FixtureDataset], tmp_path: Path, name: str, split: str, list_file: str, ann_file: str
) -> None:
    root = annotations_only(fixtures[name], tmp_path)
    with open(root / list_file, "a") as f:
        f.write("ghost_id_000\n")
    with pytest.raises(AnnotationError, match="ghost_id_000") as err:
        load_split(name, root, split)
    assert list_file in str(err.value) and ann_file in str(err.value)


@pytest.mark.parametrize(
    ("name", "split", "remove", "hint"),
    [
        ("didemo", "test", "test_data.json", "LocalizingMoments"),
        ("msvd", "train", "raw-captions.pkl", "captions_msvd.json"),
        ("lsmdc", "test", "LSMDC16_challenge_1000_publictect.csv", "MPII"),
        ("activitynet", "train", "train.json", "ActivityNet Captions zip"),
        ("msrvtt", "test-1ka", "MSRVTT_JSFUSION_test.csv", "msrvtt_data.zip"),
    ],
)
def test_missing_annotation_file_says_what_to_put_where(
    fixtures: dict[str, FixtureDataset], tmp_path: Path, name: str, split: str, remove: str, hint: str
) -> None:
    root = annotations_only(fixtures[name], tmp_path)
    (root / remove).unlink()
    with pytest.raises(AnnotationError) as err:
        load_split(name, root, split)
    msg = str(err.value)
    assert remove in msg and f"into {root}" in msg and hint in msg


def test_msvd_pickle_of_the_wrong_shape(fixtures: dict[str, FixtureDataset], tmp_path: Path) -> None:
    import pickle

    root = annotations_only(fixtures["msvd"], tmp_path)
    (root / "raw-captions.pkl").write_bytes(pickle.dumps({"-vg3vR86fu0_1_6": [["a", 3]]}))
    with pytest.raises(AnnotationError, match="'-vg3vR86fu0_1_6'"):
        load_split("msvd", root, "test")
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(Path("x")))  # code objects are refused
    with pytest.raises(AnnotationError, match="refusing to load"):
        load_split("msvd", root, "test")


def test_missing_videos_are_none_not_errors(fixtures: dict[str, FixtureDataset], tmp_path: Path) -> None:
    root = annotations_only(fixtures["msvd"], tmp_path)
    index = load_split("msvd", root, "train", video_root=tmp_path / "no_such_folder")
    assert all(v.path is None for v in index.videos) and index.notes["video_root_missing"] is True
    assert index.missing_ids == fixtures["msvd"].splits["train"]
