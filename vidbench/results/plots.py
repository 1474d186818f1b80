"""The leaderboard's pictures: accuracy against matching cost, one figure per dataset · split.

- ``<dataset>_<split>_accuracy_vs_match_flops.png``: two panels (t2v R@1; mean of t2v R@1/5/10) against
  matching FLOPs per query on a log axis, every (method, protocol) as a point with the std over seeds as
  error bars, the Pareto frontier (no other point is both cheaper and more accurate) as a step line, and
  the papers' reported numbers as hollow markers where the reference table has them;
- ``<dataset>_<split>_r1_vs_index_bytes.png``: t2v R@1 against index bytes per video, same points;
- ``papers_msrvtt_1ka_r1_vs_match_flops.png``: the papers' own MSRVTT 1k-A numbers at the matching cost
  the suite's formulas give their configurations at N = 1,000 (needs no runs).

A method keeps its colour in every figure (a fixed table for the four papers' methods, a checksum of the
label otherwise); the marker says the protocol. Figures are built on a bare ``Figure`` with an Agg canvas
(no pyplot state) and written atomically. The point lists are plain data, so tests check them, not pixels.
"""

from __future__ import annotations

import io
import math
import textwrap
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vidbench.io import write_bytes_atomic

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_FIXED_COLOURS = {
    "CLIP4Clip (meanP)": "#1f77b4",
    "CLIP4Clip (seqTransf)": "#17becf",
    "DRL": "#ff7f0e",
    "EERCF": "#2ca02c",
    "HCQ": "#d62728",
}
_MARKERS = {"base": "o", "rerank": "^", "dense": "s", "v2t-codes": "v", "faiss": "P", "dsl": "D"}


def method_colour(label: str) -> str:
    """The same colour for a method in every figure: fixed for the papers' methods, a checksum otherwise."""
    if label in _FIXED_COLOURS:
        return _FIXED_COLOURS[label]
    for prefix, colour in _FIXED_COLOURS.items():
        if label.startswith(prefix):
            return colour
    return _PALETTE[zlib.crc32(label.encode("utf-8")) % len(_PALETTE)]


def protocol_marker(protocol: str) -> str:
    for prefix, marker in _MARKERS.items():
        if protocol.startswith(prefix):
            return marker
    return "X"


@dataclass(frozen=True)
class FigPoint:
    """One (method, protocol) row of a dataset · split: cost and accuracy (mean and std over seeds)."""

    method: str
    protocol: str
    x: float
    y: float
    y_std: float = 0.0
    set_apart: bool = False  # transductive or oracle: drawn, never on the frontier

    @property
    def label(self) -> str:
        return self.method if self.protocol == "base" else f"{self.method} · {self.protocol}"


@dataclass(frozen=True)
class PaperMark:
    """A paper-reported number drawn as a hollow marker."""

    label: str
    x: float
    y: float
    tag: str


def pareto_frontier(points: Sequence[FigPoint]) -> list[FigPoint]:
    """Points no other point beats on both cost (lower x) and accuracy (higher y), by increasing x.

    Set-apart points (transductive, oracle) are never on it. Equal x keeps the most accurate; a point
    equal in both to one already kept is dropped.
    """
    eligible = sorted((p for p in points if not p.set_apart), key=lambda p: (p.x, -p.y))
    frontier: list[FigPoint] = []
    best = -math.inf
    for p in eligible:
        if p.y > best:
            frontier.append(p)
            best = p.y
    return frontier


def _check_x(points: Sequence[FigPoint | PaperMark]) -> None:
    bad = [getattr(p, "label", "?") for p in points if not (p.x > 0 and math.isfinite(p.x))]
    if bad:
        raise ValueError(f"log x axis needs positive finite x; bad points: {', '.join(bad)}")


