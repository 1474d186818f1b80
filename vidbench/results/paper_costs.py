"""Matching cost of the papers' own reported configurations, from the suite's cost formulas (no runs needed).

The papers report accuracy but not a comparable matching cost. For their MSRVTT 1k-A rows this module
computes matching FLOPs per query at N = 1,000 with the very functions the methods use for their
``match_flops``: ``CLIP4Clip.match_flops_per_query`` (a dot product per video), ``DRL.match_flops_per_query``
(token-wise products over valid positions), ``vidbench.models.eercf.match_flops`` (coarse pass plus the
re-rank of k candidates) and ``vidbench.eval.adc.adc_match_flops`` (HCQ's lookup tables and code scan).
Sizes come from the paper recipes under ``recipes/`` (frames, words, re-rank k and mix, levels, M, K) and
from the backbone (ViT-B/32: 512-d, 7 x 7 patches; HCQ's MMT heads: 512-d per level).

One assumption is stated wherever these numbers appear: a text query fills all ``max_words`` positions
(:data:`TEXT_TOKENS_ASSUMED`), an upper bound for DRL, whose cost counts valid tokens only; the other
methods do not depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pandas as pd
import torch

from vidbench.config import compose
from vidbench.eval.adc import adc_match_flops
from vidbench.methods.clip4clip import Clip4Clip as CLIP4Clip
from vidbench.methods.drl import DRL
from vidbench.models.eercf import ScoreMix
from vidbench.models.eercf import match_flops as eercf_match_flops

GALLERY = 1000
EMBED_DIM = {"ViT-B/32": 512, "ViT-B/16": 512, "MMT experts": 512}
PATCHES_PER_FRAME = {"ViT-B/32": 49, "ViT-B/16": 196}
PAPER_RECIPES = {
    "clip4clip": "clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka",
    "drl": "drl-wti-seqtransf-cdcr_vitb32_12f_b128_5e_msrvtt-9k_1ka",
    "eercf": "eercf_vitb32_12f_b240_5e_msrvtt-9k_1ka",
    "hcq": "hcq-clip_vitb32_12f_b128_5e_msrvtt-9k_1ka",
}
TEXT_TOKENS_ASSUMED = "max_words"


@dataclass(frozen=True)
class PaperPoint:
    """One paper-reported number placed at the cost the suite's formula gives its configuration."""

    paper: str
    method_label: str
    backbone: str
    r1: float
    tag: str
    match_flops: float
    formula: str


def _recipe(name: str):
    return compose(PAPER_RECIPES[name], [])


def _dense(n: int, dim: int) -> float:
    video = {"video": torch.zeros(1, dim)}
    return CLIP4Clip.match_flops_per_query(SimpleNamespace(), n, {}, video)


def _drl(n: int, dim: int, interaction: str) -> float:
    cfg = _recipe("drl")
    lt, lv = int(cfg.data.max_words), int(cfg.data.max_frames)
    if interaction == "dp":
        return DRL.match_flops_per_query(SimpleNamespace(interaction="dp"), n, {}, {"video": torch.zeros(1, dim)})
    text = {"mask": torch.ones(1, lt)}
    video = {"frames": torch.zeros(1, lv, dim), "mask": torch.ones(1, lv)}
    return DRL.match_flops_per_query(SimpleNamespace(interaction=interaction), n, text, video)


def _eercf(n: int, dim: int, backbone: str) -> float:
    m = _recipe("eercf")
    mix = ScoreMix.from_mapping(dict(m.method.rerank_mix))
    return eercf_match_flops(n, int(m.method.rerank_k), dim, int(m.data.max_frames), PATCHES_PER_FRAME[backbone], mix)


def _hcq(n: int, dim: int, subspaces: int | None) -> float:
    m = _recipe("hcq").method
    levels = int(m.fine_levels) + 1
    return adc_match_flops(n, levels, int(subspaces or m.num_subspaces), int(m.num_codewords), dim)


def cost_formula(method_label: str, backbone: str) -> tuple[Callable[[int], float], str] | None:
    """(N -> matching FLOPs per query, a short description) for a paper row's label, or None if unknown."""
    dim = EMBED_DIM.get(backbone)
    if dim is None:
        return None
    if re.fullmatch(r"CLIP4Clip \((meanP|seqTransf)\)", method_label):
        return (lambda n: _dense(n, dim)), "2·N·D (one dot product per video)"
    m = re.fullmatch(r"DRL \((DP|TI|WTI)\+[^)]*\)", method_label)
    if m:
        kind = m.group(1).lower()
        desc = "2·N·D" if kind == "dp" else "2·D·L_t·L_v·N (token-wise, L_t = max_words)"
        return (lambda n: _drl(n, dim, kind)), desc
    if method_label == "EERCF" and backbone in PATCHES_PER_FRAME:
        return (lambda n: _eercf(n, dim, backbone)), "2·N·D + k · per-candidate re-rank (k = 50)"
    m = re.fullmatch(r"HCQ(?: \(M=(\d+)\))?", method_label)
    if m:
        subspaces = int(m.group(1)) if m.group(1) else None
        return (lambda n: _hcq(n, dim, subspaces)), "ADC: lookup tables + N·(L+1)·M table reads"
    return None


def paper_points(reference: pd.DataFrame, *, dataset: str = "msrvtt", split: str = "test-1ka") -> list[PaperPoint]:
    """Every t2v R@1 of ``dataset``/``split`` in the reference table whose method has a known cost formula."""
    rows = reference[
        (reference["dataset"] == dataset)
        & (reference["split"] == split)
        & (reference["direction"] == "t2v")
        & reference["R1"].notna()
    ]
    points: list[PaperPoint] = []
    seen: set[tuple] = set()
    for _, row in rows.iterrows():
        found = cost_formula(row["method_label"], row["backbone"])
        if found is None:
            continue
        fn, desc = found
        # one point per paper, backbone and (R@1, cost): "HCQ" and "HCQ (M=32)" are the same result
        key = (row["paper"], row["method_label"], row["backbone"])
        same = (row["backbone"], float(row["R1"]), float(fn(GALLERY)))
        if key in seen or same in seen:
            continue
        seen.update({key, same})
        points.append(
            PaperPoint(
                paper=str(row["paper"]).split(" (")[0],
                method_label=row["method_label"],
                backbone=row["backbone"],
                r1=float(row["R1"]),
                tag=row["R1_tag"],
                match_flops=float(fn(GALLERY)),
                formula=desc,
            )
        )
    return points


__all__ = ["GALLERY", "PaperPoint", "cost_formula", "paper_points"]
