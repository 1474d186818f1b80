"""Sanity controls: shuffled captions, standard counts, train/test overlap, and QB-Norm's training-only bank."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from vidbench.data.overlap import split_overlap
from vidbench.data.types import SplitIndex, VideoRef
from vidbench.eval.controls import counts_check, shuffled_caption_rows, shuffled_verdict
from vidbench.methods.base import RetrievalMethod, ScoringProtocol


@pytest.mark.parametrize("cv", [[0, 1, 2, 3, 4], [0, 0, 0, 1, 1, 2, 3, 3, 3, 3], [0, 1]])
def test_shuffled_rows_give_every_caption_one_of_another_video(cv):
    cv_t = torch.tensor(cv)
    borrowed = shuffled_caption_rows(cv_t, seed=3)
    assert borrowed.shape == cv_t.shape
    assert bool((cv_t[borrowed] != cv_t).all())  # never a caption of its own video
    # all captions of a video borrow from the same other video
    for v in set(cv):
        assert len({int(cv_t[b]) for b in borrowed[cv_t == v]}) == 1
    assert torch.equal(borrowed, shuffled_caption_rows(cv_t, seed=3))
    with pytest.raises(ValueError, match="two videos"):
        shuffled_caption_rows(torch.zeros(3, dtype=torch.long))


def test_verdict_fails_only_above_chance_plus_tolerance():
    assert shuffled_verdict(0.0, 90.0, 1000, 0)["status"] == "pass"  # below chance is fine
    v = shuffled_verdict(3.0, 90.0, 1000, 0)
    assert v["chance_R1"] == pytest.approx(0.1) and v["tolerance"] == 3.0 and v["status"] == "pass"
    assert shuffled_verdict(3.2, 90.0, 1000, 0)["status"] == "fail"
    small = shuffled_verdict(20.0, 90.0, 16, 0)  # few videos: the binomial spread widens the tolerance
    assert small["tolerance"] > 3.0 and small["status"] == "pass"


def _fake_method(cv: torch.Tensor) -> SimpleNamespace:
    dm = SimpleNamespace(test_caption_video=lambda: cv, test_multi_caption=lambda: None)
    cfg = OmegaConf.create({"run": {"seed": 0}, "eval": {"budget_mb": 64, "text_chunk": None, "video_chunk": None}})
    fake = SimpleNamespace(trainer=SimpleNamespace(datamodule=dm), cfg=cfg, device=torch.device("cpu"))
    fake.score_matrix = lambda proto, text, video: RetrievalMethod.score_matrix(fake, proto, text, video)
    return fake


def _run_control(score, text, video, cv):
    proto = ScoringProtocol(name="base", score=score)
    rows = torch.arange(cv.shape[0])
    real = 100.0
    return RetrievalMethod._shuffled_control(_fake_method(cv), proto, text, video, rows, real)


def test_control_falls_to_chance_for_a_text_model_and_catches_a_text_blind_one():
    g = torch.Generator().manual_seed(0)
    n = 40
    video = {"v": torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=1)}
    cv = torch.arange(n)
    text = {"t": video["v"] + 0.05 * torch.randn(n, 16, generator=g), "_row": torch.arange(n)}
    good = _run_control(lambda t, v: t["t"] @ v["v"].T, text, video, cv)
    assert good["status"] == "pass" and good["t2v_R1"] <= good["chance_R1"] + good["tolerance"]
    # a scorer that ranks by something other than the text (here: a row id carried beside the features and
    # never permuted with them, standing in for a position- or id-keyed leak)
    fixed_rows = torch.arange(n)

    def blind(t, v):
        blind.calls += 1
        start = (blind.calls - 1) * t["t"].shape[0]
        ids = fixed_rows[start : start + t["t"].shape[0]]
        return (ids[:, None] == torch.arange(v["v"].shape[0])[None, :]).float()

    blind.calls = 0
    leak = _run_control(blind, text, video, cv)
    assert leak["status"] == "fail" and leak["t2v_R1"] > 90


def test_counts_against_the_standard_splits():
    assert counts_check("msrvtt", "test-1ka", 1000, 1000)["status"] == "standard"
    assert counts_check("msrvtt", "test-full", 59_800, 2_990)["status"] == "standard"
    short = counts_check("msvd", "test", 27_700, 668, missing_ids=["abc_1_2", "def_3_4"])
    assert short["status"] == "short" and "2 of 670 test videos missing (abc_1_2, def_3_4)" in short["note"]
    assert counts_check("msrvtt", "test-1ka", 16, 16, synthetic=True)["status"] == "no-standard"
    assert counts_check("msrvtt", "val-full", 10, 10)["note"].startswith("no standard count known")
    assert counts_check("lsmdc", "test", 1000, 1200)["status"] == "different"


def _index(split: str, items: list[tuple[str, Path | None]]) -> SplitIndex:
    videos = [VideoRef(vid, path) for vid, path in items]
    return SplitIndex("toy", split, videos, [f"c{i}" for i in range(len(videos))], list(range(len(videos))), False)


def test_overlap_by_id_and_by_identical_content(tmp_path):
    def put(name: str, data: bytes) -> Path:
        p = tmp_path / name
        p.write_bytes(data)
        return p

    files = [("a", put("a.mp4", b"A" * 10)), ("b", put("b.mp4", b"B" * 12)), ("c", put("c.mp4", b"C" * 7))]
    train = _index("train", files)
    clean = _index("test", [("x", put("x.mp4", b"X" * 10)), ("y", put("y.mp4", b"Y" * 9))])
    assert split_overlap(train, clean)["status"] == "pass"
    same_id = _index("test", [("b", put("b2.mp4", b"Q" * 3)), ("y", tmp_path / "y.mp4")])
    rec = split_overlap(train, same_id)
    assert rec["status"] == "fail" and rec["shared_ids"] == 1 and rec["shared_id_examples"] == ["b"]
    copied = _index("test", [("z", put("z.mp4", b"B" * 12)), ("y", tmp_path / "y.mp4")])  # b's bytes, new id
    rec = split_overlap(train, copied)
    assert rec["status"] == "fail" and rec["identical_files"] == 1 and "b.mp4 = z.mp4" in rec["identical_file_examples"]
    assert rec["files_hashed"] == 2  # only the one size shared by both sides was read
    assert split_overlap(train, copied, declared=True)["status"] == "declared"


def test_qbnorm_bank_holds_training_captions_only(small_synth):
    from vidbench.config import compose
    from vidbench.data.datamodule import RetrievalDataModule
    from vidbench.data.datasets import load_split
    from vidbench.data.text import build_tokenizer

    cfg = compose("clip4clip-meanp_tiny_8f_b64_synth-msrvtt", [f"paths.synth_root={small_synth}"])
    dm = RetrievalDataModule(cfg.data, build_tokenizer("tiny"), 32)
    ids, mask, info = dm.train_caption_bank(25, seed=1)
    train = load_split("msrvtt", cfg.data.root, cfg.data.train_split)
    test = load_split("msrvtt", cfg.data.root, cfg.data.test_split)
    train_ids = {v.video_id for v in train.videos}
    assert ids.shape[0] == mask.shape[0] == info["size"] == 25 and info["split"] == cfg.data.train_split
    assert set(info["video_ids"]) <= train_ids
    assert not set(info["video_ids"]) & {v.video_id for v in test.videos}
    assert set(info["captions"]) <= set(train.captions)
    everything = dm.train_caption_bank(None)[2]
    assert everything["size"] == everything["of"] == len(train.captions)
