"""Accuracy-against-cost scatter plots for the leaderboard (matplotlib, Agg, no pyplot state).

One figure per (table, accuracy measure, cost axis): t2v R@1 and mean(R@1, R@5, R@10) against
matching FLOPs per query and against index bytes per video, both on a log x axis, one point per
leaderboard row with error bars = std over seeds. Figures are built on a bare ``Figure`` with an
Agg canvas so plotting never touches a global backend or GUI, and written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vidbench.io import write_bytes_atomic

# (file-name token, axis label) for each cost axis; the aggregator fills PlotPoint.x per axis.
X_AXES: dict[str, str] = {
    "match_flops": "matching FLOPs per query (log)",
    "index_bytes": "index bytes per video (log)",
}
Y_MEASURES: dict[str, str] = {
    "r1": "t2v R@1",
    "rmean": "t2v mean(R@1, R@5, R@10)",
}


@dataclass(frozen=True)
class PlotPoint:
    """One leaderboard row on one plot: its label, cost, and accuracy (mean and std over seeds)."""

    label: str
    x: float
    y: float
    y_std: float = 0.0


def scatter_png(points: Sequence[PlotPoint], *, title: str, xlabel: str, ylabel: str) -> bytes:
    """Render a labelled log-x scatter with error bars and return PNG bytes."""
    if not points:
        raise ValueError("scatter_png needs at least one point")
    bad = [p.label for p in points if not (p.x > 0 and math.isfinite(p.x))]
    if bad:
        raise ValueError(f"log x axis needs positive finite x; bad points: {', '.join(bad)}")
    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, p in enumerate(points):
        color = f"C{i % 10}"
        ax.errorbar([p.x], [p.y], yerr=[p.y_std], fmt="o", color=color, capsize=3)
        ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(5, 5), fontsize=8, color=color)
    ax.set_xscale("log")
    xs = [p.x for p in points]
    lo, hi = min(xs), max(xs)
    if lo == hi:  # a single x value would give a degenerate log range
        lo, hi = lo / 2, hi * 2
    ax.set_xlim(lo / 1.5, hi * 3)  # room on the right for labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_table_plots(
    points: dict[tuple[str, str], Sequence[PlotPoint]],
    *,
    stem: str,
    title: str,
    plots_dir: Path,
) -> list[Path]:
    """Write ``<stem>_<measure>_vs_<axis>.png`` for every (measure, axis) with at least one point.

    ``points`` maps (measure key of :data:`Y_MEASURES`, axis key of :data:`X_AXES`) to the points
    that have that cost; rows without it were already left out (and reported) by the caller.
    """
    written: list[Path] = []
    for (measure, axis), pts in sorted(points.items()):
        if not pts:
            continue
        png = scatter_png(pts, title=title, xlabel=X_AXES[axis], ylabel=Y_MEASURES[measure])
        written.append(write_bytes_atomic(plots_dir / f"{stem}_{measure}_vs_{axis}.png", png))
    return written
