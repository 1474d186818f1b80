"""``vidbench index``: a FAISS serving index over a store, for collections where the exact store is too big.

What is indexed, per method (one vector, or HCQ's codes):

- CLIP4Clip, DRL (dp): the video vector; queries: the normalised text vector. ``flat`` is exact.
- EERCF: the coarse vector, queried by ``text_g`` (the method's own stage 1). ``flat`` equals its ``base``.
- DRL (WTI/TI): the mean-pooled frame tokens, queried by the mean-pooled text tokens: the *recall* stage of
  the two-stage protocol (``two-stage@k``, whose accuracy cost the test reports); the WTI re-rank needs the
  token store, so with an index only the recall ranking is returned.
- HCQ: ``pq`` is an IndexPQ holding the store's own codes and codebooks (exactly the ADC ranking); ``flat``
  the unquantised levels; ``fastscan`` a 4-bit fast-scan PQ retrained on the levels; ``ivf`` IVF-PQ.

Kinds: ``flat`` (exact inner product), ``ivf`` (IVF-Flat, ``nlist`` lists, ``nprobe`` probed), ``pq`` (8-bit
PQ), ``fastscan`` (4-bit fast-scan PQ). Each index is written atomically next to a JSON sidecar.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidbench.errors import ConfigError, VidbenchError
from vidbench.io import write_text_atomic
from vidbench.models.pooling import l2_normalize

from . import store as st

KINDS = ("flat", "ivf", "pq", "fastscan")


def _faiss():
    import faiss

    return faiss


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    from vidbench.methods.drl import mean_pooled

    return mean_pooled(tokens, mask)  # the stored tokens are already normalised and masked


def video_vectors(method_name: str, video: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> np.ndarray:
    """``[N, d]`` float32 vectors the index holds for a store's videos (see the module docstring)."""
    if "coarse" in video:
        x = video["coarse"]
    elif "video" in video:
        x = video["video"]
    elif "frames" in video:
        x = _masked_mean(video["frames"], video["mask"])
    elif "levels" in video:
        x = _hcq_scaled(video["levels"], extras)
    else:
        raise VidbenchError(f"no serving vector for {method_name} features {sorted(video)}")
    return np.ascontiguousarray(x.float().numpy())


def query_vectors(method, text: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> np.ndarray:
    """``[nq, d]`` float32 query vectors matching :func:`video_vectors`."""
    if "text_g" in text:
        x = text["text_g"]
    elif "eot" in text:
        x = text["eot"]
    elif "text" in text:
        x = l2_normalize(text["text"])
    elif "tokens" in text:
        x = _masked_mean(text["tokens"], text["mask"])
    elif "levels" in text:
        x = _hcq_scaled(text["levels"], extras)
    else:
        raise VidbenchError(f"no query vector for text features {sorted(text)}")
    return np.ascontiguousarray(x.float().numpy())


def _hcq_scaled(levels: torch.Tensor, extras: dict[str, torch.Tensor]) -> torch.Tensor:
    """Levels normalised and scaled by sqrt(w_l), concatenated: their inner product is HCQ's dense score."""
    w = extras["level_weights"].sqrt().view(1, -1, 1)
    return (l2_normalize(levels.float()) * w).reshape(levels.shape[0], -1)


def build_index(
    store: str | Path, kind: str, *, nlist: int | None = None, nprobe: int = 16, m: int | None = None
) -> Path:
    """Build the ``kind`` index of ``store`` and write ``index-<kind>.faiss`` (+ ``.json``) into it."""
    faiss = _faiss()
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    store = Path(store)
    manifest = st.read_manifest(store)
    st.require_memory(2 * st.feature_bytes(store), f"building an index of {store}", "Use a machine with more memory.")
    video = st.load_features(store, st.read_table(store))
    extras = st.read_method_tensors(store)
    info: dict[str, Any] = {"kind": kind, "recipe": manifest["recipe"], "method": manifest["method"]}
    if "codes" in video and kind == "pq":
        from vidbench.eval.adc import to_faiss_index

        index = to_faiss_index(extras["codebooks"], video["codes"])
        info["vectors"] = "HCQ codes and codebooks (exact ADC ranking)"
        info["query"] = "hcq"
    else:
        x = video_vectors(manifest["method"], video, extras)
        n, d = x.shape
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * math.sqrt(n)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            info.update(nlist=nlist)
        else:
            sub = m or _sub_quantizers(d)
            nbits = 8 if kind == "pq" else 4
            index = (faiss.IndexPQ if kind == "pq" else faiss.IndexPQFastScan)(
                d, sub, nbits, faiss.METRIC_INNER_PRODUCT
            )
            info.update(m=sub, nbits=nbits)
        if not index.is_trained:
            index.train(x)
        index.add(x)
        info["vectors"] = "dense serving vectors (see vidbench.serve.index)"
        info["query"] = "dense"
    if kind == "ivf":
        index.nprobe = nprobe
        info["nprobe"] = nprobe
    info.update(ntotal=int(index.ntotal))
    path = store / f"index-{kind}.faiss"
    tmp = store / f".index-{kind}.faiss.tmp"
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    info["bytes"] = path.stat().st_size
    write_text_atomic(store / f"index-{kind}.json", json.dumps(info, indent=2))
    return path


def _sub_quantizers(d: int) -> int:
    for m in (64, 32, 16, 8, 4, 2, 1):
        if d % m == 0 and d // m >= 2:
            return m
    return 1


class LoadedIndex:
    def __init__(self, index, info: dict[str, Any], extras: dict[str, torch.Tensor]) -> None:
        self.index, self.info, self.extras = index, info, extras


def load_index(store: str | Path, kind: str) -> LoadedIndex:
    store = Path(store)
    info = json.loads((store / f"index-{kind}.json").read_text())
    return LoadedIndex(_faiss().read_index(str(store / f"index-{kind}.faiss")), info, st.read_method_tensors(store))


def search_index(
    loaded: LoadedIndex, method, text: dict[str, torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` ``(scores, ids)`` from the index; ids are rows of the store's encoded videos."""
    if loaded.info["query"] == "hcq":
        from vidbench.eval.adc import faiss_search

        books = loaded.extras["codebooks"]
        return faiss_search(loaded.index, text["levels"], books.shape[1], loaded.extras["level_weights"], k)
    scores, ids = loaded.index.search(query_vectors(method, text, loaded.extras), k)
    return torch.from_numpy(scores), torch.from_numpy(ids)
