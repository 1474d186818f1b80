"""vidbench encode / search / index on the synthetic benchmark: exact to the test protocol, resumable, DDP-safe."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from vidbench import runner
from vidbench.cli import main
from vidbench.config import compose
from vidbench.data.datasets import load_split
from vidbench.methods import base as base_module
from vidbench.serve import store as st
from vidbench.serve.encode import encode
from vidbench.serve.search import Searcher

RECIPES = {
    "clip4clip": "clip4clip-meanp_tiny_8f_b64_synth-msrvtt",
    "drl": "drl-wti-seqtransf-cdcr_tiny_8f_b64_synth-msrvtt",
    "eercf": "eercf_tiny_8f_b64_synth-msrvtt",
    "hcq": "hcq-clip_tiny_8f_b64_synth-msrvtt",
}


def _cfg(name: str, synth: Path, tmp: Path, extra: tuple[str, ...] = ()):
    return compose(
        RECIPES[name],
        [*TINY, f"paths.synth_root={synth}", f"paths.runs_dir={tmp / 'runs'}", "eval.efficiency=false",
         # one recorded score matrix per protocol: no shuffled-caption control or QB-Norm bank scoring
         "eval.shuffle_control=false", "eval.qbnorm=false", "eval.sinkhorn=false", *extra],
    )


def _split_list(cfg, out: Path) -> tuple[Path, list[str]]:
    """A CSV of the test split's videos in split order, and the split's captions."""
    index = load_split(cfg.data.dataset, cfg.data.root, cfg.data.test_split, video_root=cfg.data.video_root)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "start", "end"])
        for v in index.videos:
            w.writerow([v.video_id, v.path, v.start_s or "", v.end_s or ""])
    return out, list(index.captions)


def _test_matrices(cfg, monkeypatch) -> dict[str, torch.Tensor]:
    """The score matrix of every protocol as `vidbench test` computes it (zero-shot, seeded)."""
    seen: list[torch.Tensor] = []
    real = base_module.chunked_scores

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(base_module, "chunked_scores", recording)
    runner.test(cfg, ckpt=None)
    monkeypatch.setattr(base_module, "chunked_scores", real)
    names = _protocol_names(cfg)
    assert len(seen) == len(names), (len(seen), names)
    return dict(zip(names, seen, strict=True))


def _protocol_names(cfg) -> list[str]:
    """Protocol names in the order on_test_epoch_end scores them (read from the result record)."""
    run = runner.zero_shot_run_name(cfg.run.name)  # test --zero-shot writes to its own run directory
    record = json.loads((Path(cfg.paths.runs_dir) / run / f"seed{cfg.run.seed}" / "result.json").read_text())
    post = ("dsl", "sinkhorn", "qbnorm")  # post-processing of a scored matrix, not a scoring of its own
    return [k for k in record["protocols"] if k not in post and not any(k.endswith("+" + p) for p in post)]


def _ranking(scores: torch.Tensor) -> torch.Tensor:
    return torch.argsort(scores, dim=1, descending=True, stable=True)


@pytest.mark.parametrize("name", list(RECIPES))
def test_store_search_ranks_exactly_as_the_test_protocol(name, small_synth, tmp_path, monkeypatch):
    extra = ("method.two_stage_k=4",) if name == "drl" else ()  # DRL's tagged two-stage protocol too
    cfg = _cfg(name, small_synth, tmp_path, extra)
    matrices = _test_matrices(cfg, monkeypatch)
    if name == "drl":
        assert "two-stage@4" in matrices
        exact, two = _ranking(matrices["base"]), _ranking(matrices["two-stage@4"])
        assert torch.equal(two[:, 0], torch.argmax(matrices["two-stage@4"], 1))
        assert not torch.equal(exact, two)  # the recall stage changes the tail of the ranking
    videos, captions = _split_list(cfg, tmp_path / "videos.csv")
    store = tmp_path / "store"
    manifest = encode(cfg, videos, store)
    assert manifest["counts"]["encoded"] == 16 and manifest["counts"]["failed"] == 0
    for proto, expected in matrices.items():
        searcher = Searcher(store, protocol=proto)
        got = searcher.scores(searcher.encode_text(captions))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(_ranking(got), _ranking(expected)), f"{name}/{proto}: ranking differs from the test"
    hits = Searcher(store).search(captions[:3], k=5)
    assert [len(h.hits) for h in hits] == [5, 5, 5] and all(h.ms > 0 for h in hits)


def test_resume_encodes_nothing_twice_and_a_corrupt_video_is_counted(small_synth, tmp_path):
    cfg = _cfg("clip4clip", small_synth, tmp_path)
    videos, _ = _split_list(cfg, tmp_path / "videos.csv")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with videos.open("a", newline="") as f:
        csv.writer(f).writerow(["broken", broken, "", ""])
    store = tmp_path / "store"
    first = encode(cfg, videos, store, shard_size=4)
    assert first["counts"] == {"videos": 17, "encoded": 16, "failed": 1, "skipped_as_done": 0, "encoded_now": 17}
    table = st.read_table(store)
    bad = [r for r in table if r["id"] == "broken"]
    assert bad[0]["status"] == "failed" and bad[0]["error"] and bad[0]["row"] == -1
    feats = st.load_features(store, table)
    assert feats["video"].shape[0] == 16  # no vector for the corrupt file, zero or otherwise
    assert bool((feats["video"].norm(dim=1) > 0).all())
    # an interruption: two shards lost, the table not yet written
    shards = st.shard_files(store)
    lost = {r["id"] for p in shards[:2] for r in st.shard_rows(p)}
    for p in shards[:2]:
        p.unlink()
    (store / "videos.parquet").unlink()
    second = encode(cfg, videos, store, shard_size=4)
    assert second["counts"]["encoded_now"] == len(lost) and second["counts"]["skipped_as_done"] == 17 - len(lost)
    ids = [r["id"] for p in st.shard_files(store) for r in st.shard_rows(p)]
    assert len(ids) == len(set(ids)) == 17  # every video exactly once across the shards
    resumed = st.load_features(store, st.read_table(store))
    torch.testing.assert_close(resumed["video"], feats["video"])  # the same vectors in the same order
    third = encode(cfg, videos, store, shard_size=4)
    assert third["counts"]["encoded_now"] == 0


def test_cli_search_json_tsv_html_and_index(small_synth, tmp_path, capsys):
    cfg = _cfg("hcq", small_synth, tmp_path)
    videos, captions = _split_list(cfg, tmp_path / "videos.csv")
    store = tmp_path / "store"
    args = [*TINY, f"paths.synth_root={small_synth}"]
    assert main(["encode", RECIPES["hcq"], "--videos", str(videos), "--out", str(store), *args]) == 0
    manifest = st.read_manifest(store)
    assert manifest["recipe"] == RECIPES["hcq"] and manifest["checkpoint"] is None and manifest["vidbench_version"]
    capsys.readouterr()
    page = tmp_path / "results.html"
    assert main(["search", str(store), captions[0], "-k", "3", "--json", "--html", str(page)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert line["query"] == captions[0] and len(line["results"]) == 3
    from PIL import Image

    images = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", page.read_text())
    assert len(images) == 3
    for data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()
        assert img.size[0] == 4 * img.size[1]  # a strip of four square frames
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(captions[:4]) + "\n")
    assert main(["search", str(store), "--queries", str(queries), "-k", "2"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.strip().splitlines()]
    assert len(rows) == 8 and {r[0] for r in rows} == {"0", "1", "2", "3"}
    exact = Searcher(store)
    adc = exact.scores(exact.encode_text(captions))
    row_of = {r["id"]: i for i, r in enumerate(exact.ok)}
    assert main(["index", str(store), "--kind", "pq"]) == 0
    via_pq = Searcher(store, index="pq").search(captions, k=5)
    top = torch.topk(adc, 5, dim=1).values
    for q, res in enumerate(via_pq):  # the PQ index holds the store's own codes: the ADC scores and top-k
        got = torch.tensor([h.score for h in res.hits])
        torch.testing.assert_close(got, top[q], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, adc[q, [row_of[h.video_id] for h in res.hits]], rtol=1e-5, atol=1e-5)


def test_search_stops_when_memory_is_short(small_synth, tmp_path, monkeypatch):
    cfg = _cfg("clip4clip", small_synth, tmp_path)
    videos, _ = _split_list(cfg, tmp_path / "videos.csv")
    store = tmp_path / "store"
    encode(cfg, videos, store)
    monkeypatch.setattr(st, "memory_available", lambda: 1000)
    with pytest.raises(Exception, match=r"needs 0\.00 GiB in memory; this machine has 0\.00 GiB"):
        Searcher(store)


@pytest.mark.rehearsal  # two processes importing Lightning: ~30 s idle, minutes on a busy 2-core box
def test_two_process_ddp_encode_covers_each_video_once(small_synth, tmp_path):
    cfg = _cfg("clip4clip", small_synth, tmp_path)
    videos, _ = _split_list(cfg, tmp_path / "videos.csv")
    store = tmp_path / "store"
    overrides = [o for o in TINY if not o.startswith("trainer.devices")]
    cmd = [
        sys.executable,
        "-m",
        "vidbench.cli",
        "encode",
        RECIPES["clip4clip"],
        "--videos",
        str(videos),
        "--out",
        str(store),
        "--shard-size",
        "3",
        *overrides,
        f"paths.synth_root={small_synth}",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    per_rank: dict[str, list[str]] = {}
    for p in st.shard_files(store):
        per_rank.setdefault(p.name[:7], []).extend(r["id"] for r in st.shard_rows(p))
    assert sorted(per_rank) == ["rank000", "rank001"]
    everything = per_rank["rank000"] + per_rank["rank001"]
    assert len(everything) == len(set(everything)) == 16
    assert st.read_manifest(store)["world_size"] == 2
    single = tmp_path / "single"
    encode(cfg, videos, single)
    torch.testing.assert_close(
        st.load_features(store, st.read_table(store))["video"],
        st.load_features(single, st.read_table(single))["video"],
        rtol=1e-5,
        atol=1e-6,
    )
