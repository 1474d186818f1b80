"""``vidbench search``: text queries against a store, scored by the method's own test-time protocol.

The store's manifest names the recipe config and checkpoint; the same text encoder encodes the queries, and
the scores come from ``method.protocols(...)`` through the same chunked scorer ``vidbench test`` uses, so a
store of a test split ranks exactly as that split's ``test`` score matrix. With ``index=KIND`` the query goes
to the FAISS index ``vidbench index`` built instead (approximate unless the kind is exact for the method).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from vidbench.data.text import build_tokenizer, tokenize
from vidbench.errors import VidbenchError
from vidbench.eval.retrieval import chunked_scores

from . import store as st
from .encode import load_method


@dataclass
class Hit:
    rank: int
    video_id: str
    path: str
    score: float


@dataclass
class QueryResult:
    query: str
    hits: list[Hit]
    ms: float  # this query's share of its batch's wall time (text encoding + scoring + top-k)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "ms": round(self.ms, 3), "results": [h.__dict__ for h in self.hits]}


class Searcher:
    """A loaded store and its method, ready to answer queries."""

    def __init__(self, store: str | Path, *, protocol: str = "base", index: str | None = None, ckpt: str | None = None):
        self.store = Path(store)
        self.manifest = st.read_manifest(self.store)
        if not self.manifest.get("complete"):
            raise VidbenchError(f"{store}: the encode did not finish; run the same `vidbench encode` again to resume")
        self.cfg = OmegaConf.create(self.manifest["config"])
        self.protocol, self.index_kind = protocol, index
        index_path = self.store / f"index-{index}.faiss" if index else None
        if index_path is not None and not index_path.is_file():
            raise VidbenchError(f"{index_path} does not exist; build it with `vidbench index {store} --kind {index}`")
        needed = index_path.stat().st_size if index_path is not None else st.feature_bytes(self.store)
        st.require_memory(
            needed,
            f"the {'index ' + index if index else 'exact store'} of {self.store}",
            f"Build a compact index (`vidbench index {store} --kind pq`, or fastscan) and search with --index.",
        )
        self.table = st.read_table(self.store)
        self.ok = [r for r in self.table if r["status"] == "ok"]
        if not self.ok:
            raise VidbenchError(f"{store}: no video was encoded ({len(self.table)} failed); see videos.parquet")
        self.method, _ = load_method(self.cfg, self._checkpoint(ckpt))
        self.tokenizer = build_tokenizer(self.cfg.model.tokenizer or self.cfg.model.clip)
        if index_path is not None:
            from .index import load_index

            self.index = load_index(self.store, index)
            self.video = None
        else:
            self.video = st.load_features(self.store, self.table)
        self.encode_text(["warm-up"])  # first-call set-up stays out of the time per query

    def _checkpoint(self, override: str | None) -> str | None:
        info = self.manifest.get("checkpoint")
        if info is None:
            return override
        path = Path(override or info["path"])
        if not path.is_file():
            raise VidbenchError(
                f"the store was encoded with checkpoint {info['path']} (sha256 {info['sha256'][:12]}...), which is "
                "not there; pass --ckpt PATH to the same file"
            )
        from vidbench.reference_ckpt import sha256_file

        if override and sha256_file(path) != info["sha256"]:
            raise VidbenchError(f"--ckpt {path}: sha256 differs from the store's checkpoint {info['sha256'][:12]}...")
        return str(path)

    @torch.no_grad()
    def encode_text(self, queries: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = tokenize(self.tokenizer, queries, self.cfg.data.max_words)
        feats = self.method.encode_text(ids, mask)
        return {k: v.float() if v.is_floating_point() else v for k, v in feats.items()}

    @torch.no_grad()
    def scores(self, text: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[n_query, n_video]`` scores of the chosen protocol, chunked exactly as ``vidbench test`` does."""
        protos = {p.name: p for p in self.method.protocols(text, self.video)}
        if self.protocol not in protos:
            raise VidbenchError(f"protocol {self.protocol!r} is not one of this method's: {', '.join(protos)}")
        proto = protos[self.protocol]
        e = self.cfg.eval
        n_video = next(iter(self.video.values())).shape[0]
        return chunked_scores(
            proto.score,
            text,
            self.video,
            budget_bytes=e.budget_mb * 2**20,
            bytes_per_pair=proto.bytes_per_pair,
            text_chunk=e.text_chunk,
            video_chunk=n_video if proto.whole_gallery else e.video_chunk,
            out_device=torch.device("cpu"),
        )

    def search(self, queries: list[str], k: int = 10, batch: int = 64) -> list[QueryResult]:
        out: list[QueryResult] = []
        k = max(1, min(k, len(self.ok)))
        for s in range(0, len(queries), batch):
            chunk = queries[s : s + batch]
            start = time.perf_counter()
            text = self.encode_text(chunk)
            if self.video is not None:
                top = torch.topk(self.scores(text), k, dim=1)
                values, ids = top.values, top.indices
            else:
                from .index import search_index

                values, ids = search_index(self.index, self.method, text, k)
            ms = (time.perf_counter() - start) * 1000 / len(chunk)
            for q, row_v, row_i in zip(chunk, values.tolist(), ids.tolist(), strict=True):
                hits = [
                    Hit(r + 1, self.ok[i]["id"], self.ok[i]["path"], float(v))
                    for r, (v, i) in enumerate(zip(row_v, row_i, strict=True))
                    if i >= 0
                ]
                out.append(QueryResult(q, hits, ms))
        return out


def read_queries(path: str | Path) -> list[str]:
    """One query per line (a .tsv file: its first column); blank lines are skipped."""
    p = Path(path)
    if not p.is_file():
        raise VidbenchError(f"--queries {p}: no such file (one query per line)")
    lines = [ln.split("\t")[0].strip() if p.suffix == ".tsv" else ln.strip() for ln in p.read_text().splitlines()]
    queries = [q for q in lines if q]
    if not queries:
        raise VidbenchError(f"--queries {p}: the file holds no query")
    return queries
