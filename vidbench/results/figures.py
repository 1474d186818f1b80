"""The data behind each figure (points, frontier, paper marks), then the PNGs (:mod:`vidbench.results.plots`).

Kept apart from the drawing so tests check the numbers that are drawn. One :class:`SplitFigure` per
dataset · split · caption policy holds every headline row as a point (set-apart rows included, drawn
faded and never on the frontier) and the paper numbers of the same methods as hollow marks, placed at
the cost the suite's formulas give the paper's own configuration (:mod:`vidbench.results.paper_costs`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vidbench.results.headline import Headline
from vidbench.results.paper_costs import GALLERY, cost_formula, paper_points
from vidbench.results.plots import (
    FigPoint,
    PaperMark,
    accuracy_cost_png,
    bytes_png,
    papers_png,
    pareto_frontier,
    write_png,
)

# The papers' own gallery sizes where the suite's synthetic or subset galleries differ from them.
PAPER_GALLERY = {("msrvtt", "test-1ka"): 1000, ("msrvtt", "test-1kb"): 1000}
PAPERS_FIGURE = "papers_msrvtt_test-1ka_r1_vs_match_flops.png"


@dataclass
class SplitFigure:
    dataset: str
    split: str
    caption_policy: str | None
    stem: str
    r1: list[FigPoint] = field(default_factory=list)
    rmean: list[FigPoint] = field(default_factory=list)
    by_bytes: list[FigPoint] = field(default_factory=list)
    papers_r1: list[PaperMark] = field(default_factory=list)
    papers_rmean: list[PaperMark] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def frontier(self) -> list[FigPoint]:
        return pareto_frontier(self.r1)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _positive(x: float | None) -> bool:
    return x is not None and x > 0 and math.isfinite(x)


def _paper_marks(
    labels: dict[str, str], dataset: str, split: str, gallery: int | None, reference: pd.DataFrame | None
) -> tuple[list[PaperMark], list[PaperMark]]:
    """One hollow mark per plotted method that the reference table has a t2v R@1 for (non-transductive)."""
    if reference is None or reference.empty:
        return [], []
    n = PAPER_GALLERY.get((dataset, split), gallery)
    r1_marks, rmean_marks = [], []
    for label, backbone in labels.items():
        rows = reference[
            (reference["method_label"] == label)
            & (reference["dataset"] == dataset)
            & (reference["split"] == split)
            & (reference["direction"] == "t2v")
            & (reference["protocol"] != "dsl")
            & reference["R1"].notna()
        ]
        if rows.empty or not n:
            continue
        ranked = rows.assign(
            _own=(rows["backbone"] != backbone).astype(int),
            _b32=(rows["backbone"] != "ViT-B/32").astype(int),
            _unv=(rows["R1_tag"] != "verified").astype(int),
        ).sort_values(["_own", "_b32", "_unv"], kind="stable")
        row = ranked.iloc[0]
        x = row["flops_per_match"]
        if pd.isna(x):
            found = cost_formula(label, row["backbone"])
            if found is None:
                continue
            x = found[0](int(n))
        name = f"{label} ({row['backbone']})"
        r1_marks.append(PaperMark(name, float(x), float(row["R1"]), row["R1_tag"]))
        if not any(pd.isna(row[c]) for c in ("R1", "R5", "R10")):
            rmean_marks.append(
                PaperMark(name, float(x), float((row["R1"] + row["R5"] + row["R10"]) / 3), row["R1_tag"])
            )
    return r1_marks, rmean_marks


def build_split_figures(headlines: Sequence[Headline], reference: pd.DataFrame | None) -> list[SplitFigure]:
    figures: list[SplitFigure] = []
    for h in headlines:
        stem = "_".join(_slug(s) for s in (h.dataset, h.split))
        if sum((o.dataset, o.split) == (h.dataset, h.split) for o in headlines) > 1:
            stem += f"_cap-{_slug(h.caption_policy or 'unspecified')}"
        fig = SplitFigure(h.dataset, h.split, h.caption_policy, stem)
        labels: dict[str, str] = {}
        galleries = set()
        for item in h.rows:
            row = item.row
            name = row.display_label
            apart = item.info.set_apart or bool(getattr(row, "zero_shot", False))  # zero-shot: faded, off the frontier
            r1, r1_std = row.metrics["t2v_R1"]
            rm, rm_std = row.mean_r
            x = row.efficiency.get("match_flops_per_query")
            if _positive(x):
                fig.r1.append(FigPoint(name, item.protocol, x, r1, r1_std or 0.0, apart))
                fig.rmean.append(FigPoint(name, item.protocol, x, rm, rm_std or 0.0, apart))
            else:
                fig.omitted.append(f"{h.title}: {name} `{item.protocol}` has no positive `match_flops_per_query`")
            b = row.efficiency.get("index_bytes_per_video")
            if _positive(b):
                fig.by_bytes.append(FigPoint(name, item.protocol, b, r1, r1_std or 0.0, apart))
            else:
                fig.omitted.append(f"{h.title}: {name} `{item.protocol}` has no positive `index_bytes_per_video`")
            labels.setdefault(row.method_label, row.backbone)
            galleries.add(row.efficiency.get("gallery_size"))
        gallery = next(iter(galleries)) if len(galleries) == 1 else None
        fig.papers_r1, fig.papers_rmean = _paper_marks(
            labels, h.dataset, h.split, int(gallery) if gallery else None, reference
        )
        figures.append(fig)
    return figures


def write_split_figures(figures: Sequence[SplitFigure], plots_dir: Path) -> list[Path]:
    written: list[Path] = []
    for fig in figures:
        title = f"{fig.dataset} · {fig.split}" + (f" · {fig.caption_policy}-caption" if fig.caption_policy else "")
        if fig.r1:
            png = accuracy_cost_png(fig.r1, fig.rmean, fig.papers_r1, fig.papers_rmean, title=title)
            fig.paths.append(write_png(plots_dir / f"{fig.stem}_accuracy_vs_match_flops.png", png))
        if fig.by_bytes:
            png = bytes_png(fig.by_bytes, title=title + ": t2v R@1 against index bytes per video")
            fig.paths.append(write_png(plots_dir / f"{fig.stem}_r1_vs_index_bytes.png", png))
        written += fig.paths
    return written


def papers_marks(reference: pd.DataFrame | None) -> list[PaperMark]:
    """The papers-only figure's points: MSRVTT 1k-A t2v R@1 at the suite-computed cost for N = 1,000."""
    if reference is None or reference.empty:
        return []
    return [PaperMark(f"{p.method_label}, {p.backbone}", p.match_flops, p.r1, p.tag) for p in paper_points(reference)]


def write_papers_figure(reference: pd.DataFrame | None, plots_dir: Path) -> Path | None:
    marks = papers_marks(reference)
    if not marks:
        return None
    note = (
        f"Matching FLOPs per query from vidbench's own cost formulas at N = {GALLERY} (recipes' sizes, ViT-B/32 "
        "512-d, 7x7 patches; DRL assumes max_words = 32 valid text tokens, an upper bound). Filled: R@1 "
        "verified in a repository README; hollow: UNVERIFIED. Numbers and sources: results/reference/papers.csv."
    )
    png = papers_png(marks, title="Papers' own MSRVTT 1k-A t2v R@1 against matching cost (no runs)", note=note)
    return write_png(plots_dir / PAPERS_FIGURE, png)


__all__ = [
    "PAPERS_FIGURE",
    "SplitFigure",
    "build_split_figures",
    "papers_marks",
    "write_papers_figure",
    "write_split_figures",
]
