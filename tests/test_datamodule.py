"""The DataModule's bad-video policy: `fail` names the ids and the fix before any epoch; `skip` leaves them out
and counts them; training and evaluation batches carry what DDP evaluation and the metrics need."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY
from tests.dataset_fixtures import write_msrvtt, write_msvd
from vidbench.config import compose
from vidbench.data.datamodule import RetrievalDataModule
from vidbench.data.text import HashTokenizer
from vidbench.errors import DataError

RECIPE = "clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka"


def _dm(root, tmp_path, *extra) -> RetrievalDataModule:
    cfg = compose(RECIPE, [*TINY, f"paths.data_root={root}", f"data.cache_dir={tmp_path / 'cache'}", *extra])
    return RetrievalDataModule(cfg.data, HashTokenizer(), image_size=32)


@pytest.fixture()
def broken_msrvtt(tmp_path):
    """MSRVTT layout whose 1k-A test split has a missing file (video11), a truncated mp4 (video9) and a text
    file named .mp4 (video10)."""
    fx = write_msrvtt(tmp_path / "data" / "msrvtt")
    v9 = fx.files["video9"]
    v9.write_bytes(v9.read_bytes()[: v9.stat().st_size // 3])
    fx.files["video10"].write_text("this is not a video\n")
    return tmp_path / "data"


def test_fail_policy_names_the_bad_ids_before_any_epoch(broken_msrvtt, tmp_path):
    dm = _dm(broken_msrvtt, tmp_path)
    with pytest.raises(DataError) as err:
        dm.setup("test")
    msg = str(err.value)
    assert "3 of 3 videos" in msg
    for vid in ("video9", "video10", "video11"):
        assert vid in msg
    assert "missing_policy_test=skip" in msg and "verify-data" in msg


def test_skip_policy_counts_what_it_leaves_out(tmp_path):
    fx = write_msrvtt(tmp_path / "data" / "msrvtt")
    fx.files["video10"].write_bytes(b"")  # zero-byte file
    dm = _dm(tmp_path / "data", tmp_path, "data.missing_policy_test=skip")
    dm.setup("test")
    report = dm.data_report()
    assert report["skipped_videos"] == 2 and set(report["skipped_ids"]) == {"video10", "video11"}
    assert report["num_annotated_videos"] == 3
    texts, videos = dm.test_dataloader()
    batch = next(iter(videos))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape[1:] == (4, 3, 32, 32)
    assert batch["index"].tolist() == [0]
    assert len(texts.dataset) == 1  # the kept video's single 1k-A caption


def test_training_pairs_expand_captions_and_drop_missing(tmp_path):
    write_msrvtt(tmp_path / "data" / "msrvtt")
    dm = _dm(tmp_path / "data", tmp_path)
    dm.setup("fit")
    split = dm.splits["train"]
    # 9k list of the fixture minus nothing missing; 3 captions per video, all expanded
    assert len(split.index.captions) == 3 * len(split.index.videos)
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    assert set(batch) == {"input_ids", "attention_mask", "video", "video_mask", "index", "video_index"}
    assert batch["input_ids"].shape == (2, 16) and batch["video_mask"].shape == (2, 4)


def test_multi_caption_split_exposes_grouping(tmp_path):
    write_msvd(tmp_path / "data" / "msvd")
    cfg = compose(
        "clip4clip-meanp_vitb32_12f_b128_5e_msvd",
        [
            *TINY,
            f"paths.data_root={tmp_path / 'data'}",
            f"data.cache_dir={tmp_path / 'c'}",
            "data.missing_policy_test=skip",
        ],
    )
    dm = RetrievalDataModule(cfg.data, HashTokenizer(), image_size=32)
    dm.setup("test")
    cv = dm.test_caption_video()
    assert dm.test_multi_caption() and torch.bincount(cv).max() > 1
    assert torch.all(cv[1:] >= cv[:-1])  # captions grouped contiguously by video


def test_cache_is_reused_without_decoding(tmp_path, monkeypatch):
    write_msrvtt(tmp_path / "data" / "msrvtt")
    _dm(tmp_path / "data", tmp_path, "data.missing_policy_test=skip").setup("test")

    def boom(*args, **kwargs):
        raise AssertionError("decoded although the cache was complete")

    monkeypatch.setattr("vidbench.data.frame_cache.load_clip", boom)
    dm = _dm(tmp_path / "data", tmp_path, "data.missing_policy_test=skip")
    dm.setup("test")
    frames, mask = dm.splits["test"].source.get(0)
    assert frames.shape == (4, 3, 32, 32) and int(mask.sum()) >= 1