def _panel(ax, points: Sequence[FigPoint], papers: Sequence[PaperMark], *, xlabel: str, ylabel: str) -> None:
    for p in points:
        colour = method_colour(p.method)
        ax.errorbar(
            [p.x], [p.y], yerr=[p.y_std], fmt=protocol_marker(p.protocol), color=colour, capsize=3,
            markersize=7, alpha=0.55 if p.set_apart else 1.0, label=p.label,
        )  # fmt: skip
        ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    front = pareto_frontier(points)
    if len(front) > 1:
        xs = [p.x for p in front]
        ys = [p.y for p in front]
        ax.step(xs, ys, where="post", color="black", lw=1, ls="--", alpha=0.7, label="Pareto frontier")
    for m in papers:
        colour = method_colour(m.label)
        ax.plot([m.x], [m.y], marker="o", mfc="none", mec=colour, ms=9, ls="none")
        tag = "" if m.tag == "verified" else " (UNVERIFIED)"
        ax.annotate(f"paper: {m.label}{tag}", (m.x, m.y), textcoords="offset points", xytext=(-6, -10), fontsize=6,
                    color=colour, ha="right")  # fmt: skip
    ax.set_xscale("log")
    xs = [p.x for p in points] + [m.x for m in papers]
    lo, hi = min(xs), max(xs)
    ax.set_xlim(lo / 2, hi * 4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def accuracy_cost_png(
    r1: Sequence[FigPoint],
    rmean: Sequence[FigPoint],
    papers_r1: Sequence[PaperMark],
    papers_rmean: Sequence[PaperMark],
    *,
    title: str,
) -> bytes:
    """Two panels side by side: t2v R@1 and mean(R@1, R@5, R@10) against matching FLOPs per query."""
    if not r1:
        raise ValueError("accuracy_cost_png needs at least one point")
    _check_x([*r1, *rmean, *papers_r1, *papers_rmean])
    fig = Figure(figsize=(11, 4.6))
    FigureCanvasAgg(fig)
    xlabel = "matching FLOPs per query (log)"
    _panel(fig.add_subplot(1, 2, 1), r1, papers_r1, xlabel=xlabel, ylabel="t2v R@1 (%)")
    _panel(fig.add_subplot(1, 2, 2), rmean, papers_rmean, xlabel=xlabel, ylabel="t2v mean(R@1, R@5, R@10) (%)")
    fig.suptitle(title + "  (error bars: std over seeds; dashed: Pareto frontier; hollow: paper)", fontsize=9)
    return _png(fig)


def bytes_png(points: Sequence[FigPoint], *, title: str) -> bytes:
    """t2v R@1 against index bytes per video (log), with its own frontier."""
    if not points:
        raise ValueError("bytes_png needs at least one point")
    _check_x(points)
    fig = Figure(figsize=(6.4, 4.6))
    FigureCanvasAgg(fig)
    _panel(fig.add_subplot(1, 1, 1), points, [], xlabel="index bytes per video (log)", ylabel="t2v R@1 (%)")
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def papers_png(marks: Sequence[PaperMark], *, title: str, note: str) -> bytes:
    """The papers' own numbers against the suite-computed matching cost; hollow = UNVERIFIED."""
    if not marks:
        raise ValueError("papers_png needs at least one point")
    _check_x(marks)
    fig = Figure(figsize=(8, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    placed: list[tuple[float, float]] = []
    for m in sorted(marks, key=lambda m: (m.x, -m.y)):
        colour = method_colour(m.label)
        verified = m.tag == "verified"
        ax.plot([m.x], [m.y], marker="o", color=colour, mfc=colour if verified else "none", ms=8, ls="none")
        # labels of nearby points step downwards instead of printing over each other
        crowd = sum(abs(math.log10(m.x / x)) < 0.3 and abs(m.y - y) < 1.2 for x, y in placed)
        placed.append((m.x, m.y))
        ax.annotate(m.label + ("" if verified else " (UNVERIFIED)"), (m.x, m.y), textcoords="offset points",
                    xytext=(6, 2 - 8 * crowd), fontsize=6.5, color=colour)  # fmt: skip
    ax.set_xscale("log")
    xs = [m.x for m in marks]
    ax.set_xlim(min(xs) / 2, max(xs) * 8)
    ax.set_xlabel("matching FLOPs per query at N = 1,000 (log; the suite's cost formulas)")
    ax.set_ylabel("paper-reported t2v R@1 (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.text(0.01, 0.01, "\n".join(textwrap.wrap(note, 150)), fontsize=6.5)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_png(path: Path, png: bytes) -> Path:
    return write_bytes_atomic(path, png)


__all__ = [
    "FigPoint",
    "PaperMark",
    "accuracy_cost_png",
    "bytes_png",
    "method_colour",
    "papers_png",
    "pareto_frontier",
    "protocol_marker",
    "write_png",
]
