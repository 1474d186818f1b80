"""Stateful, DDP-synced wrapper around :func:`vidbench.eval.metrics.retrieval_metrics`.

Each rank scores its shard of the text queries against the whole gallery and calls
``update(sim_rows, query_index)``. ``compute()`` gathers every rank's rows, removes the duplicates that
``DistributedSampler`` pads the last shard with (the wrong-metrics trap of pytorch#25162), puts the rows back
in dataset order and ranks them. Keying rows by their dataset index (DRL's scatter pattern) makes the result
independent of the world size and of how the sampler split the queries.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vidbench.eval.metrics import MetricInputError, as_caption_video, mmt_retrieval_metrics, retrieval_metrics
from vidbench.eval.postprocess import POSTPROCESS_CHOICES, UnknownPostprocessError, apply_postprocess
from vidbench.eval.ranking_scores import ranking_scores, rsum

__all__ = ["RetrievalScoreboard", "assemble_query_rows"]


def assemble_query_rows(rows: Tensor, query_index: Tensor, n_text: int) -> Tensor:
    """Rows ordered by query index, one per query ``0..n_text-1``; later duplicates of an index are dropped.

    Raises:
        MetricInputError: an index is out of range, or some queries never arrived.
    """
    if rows.ndim != 2 or query_index.ndim != 1 or rows.shape[0] != query_index.shape[0]:
        raise MetricInputError(
            f"expected rows [b, n_video] and query_index [b], got {tuple(rows.shape)} and "
            f"{tuple(query_index.shape)}"
        )
    idx = query_index.to(device=rows.device, dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_text):
        raise MetricInputError(
            f"query indices must lie in [0, {n_text}) (the number of captions), got min {int(idx.min())}, "
            f"max {int(idx.max())}; pass dataset indices, not batch positions"
        )
    order = torch.sort(idx, stable=True).indices
    sorted_idx = idx[order]
    first = torch.ones_like(sorted_idx, dtype=torch.bool)
    first[1:] = sorted_idx[1:] != sorted_idx[:-1]
    if int(first.sum()) != n_text:
        present = torch.zeros(n_text, dtype=torch.bool, device=rows.device)
        present[sorted_idx] = True
        missing = torch.nonzero(~present).flatten()
        raise MetricInputError(
            f"{missing.numel()} of {n_text} text queries have no similarity row (first missing: "
            f"{missing[:5].tolist()}); every rank must update() with the dataset indices of its queries"
        )
    return rows[order[first]]


class RetrievalScoreboard(Metric):
    """Accumulates similarity rows across steps and ranks, then reports retrieval metrics.

    Args:
        caption_video: ``[n_text]`` video index of each caption (may be set later via the property).
        strict: also report the strict protocol under ``"strict/..."`` keys.
        postprocess: extra post-processing protocols to report under ``"<name>/..."`` keys, e.g. ``("dsl",)``
            (reference semantics on the post-processed scores); ``"none"`` is the unprefixed base and is
            always reported.
        postprocess_kwargs: options per post-processing name, e.g. ``{"dsl": {"temperature": 100.0}}``.
        multi_caption: the dataset's protocol flag, passed to ``retrieval_metrics`` (``None`` infers it).
        mmt: also report HCQ's metric family (``mmt_retrieval_metrics``) under ``"mmt/..."`` keys.
        summary: also report R@sum, nDCG@10 and mAP (``vidbench.eval.ranking_scores``) with the base and every
            post-processing protocol (``RSum``, ``t2v_nDCG10``, ``t2v_mAP``, ``v2t_nDCG10``, ``v2t_mAP``).
        allow_nan: reference NaN behaviour instead of raising (see ``retrieval_metrics``).
        kwargs: passed to ``torchmetrics.Metric`` (e.g. ``compute_on_cpu=True``).

    ``compute()`` returns ``{"t2v_R1": ..., "n_queries_v2t": ..., "strict/t2v_R1": ..., "dsl/t2v_R1": ...,
    "mmt/t2v_R50": ...}``.
    Every rank must call ``update`` at least once (``DistributedSampler`` guarantees it by padding).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        caption_video: Tensor | Sequence[int] | None = None,
        *,
        strict: bool = False,
        postprocess: str | Sequence[str] = (),
        postprocess_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        multi_caption: bool | None = None,
        allow_nan: bool = False,
        mmt: bool = False,
        summary: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.add_state("sim_rows", default=[], dist_reduce_fx="cat")
        self.add_state("query_index", default=[], dist_reduce_fx="cat")
        names = [postprocess] if isinstance(postprocess, str) else list(postprocess)
        unknown = [n for n in names if n not in POSTPROCESS_CHOICES]
        if unknown:
            raise UnknownPostprocessError(
                f"unknown postprocess {unknown}; choose from {', '.join(POSTPROCESS_CHOICES)}"
            )
        self.postprocess = tuple(dict.fromkeys(n for n in names if n != "none"))
        self.postprocess_kwargs = {k: dict(v) for k, v in (postprocess_kwargs or {}).items()}
        self.strict = strict
        self.mmt = mmt
        self.summary = summary
        self.postprocess_seconds: dict[str, float] = {}  # wall time of each post-processing in compute()
        self.multi_caption = multi_caption
        self.allow_nan = allow_nan
        self._caption_video: Tensor | None = None
        if caption_video is not None:
            self.caption_video = caption_video

    @property
    def caption_video(self) -> Tensor | None:
        """``[n_text]`` video index of each caption; its length fixes the number of text queries."""
        return self._caption_video

    @caption_video.setter
    def caption_video(self, value: Tensor | Sequence[int]) -> None:
        cv = as_caption_video(value).detach().cpu().clone()
        if cv.numel() == 0:
            raise MetricInputError("caption_video is empty: the split has no captions")
        self._caption_video = cv
        self._computed = None  # a cached result belongs to the previous mapping

    def update(self, sim_rows: Tensor, query_index: Tensor) -> None:
        """Add ``[b, n_video]`` similarity rows for the text queries with dataset indices ``query_index``."""
        if sim_rows.ndim != 2 or not sim_rows.is_floating_point():
            raise MetricInputError(
                "sim_rows must be a floating [b, n_video] tensor, got "
                f"{sim_rows.dtype} {tuple(sim_rows.shape)}"
            )
        if query_index.ndim != 1 or query_index.shape[0] != sim_rows.shape[0]:
            raise MetricInputError(
                f"query_index must be 1-D with one entry per row ({sim_rows.shape[0]}), got "
                f"{tuple(query_index.shape)}"
            )
        if len(self.sim_rows) and self.sim_rows[0].shape[-1] != sim_rows.shape[1]:
            earlier = self.sim_rows[0].shape[-1]
            raise MetricInputError(
                f"sim_rows has {sim_rows.shape[1]} videos but earlier updates had {earlier}; "
                "every row must score the whole gallery"
            )
        self.sim_rows.append(sim_rows.detach())
        self.query_index.append(query_index.detach().to(torch.long))

    def compute(self) -> dict[str, float]:
        """Gathered, de-duplicated, ordered rows ranked under every requested protocol."""
        if self._caption_video is None:
            raise MetricInputError(
                "RetrievalScoreboard.caption_video is not set: pass the split's caption->video mapping at "
                "construction or assign scoreboard.caption_video before compute()"
            )
        rows, index = dim_zero_cat(self.sim_rows), dim_zero_cat(self.query_index)
        if rows.numel() == 0:
            raise MetricInputError("RetrievalScoreboard.compute() called before any update() with rows")
        cv = self._caption_video
        sim = assemble_query_rows(rows, index.long(), cv.shape[0])
        common = {"multi_caption": self.multi_caption, "allow_nan": self.allow_nan}
        out = dict(retrieval_metrics(sim, cv, **common))
        if self.summary:
            out.update(self._summary(out, sim, cv, None))
        if self.strict:
            strict = retrieval_metrics(sim, cv, strict=True, **common)
            out.update({f"strict/{key}": value for key, value in strict.items()})
        if self.mmt:
            out.update({f"mmt/{key}": value for key, value in mmt_retrieval_metrics(sim, cv).items()})
        for name in self.postprocess:
            options = dict(self.postprocess_kwargs.get(name, {}))
            bank = options.pop("bank_sim", None)
            started = time.perf_counter()
            t2v_sim, v2t_sim = apply_postprocess(sim, name, caption_video=cv, bank_sim=bank, **options)
            self.postprocess_seconds[name] = time.perf_counter() - started
            post = retrieval_metrics(t2v_sim, cv, sim_v2t=v2t_sim, **common)
            if self.summary:
                post.update(self._summary(post, t2v_sim, cv, v2t_sim))
            out.update({f"{name}/{key}": value for key, value in post.items()})
        return out

    def _summary(self, metrics: dict[str, float], sim: Tensor, cv: Tensor, v2t: Tensor | None) -> dict[str, float]:
        return {"RSum": rsum(metrics), **ranking_scores(sim, cv, sim_v2t=v2t, multi_caption=self.multi_caption)}
