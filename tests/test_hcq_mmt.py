"""HCQ on the MMT features end to end: tiny BERT + tiny MMT transformer on release-format fixtures.

A tiny run trains (with the per-epoch test-split selection), tests and writes result.json with the last epoch's
protocols and the reference's pick (``@best-on-test``), the data.text counts and the HCQ-MMT identity.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.mmt_fixtures import write_activitynet, write_lsmdc, write_msrvtt, write_tiny_bert_vocab
from vidbench import runner
from vidbench.config import compose, run_dir
from vidbench.errors import ConfigError
from vidbench.methods import build_method
from vidbench.results.schema import result_problems

MAIN = "hcq-mmt-l7-m32_bert_b128_50e_msrvtt-1ka"


def tiny_mmt(root: Path, vocab: Path, runs: Path, epochs: int = 2) -> list[str]:
    """Overrides that turn a paper HCQ-MMT recipe into a seconds-long CPU run on fixture data."""
    return [
        f"paths.data_root={root}",
        f"paths.runs_dir={runs}",
        "method.bert=tiny",
        f"method.tokenizer={vocab}",
        "method.video_bert=tiny",
        "method.fine_levels=2",
        "method.num_subspaces=4",
        "method.num_codewords=8",
        "method.kmeans_cache=256",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "data.num_workers=0",
        "data.mmt.samples_per_epoch=8",
        "data.missing_policy_test=skip",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.precision=32-true",
        "optim.lr=1e-3",
    ]


@pytest.fixture(scope="module")
def mmt_root(tmp_path_factory) -> tuple[Path, Path]:
    """<root>/mmt/{MSRVTT,LSMDC,activity-net} in the release layout, and a tiny vocab folder."""
    root = tmp_path_factory.mktemp("mmt_data")
    write_msrvtt(root / "mmt" / "MSRVTT")
    write_lsmdc(root / "mmt" / "LSMDC")
    write_activitynet(root / "mmt" / "activity-net")
    vocab = write_tiny_bert_vocab(root / "vocab" / "vocab.txt").parent
    return root, vocab


def test_tiny_hcq_mmt_run_trains_tests_and_records_last_and_best_on_test(mmt_root, tmp_path):
    root, vocab = mmt_root
    cfg = compose(MAIN, [*tiny_mmt(root, vocab, tmp_path / "runs"), "eval.efficiency=true"])
    out = runner.fit(cfg)
    assert (out / "last.ckpt").exists() and (out / "best-on-test.ckpt").exists()
    runner.test(cfg)
    saved = json.loads((run_dir(cfg) / "result.json").read_text())
    assert (saved["method"], saved["variant"], saved["backbone"]) == ("hcq", "HCQ-MMT", "MMT experts + BERT")
    assert saved["method_label"] == "HCQ" and saved["dataset"] == "msrvtt" and saved["split"] == "test-1ka"
    assert saved["num_queries"] == saved["num_gallery"] == 2  # jsfusion test: video8, video9, one query each
    protos = saved["protocols"]
    assert {"base", "v2t-codes", "dense", "base@best-on-test", "dense@best-on-test"} <= set(protos)
    assert protos["base"]["selection"] == "last" and protos["base@best-on-test"]["selection"] == "best-on-test"
    for name in ("base", "base@best-on-test"):
        m = protos[name]["metrics"]
        assert 0.0 <= m["t2v_R1"] <= 100.0 and 1.0 <= m["t2v_MnR"] <= 2.0
    for name in ("base", "base@best-on-test", "v2t-codes"):  # both metric families, side by side
        mmt = protos[name]["metrics_mmt"]
        assert {"t2v_R50", "t2v_GeoMean", "v2t_GeoMean"} <= set(mmt) and 0.0 <= mmt["t2v_GeoMean"] <= 100.0
    assert protos["base"]["index_bytes_per_video"] == 3 * 4  # (L + 1) x M one-byte codes
    assert saved["best_on_test"]["epoch"] in (0, 1) and saved["best_on_test"]["score"] >= 0.0
    text = saved["data"]["text"]
    assert set(text) == {"trainval", "test"} and text["trainval"]["captions"] == 8 * 3  # shufk1: every caption
    assert text["test"]["captions"] == 2 and text["test"]["max_words"] == 30 and text["test"]["captions_truncated"] == 0
    assert saved["data"]["features"]["experts"] == ["face", "ocr", "rgb", "s3d", "scene", "speech", "vggish"]
    assert saved["efficiency"]["text_gflops_per_query"] > 0 and saved["efficiency"]["video_gflops_per_clip"] > 0
    assert result_problems(saved) == []


@pytest.mark.parametrize(
    ("recipe", "queries"),
    [("hcq-mmt-l7-m32_bert_b128_50e_lsmdc", 2), ("hcq-mmt-l7-m32_bert_b32_50e_activitynet", 3)],
)
def test_lsmdc_and_activitynet_recipes_run_one_epoch(mmt_root, tmp_path, recipe, queries):
    root, vocab = mmt_root
    cfg = compose(recipe, [*tiny_mmt(root, vocab, tmp_path / "runs", epochs=1), "eval.efficiency=false"])
    runner.fit(cfg)
    record = runner.test(cfg)
    assert record["num_queries"] == record["num_gallery"] == queries
    assert record["data"]["text"]["test"]["captions"] == queries


def test_state_dict_keeps_the_hcq_head_names_and_names_the_encoders(mmt_root, tmp_path):
    root, vocab = mmt_root
    method = build_method(compose(MAIN, tiny_mmt(root, vocab, tmp_path)))
    top = {k.split(".")[0] for k in method.state_dict()}
    assert top == {"text_bert", "text_experts", "text_vlad_proj", "video_mmt", "vlad", "quantizers"}
    # the head serves both inputs: one GhostVLAD, one set of quantisers
    assert method.head.vlad is method.vlad
    batch = {"token_ids": torch.tensor([[3, 7, 8, 4, 0]]), "token_mask": torch.tensor([[1, 1, 1, 1, 0]])}
    method.eval()
    feats = method.encode_text_batch(batch)
    assert feats["codes"].shape == (1, 3, 4) and feats["levels"].shape == (1, 3, 16)


def test_mmt_method_needs_the_mmt_data_section(mmt_root, tmp_path):
    root, vocab = mmt_root
    with pytest.raises(ConfigError, match="data.mmt"):
        build_method(compose(MAIN, [*tiny_mmt(root, vocab, tmp_path), "data.mmt=null"]))


@pytest.mark.parametrize(
    ("recipe", "tau", "batch", "text_dropout", "video", "step"),
    [
        ("hcq-mmt-l7-m32_bert_b128_50e_msrvtt-1ka", 0.05, 128, 0.2, "msrvtt", (1, 0.95)),
        ("hcq-mmt-l7-m32_bert_b128_50e_msrvtt-1kb", 0.05, 128, 0.25, "msrvtt", (1, 0.95)),
        ("hcq-mmt-l7-m32_bert_b128_50e_msrvtt-full", 0.05, 128, 0.2, "msrvtt", (1, 0.95)),
        ("hcq-mmt-l7-m32_bert_b128_50e_lsmdc", 0.05, 128, 0.25, "lsmdc", (1, 0.95)),
        ("hcq-mmt-l7-m32_bert_b32_50e_activitynet", 0.07, 32, 0.2, "activitynet", (2, 0.85)),
    ],
)
def test_reference_configs(recipe, tau, batch, text_dropout, video, step):
    """spec hcq-original.md §4: optimiser, schedule, epochs x samples, tau, level weights, selection."""
    cfg = compose(recipe)
    m, o = cfg.method, cfg.optim
    assert (m.temperature, cfg.data.batch_size, m.text_dropout, m.video_bert) == (tau, batch, text_dropout, video)
    assert (m.lr_step_epochs, m.lr_gamma) == step
    assert (o.lr, o.weight_decay, list(o.betas), o.eps, o.grad_clip) == (5e-5, 0.0, [0.9, 0.999], 1e-8, 0.0)
    assert cfg.trainer.max_epochs == 50 and cfg.data.mmt.samples_per_epoch == 32000 and m.smoothing_epochs == 50
    assert (m.fine_levels, m.num_subspaces, m.num_codewords, m.cls_weight, m.vlad_weight) == (7, 32, 256, 0.125, 0.875)
    assert cfg.eval.select_on_test and cfg.trainer.precision == "16-mixed"


def test_verify_data_names_a_broken_feature_file(tmp_path, capsys):
    from vidbench.cli import main

    write_msrvtt(tmp_path / "mmt" / "MSRVTT", broken=("video9",))
    assert main(["verify-data", MAIN, f"paths.data_root={tmp_path}", "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "msrvtt/jsfusion test: 2 listed, 1 missing or malformed" in out and "video9.h5" in out
    assert main(["verify-data", MAIN, f"paths.data_root={tmp_path / 'nothing'}"]) == 1
    assert "MSRVTT.tar.gz" in capsys.readouterr().out
