"""The MMT feature reader on fixture trees in the release's exact layout (tests/mmt_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.mmt_fixtures import (
    ANET_TEST,
    ANET_TRAIN,
    LSMDC_TEST,
    LSMDC_TRAIN,
    write_activitynet,
    write_lsmdc,
    write_msrvtt,
    write_tiny_bert_vocab,
)
from vidbench.data.bert_text import BertQueryTokenizer
from vidbench.data.mmt import MmtFeatureDataset, MmtFileError, collate_mmt, get_preset, read_mmt_h5, split_ids
from vidbench.data.mmt.layout import LSMDC_CAPTIONLESS
from vidbench.errors import AnnotationError, ConfigError, DataError


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> BertQueryTokenizer:
    return BertQueryTokenizer(write_tiny_bert_vocab(tmp_path_factory.mktemp("bert") / "vocab.txt"))


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    return write_msrvtt(tmp_path_factory.mktemp("mmt") / "MSRVTT")


@pytest.fixture(scope="module")
def jsf_test(msrvtt, tok) -> MmtFeatureDataset:
    return MmtFeatureDataset(msrvtt.root, "msrvtt", "jsfusion", "test", tok)


def _ids(tok: BertQueryTokenizer, words: list[str], w: int = 30) -> list[int]:
    return tok.encode_words(words, w)[0]


# ----------------------------------------------------------------------------------------- split lists
def test_msrvtt_split_ids(msrvtt) -> None:
    root, lists = msrvtt.root, msrvtt.lists
    jsf, miech, full = (get_preset("msrvtt", c) for c in ("jsfusion", "miech", "full"))
    assert split_ids(root, jsf, "test") == lists["val_list_jsfusion.txt"] == ["video8", "video9"]
    shuffled = list(lists["train_list_jsfusion.txt"])
    np.random.RandomState(0).shuffle(shuffled)
    assert split_ids(root, jsf, "trainval") == shuffled  # the reference's cross_seed shuffle
    assert split_ids(root, jsf, "val") == shuffled[:2] and split_ids(root, jsf, "train") == shuffled[2:]
    assert split_ids(root, miech, "test") == ["video7", "video8", "video9"]
    assert sorted(split_ids(root, miech, "trainval")) == sorted(lists["train_list_miech.txt"])
    assert split_ids(root, full, "train") == [f"video{k}" for k in range(6)]
    assert split_ids(root, full, "val") == ["video6"]
    assert split_ids(root, full, "test") == ["video7", "video8", "video9"]
    assert split_ids(root, full, "trainval") == ["video6", *[f"video{k}" for k in range(6)]]  # val + train
    with pytest.raises(ConfigError, match="unknown split"):
        split_ids(root, full, "dev")


def test_lsmdc_and_activitynet_split_ids(tmp_path) -> None:
    lsmdc = write_lsmdc(tmp_path / "LSMDC")
    preset = get_preset("lsmdc", "full")
    assert LSMDC_CAPTIONLESS[0] in lsmdc.lists["LSMDC16_annos_training.csv"]
    assert sorted(split_ids(lsmdc.root, preset, "trainval")) == sorted(LSMDC_TRAIN)  # caption-less clip dropped
    assert split_ids(lsmdc.root, preset, "test") == LSMDC_TEST
    anet = write_activitynet(tmp_path / "activity-net")
    apreset = get_preset("activitynet", "val1")
    assert split_ids(anet.root, apreset, "test") == ANET_TEST
    assert sorted(split_ids(anet.root, apreset, "trainval")) == sorted(ANET_TRAIN)


def test_missing_list_folder_names_the_tarball(tmp_path) -> None:
    with pytest.raises(AnnotationError, match=r"symlinked-feats.*\n.*fix: download .*MSRVTT.tar.gz"):
        split_ids(tmp_path / "MSRVTT", get_preset("msrvtt", "jsfusion"), "test")
    with pytest.raises(ConfigError, match="known: msrvtt/jsfusion"):
        get_preset("msrvtt", "1ka")


# ----------------------------------------------------------------------------------------- experts
def test_expert_order_present_and_missing_masks(msrvtt, tok) -> None:
    data = MmtFeatureDataset(msrvtt.root, "msrvtt", "full", "train", tok)
    assert list(data.experts) == ["face", "ocr", "rgb", "s3d", "scene", "speech", "vggish"]
    by_id = {data[i]["video_id"]: data[i] for i in range(len(data))}
    for vid, missing in (("video1", "face"), ("video2", "face"), ("video3", "speech")):
        s = by_id[vid]
        assert float(s["features_ind"][missing].sum()) == 0
        assert float(s["features"][missing].abs().sum()) == 0
        assert float(s["features_maxpool"][missing].abs().sum()) == 0
        assert torch.all(s["features_t"][missing] == 1)
    s0 = by_id["video0"]
    counts = {"face": 3, "ocr": 2, "rgb": 40, "s3d": 12, "scene": 5, "speech": 4, "vggish": 8}
    for e, n in counts.items():
        keep = min(n, 30)
        assert s0["features"][e].shape == (30, msrvtt.features["video0"][e].shape[1])
        assert s0["features_ind"][e].tolist() == [1.0] * keep + [0.0] * (30 - keep)
        assert float(s0["features"][e][keep:].abs().sum()) == 0


def test_token_sampling_positions_and_pools(jsf_test, msrvtt) -> None:
    s = jsf_test[0]  # video8, evaluation
    raw = msrvtt.features["video8"]
    # rgb: 40 rows -> the reference's fixed RandomState(0) subset of 30, in time order
    expected = np.sort(np.random.RandomState(0).choice(40, size=30, replace=False))
    assert s["features"]["rgb"][:, 0].tolist() == expected.tolist()
    torch.testing.assert_close(s["features_t"]["rgb"], torch.tensor((expected + 0.5) * 0.2 + 2, dtype=torch.float32))
    # pools over all 40 rows, not only the kept ones
    torch.testing.assert_close(s["features_maxpool"]["rgb"], torch.from_numpy(raw["rgb"].max(0)))
    torch.testing.assert_close(s["features_avgpool"]["rgb"], torch.from_numpy(raw["rgb"].mean(0)))
    assert float(s["features_maxpool"]["rgb"][0]) == 39.0
    # s3d: synthesised 1 s width -> t = i + 2.5; padding t = 1; untimed face -> 1
    assert s["features_t"]["s3d"][:12].tolist() == [i + 2.5 for i in range(12)]
    assert torch.all(s["features_t"]["s3d"][12:] == 1)
    assert torch.all(s["features_t"]["face"] == 1) and float(s["features_ind"]["face"].sum()) == 3
    assert s["features_t"]["scene"][:5].tolist() == [i + 2.5 for i in range(5)]
    # evaluation is deterministic
    again = jsf_test[0]
    assert torch.equal(again["features"]["rgb"], s["features"]["rgb"])


def test_stored_s3d_timings_are_used(msrvtt, tok) -> None:
    data = MmtFeatureDataset(msrvtt.root, "msrvtt", "full", "train", tok)
    s = next(data[i] for i in range(len(data)) if data[i]["video_id"] == "video0")
    # features_t.s3d = [2i, 2i + 1] -> centre 2i + 0.5 -> t = 2i + 2.5
    assert s["features_t"]["s3d"][:12].tolist() == [2 * i + 2.5 for i in range(12)]
    # vggish has no stored timings in this file -> synthesised 1 s width
    assert s["features_t"]["vggish"][:8].tolist() == [i + 2.5 for i in range(8)]


def test_training_token_subsets_are_random_sorted_and_reproducible(msrvtt, tok) -> None:
    data = MmtFeatureDataset(msrvtt.root, "msrvtt", "jsfusion", "trainval", tok, policy="skip", seed=3)
    subsets = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        rows = data[0]["features"]["rgb"][:, 0]
        assert torch.all(rows[1:] > rows[:-1])  # time order kept
        subsets.add(tuple(rows.tolist()))
    assert len(subsets) > 1
    data.set_epoch(2)
    a = data[0]["features"]["rgb"]
    assert torch.equal(a, data[0]["features"]["rgb"])


# ----------------------------------------------------------------------------------------- captions
def test_test_caption_choice_per_cut(msrvtt, tok, jsf_test) -> None:
    caps = msrvtt.captions
    # 1k-A: the caption index picks caption 1 of video8 and caption 2 of video9
    assert jsf_test.video_ids == ["video8", "video9"]
    assert jsf_test[0]["token_ids"][: jsf_test[0]["token_mask"].sum()].tolist() == _ids(tok, caps["video8"][1])
    assert jsf_test[1]["token_ids"][: jsf_test[1]["token_mask"].sum()].tolist() == _ids(tok, caps["video9"][2])
    # 1k-B: the first caption
    miech = MmtFeatureDataset(msrvtt.root, "msrvtt", "miech", "test", tok)
    s = miech[1]
    assert s["video_id"] == "video8"
    assert s["token_ids"][: s["token_mask"].sum()].tolist() == _ids(tok, caps["video8"][0])
    # full: all captions concatenated in stored order, cut to 30 words then 30 tokens
    full = MmtFeatureDataset(msrvtt.root, "msrvtt", "full", "test", tok)
    s = full[0]
    cat = [w for c in caps["video7"] for w in c]
    assert len(cat) == 27 and s["token_ids"][: s["token_mask"].sum()].tolist() == _ids(tok, cat[:30])
    assert int(s["token_mask"].sum()) == 30 and int(s["token_ids"][29]) == tok.sep_id


def test_training_query_is_one_random_caption(msrvtt, tok) -> None:
    data = MmtFeatureDataset(msrvtt.root, "msrvtt", "full", "train", tok, length=12)
    assert len(data) == 12 and data[7]["video_id"] == data[1]["video_id"]  # sample i -> video i % n
    options = {tuple(_ids(tok, c)) for c in msrvtt.captions[data.video_ids[0]]}
    seen = set()
    for epoch in range(12):
        data.set_epoch(epoch)
        s = data[0]
        seen.add(tuple(s["token_ids"][: s["token_mask"].sum()].tolist()))
    assert seen <= options and len(seen) > 1


def test_tokenizer_lower_cases_against_cased_vocab(tok) -> None:
    vocab = tok.hf_tokenizer.get_vocab()
    ids, full = tok.encode_words(["A", "Man", "cooks"], 30)
    assert ids == [vocab["[CLS]"], vocab["a"], vocab["man"], vocab["cooks"], vocab["."], vocab["[SEP]"]]
    assert full == 6 and vocab["A"] not in ids and vocab["Man"] not in ids
    assert tok.encode_words(["Café"], 30)[0] == tok.encode_words(["cafe"], 30)[0]  # accents stripped
    short, full = tok.encode_words(["a", "man", "cooks", "pasta"], 4)
    assert short == [vocab["[CLS]"], vocab["a"], vocab["man"], vocab["[SEP]"]] and full == 7
    assert tok.caption_text(["is", "it", "?"]) == "Is it ?"


# ----------------------------------------------------------------------------------------- other datasets
def test_activitynet_paragraphs(tmp_path, tok) -> None:
    anet = write_activitynet(tmp_path / "activity-net")
    data = MmtFeatureDataset(anet.root, "activitynet", "val1", "test", tok)
    assert data.preset.max_tokens == 100 and list(data.experts) == ["s3d", "vggish"]
    long_s = data[0]
    assert long_s["video_id"] == ANET_TEST[0]
    paragraph = [w for sentence in anet.captions[ANET_TEST[0]] for w in sentence]
    assert len(paragraph) == 120
    assert long_s["token_ids"][: long_s["token_mask"].sum()].tolist() == _ids(tok, paragraph[:100], 100)
    assert int(long_s["token_mask"].sum()) == 100
    expected = np.sort(np.random.RandomState(0).choice(130, size=100, replace=False))
    assert long_s["features"]["s3d"][:, 0].tolist() == expected.tolist()
    short = data[1]
    paragraph = [w for sentence in anet.captions[ANET_TEST[1]] for w in sentence]
    assert short["token_ids"][: short["token_mask"].sum()].tolist() == _ids(tok, paragraph, 100)
    report = data.text_report()
    assert report["captions"] == 3 and report["captions_truncated"] == 1 and report["max_words"] == 100
    assert report["longest_tokens"] == 2 + len(
        tok.pieces(anet.captions[ANET_TEST[0]][0] + anet.captions[ANET_TEST[0]][1])
    )
    assert report["tokens_dropped"] == report["longest_tokens"] - 100 and report["ids_without_captions"] == 0


def test_lsmdc_speech_always_missing_and_face_128(tmp_path, tok) -> None:
    lsmdc = write_lsmdc(tmp_path / "LSMDC")
    data = MmtFeatureDataset(lsmdc.root, "lsmdc", "full", "test", tok)
    for i in range(len(data)):
        s = data[i]
        assert float(s["features_ind"]["speech"].sum()) == 0
        assert s["features"]["face"].shape == (30, 128) and float(s["features_ind"]["face"].sum()) > 0
    assert data.query_mode == "cat"


# ----------------------------------------------------------------------------------------- bad files
def test_missing_or_broken_file_fails_test_split_with_fix(tmp_path, tok) -> None:
    fx = write_msrvtt(tmp_path / "MSRVTT", missing=("video9",), broken=("video8",))
    with pytest.raises(DataError) as err:
        MmtFeatureDataset(fx.root, "msrvtt", "jsfusion", "test", tok)
    msg = str(err.value)
    assert "2 of 2 videos" in msg and "video9" in msg and "video8" in msg and "fix:" in msg
    assert "feature file not found" in msg and "not a readable MMT feature file" in msg


def test_skip_policy_counts_bad_files(tmp_path, tok) -> None:
    fx = write_msrvtt(tmp_path / "MSRVTT", missing=("video2",), broken=("video4",))
    data = MmtFeatureDataset(fx.root, "msrvtt", "full", "train", tok, policy="skip")
    assert "video2" not in data.video_ids and "video4" not in data.video_ids and len(data) == 4
    report = data.data_report()
    assert report["skipped_videos"] == 2 and sorted(report["skipped_ids"]) == ["video2", "video4"]
    assert report["num_annotated_videos"] == 6
    # a file that breaks after the scan is replaced by the next good video in training, and counted
    fx.h5(data.video_ids[0]).write_bytes(b"garbage")
    s = data[0]
    assert s["video_id"] == data.video_ids[1] and data.data_report()["decode_failures_replaced"] == 1


def test_malformed_keys_are_named(tmp_path) -> None:
    from tests.mmt_fixtures import rows_for, write_h5

    path = write_h5(tmp_path / "x.h5", [["a"], ["b"]], {"s3d": rows_for(3, 1000, 0)})
    with pytest.raises(MmtFileError, match=r"'features.s3d' has 1000 dims but the preset expects 1024"):
        read_mmt_h5(path, {"s3d": 1024})
    import h5py

    with h5py.File(path, "a") as f:
        del f["raw_captions.0"]
    with pytest.raises(MmtFileError, match=r"'raw_captions.0' is absent"):
        read_mmt_h5(path, {"s3d": 1000})


def test_caption_less_file_is_counted(tmp_path, tok) -> None:
    from tests.mmt_fixtures import rows_for, write_h5

    fx = write_msrvtt(tmp_path / "MSRVTT")
    write_h5(fx.h5("video5"), [], {"s3d": rows_for(3, 1024, 0)})
    data = MmtFeatureDataset(fx.root, "msrvtt", "full", "train", tok, policy="skip")
    assert data.text_report()["ids_without_captions"] == 1 and "video5" not in data.video_ids
    assert data.text_report()["captions"] == 5 * 3  # every caption of the kept training videos


def test_collate_shapes(jsf_test) -> None:
    batch = collate_mmt([jsf_test[0], jsf_test[1]])
    assert batch["video_id"] == ["video8", "video9"]
    assert batch["token_ids"].shape == (2, 30) and batch["token_ids"].dtype == torch.long
    assert batch["features"]["scene"].shape == (2, 30, 2208)
    assert batch["features_t"]["rgb"].shape == (2, 30) and batch["features_maxpool"]["face"].shape == (2, 512)
    assert batch["index"].tolist() == [0, 1]


def test_scan_in_worker_processes_matches_in_process(tmp_path, tok) -> None:
    fx = write_msrvtt(tmp_path / "MSRVTT", broken=("video3",))
    serial = MmtFeatureDataset(fx.root, "msrvtt", "full", "train", tok, policy="skip")
    parallel = MmtFeatureDataset(fx.root, "msrvtt", "full", "train", tok, policy="skip", scan_workers=2)
    assert parallel.video_ids == serial.video_ids and "video3" not in parallel.video_ids
    assert parallel.text_report() == serial.text_report()
    assert parallel.skipped == serial.skipped and "not a readable MMT feature file" in parallel.skipped["video3"]


def test_caption_less_test_video_fails_with_its_id(tmp_path, tok) -> None:
    from tests.mmt_fixtures import rows_for, write_h5

    fx = write_msrvtt(tmp_path / "MSRVTT")
    write_h5(fx.h5("video8"), [], {"s3d": rows_for(3, 1024, 0)})
    with pytest.raises(DataError, match=r"1 of 3 videos .*\n.*video8: .*no caption"):
        MmtFeatureDataset(fx.root, "msrvtt", "miech", "test", tok)


def test_missing_release_message(tmp_path, msrvtt) -> None:
    from vidbench.data.mmt.layout import missing_release_message

    assert missing_release_message(msrvtt.root, "msrvtt", "jsfusion") is None
    assert missing_release_message(msrvtt.root, "msrvtt", "full") is None
    msg = missing_release_message(tmp_path / "MSRVTT", "msrvtt", "jsfusion")
    assert "msrvtt/jsfusion" in msg and "val_list_jsfusion.txt" in msg and "jsfusion_val_caption_idx.pkl" in msg
    assert "mult_h5 (no per-video .h5 files)" in msg and "MSRVTT.tar.gz" in msg
    assert "activity-net.tar.gz" in missing_release_message(tmp_path / "activity-net", "activitynet", "val1")
