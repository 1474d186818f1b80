"""Turn every ``result.json`` under a runs folder into a leaderboard, a flat CSV and cost plots.

Rules the output keeps (they are what makes the numbers comparable):
- one table per (dataset, split, protocol, caption policy): two protocols never share a column;
- one row per (method_label, backbone, recipe), mean ± sample std (ddof=1) over its seeds;
- the paper column shows the reference t2v R@1 with its provenance tag, and Δ = ours − paper;
- a broken or incomplete result file is listed with its reason and never stops the aggregation.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vidbench.errors import ConfigError
from vidbench.io import write_text_atomic
from vidbench.results.plots import PlotPoint, write_table_plots
from vidbench.results.reference import load_reference, match_reference
from vidbench.results.schema import METRIC_KEYS, PROTOCOL_COST_FIELDS, result_problems

RESULT_NAME = "result.json"
_METRIC_LABELS = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR"}
# Display column -> metric key, e.g. "t2v R@1" -> "t2v_R1".
METRIC_COLUMNS: dict[str, str] = {
    f"{d} {label}": f"{d}_{m}" for d in ("t2v", "v2t") for m, label in _METRIC_LABELS.items()
}
PAPER_COLUMN = "Paper t2v R@1"
DELTA_COLUMN = "Δ R@1"
COST_COLUMNS: tuple[str, ...] = (
    "Params M (total / trainable)",
    "Text GFLOPs/query",
    "Video GFLOPs/clip",
    "Match GFLOPs/query",
    "Bytes/video",
    "ms/query @N",
)
COLUMNS: tuple[str, ...] = (
    "Method",
    "Backbone",
    "Recipe",
    "Seeds",
    *METRIC_COLUMNS,
    PAPER_COLUMN,
    DELTA_COLUMN,
    *COST_COLUMNS,
    "Runs",
)
EMPTY = "—"
_EFF_FIELDS: tuple[str, ...] = (
    "params_total",
    "params_trainable",
    "text_gflops_per_query",
    "video_gflops_per_clip",
    "match_flops_per_query",
    "index_bytes_per_video",
    "ms_per_query",
    "gallery_size",
)
_PLOT_X_FIELD: dict[str, str] = {
    "match_flops": "match_flops_per_query",
    "index_bytes": "index_bytes_per_video",
}
_PROTOCOL_LEGEND: dict[str, str] = {
    "base": "the papers' standard protocol, no post-processing of the similarity matrix",
    "dsl": "dual-softmax post-processing (transductive: uses all test queries at once); "
    "not comparable with base",
    "rerank@k": "two-stage retrieval: recall the top-k by the coarse score, then re-rank them (EERCF)",
}


@dataclass(frozen=True)
class SkippedFile:
    """A result file left out of the leaderboard, with every reason found."""

    path: Path
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    """One valid result file."""

    path: Path
    record: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.path.parent


@dataclass(frozen=True)
class TableKey:
    dataset: str
    split: str
    protocol: str
    caption_policy: str | None

    @property
    def title(self) -> str:
        title = f"{self.dataset} · {self.split} · protocol `{self.protocol}`"
        return title + (f" · {self.caption_policy}-caption" if self.caption_policy else "")


@dataclass
class LeaderboardRow:
    """One method/backbone/recipe in one table: per-metric (mean, std or None) and display cells."""

    method_label: str
    backbone: str
    recipe: str
    runs: list[RunResult]
    metrics: dict[str, tuple[float, float | None]]
    mean_r: tuple[float, float | None]
    efficiency: dict[str, float | None]
    paper: pd.Series | None
    delta: float | None
    cells: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return [r.record["seed"] for r in self.runs]


@dataclass
class LeaderboardTable:
    key: TableKey
    rows: list[LeaderboardRow]
    hardware: list[str]
    plot_stem: str
    markdown: str = ""


@dataclass
class AggregateReport:
    runs_dir: Path
    out_dir: Path
    n_files: int
    runs: list[RunResult]
    skipped: list[SkippedFile]
    tables: list[LeaderboardTable]
    duplicates: list[str]
    plots: list[Path]
    plot_omissions: list[str]
    leaderboard_path: Path
    csv_path: Path

    def table(self, dataset: str, split: str, protocol: str) -> LeaderboardTable:
        """The (single) table for a dataset/split/protocol; KeyError if absent or ambiguous."""
        hits = [
            t
            for t in self.tables
            if (t.key.dataset, t.key.split, t.key.protocol) == (dataset, split, protocol)
        ]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} tables for {dataset}/{split}/{protocol}")
        return hits[0]


# --------------------------------------------------------------------------------------------- reading


def _read_results(runs_dir: Path) -> tuple[int, list[RunResult], list[SkippedFile]]:
    paths = sorted(runs_dir.rglob(RESULT_NAME))
    runs: list[RunResult] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            skipped.append(SkippedFile(path, (f"cannot read: {exc.strerror or exc}",)))
            continue
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            skipped.append(SkippedFile(path, (f"not valid JSON ({exc})",)))
            continue
        problems = result_problems(record)
        if problems:
            skipped.append(SkippedFile(path, tuple(problems)))
        else:
            runs.append(RunResult(path, record))
    return len(paths), runs, skipped


def recipe_base(recipe: str) -> str:
    """Recipe name without a trailing seed marker (``..._seed3``, ``.../seed3``)."""
    return re.sub(r"[_\-/.]?seed\d+$", "", recipe)


def _identity(run: RunResult) -> tuple:
    r = run.record
    return (
        r["method_label"],
        r.get("backbone") or "?",
        recipe_base(r["recipe"]),
        r["dataset"],
        r["split"],
        r.get("caption_policy"),
    )


def _drop_duplicates(runs: list[RunResult]) -> tuple[list[RunResult], list[str]]:
    seen: dict[tuple, RunResult] = {}
    kept: list[RunResult] = []
    notes: list[str] = []
    for run in runs:
        key = (*_identity(run), run.record["seed"])
        if key in seen:
            notes.append(
                f"{run.path.as_posix()} repeats seed {run.record['seed']} of {run.record['recipe']}; "
                f"kept {seen[key].path.as_posix()}"
            )
            continue
        seen[key] = run
        kept.append(run)
    return kept, notes


# --------------------------------------------------------------------------------------------- numbers


def _cost(run: RunResult, protocol: str, name: str) -> float | None:
    """A cost field for one protocol: the protocol's own value wins over the run-level one."""
    proto = run.record["protocols"][protocol]
    if name in PROTOCOL_COST_FIELDS and proto.get(name) is not None:
        return float(proto[name])
    eff = run.record.get("efficiency") or {}
    value = eff.get(name)
    if name == "gallery_size" and value is None:
        value = run.record.get("num_gallery")
    return float(value) if value is not None else None


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample std (ddof=1); std is None for a single value."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def format_mean_std(mean: float, std: float | None, digits: int = 1) -> str:
    """``"42.0 ± 2.0"`` for several seeds, ``"42.0"`` for one."""
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt(value: float | None, spec: str) -> str:
    return EMPTY if value is None else format(value, spec)


def _paper_cell(paper: pd.Series | None) -> str:
    if paper is None:
        return EMPTY
    if pd.isna(paper["R1"]):
        return "NOT FOUND" if "NOT FOUND" in str(paper["note"]) else "not reported"
    tag = "verified" if paper["R1_tag"] == "verified" else "UNVERIFIED"
    return f"{paper['R1']:.1f} ({tag})"


def _link(target: Path, out_dir: Path) -> str:
    rel = Path(os.path.relpath(target, out_dir)).as_posix()
    return f"<{rel}>" if re.search(r"[\s()<>]", rel) else rel


def _runs_cell(runs: Iterable[RunResult], out_dir: Path) -> str:
    parts = []
    for run in runs:
        paths = run.record.get("paths") or {}
        links = []
        if paths.get("config"):
            links.append(f"[config]({_link(run.run_dir / paths['config'], out_dir)})")
        if paths.get("logs"):
            links.append(f"[logs]({_link(run.run_dir / paths['logs'], out_dir)})")
        if not links:
            links.append(f"[result]({_link(run.path, out_dir)})")
        parts.append(f"s{run.record['seed']}: " + " ".join(links))
    return " · ".join(parts)


def _build_row(
    runs: list[RunResult], key: TableKey, reference: pd.DataFrame | None, out_dir: Path
) -> LeaderboardRow:
    runs = sorted(runs, key=lambda r: r.record["seed"])
    first = runs[0].record
    metrics = {
        k: mean_std([float(r.record["protocols"][key.protocol]["metrics"][k]) for r in runs])
        for k in METRIC_KEYS
    }
    mean_r = mean_std(
        [
            statistics.fmean(r.record["protocols"][key.protocol]["metrics"][f"t2v_R{k}"] for k in (1, 5, 10))
            for r in runs
        ]
    )
    efficiency: dict[str, float | None] = {}
    for name in _EFF_FIELDS:
        values = [v for r in runs if (v := _cost(r, key.protocol, name)) is not None]
        efficiency[name] = statistics.fmean(values) if values else None
    label, backbone = first["method_label"], first.get("backbone") or "?"
    paper = None
    if reference is not None:
        paper = match_reference(
            reference,
            method_label=label,
            backbone=backbone,
            dataset=key.dataset,
            split=key.split,
            protocol=key.protocol,
            direction="t2v",
        )
    delta = None
    if paper is not None and not pd.isna(paper["R1"]):
        delta = metrics["t2v_R1"][0] - float(paper["R1"])
    row = LeaderboardRow(
        label, backbone, recipe_base(first["recipe"]), runs, metrics, mean_r, efficiency, paper, delta
    )
    row.cells = _row_cells(row, out_dir)
    return row


def _row_cells(row: LeaderboardRow, out_dir: Path) -> dict[str, str]:
    cells = {
        "Method": row.method_label,
        "Backbone": row.backbone,
        "Recipe": row.recipe,
        "Seeds": str(len(row.runs)),
    }
    for col, k in METRIC_COLUMNS.items():
        cells[col] = format_mean_std(*row.metrics[k])
    cells[PAPER_COLUMN] = _paper_cell(row.paper)
    if row.delta is None:
        cells[DELTA_COLUMN] = EMPTY
    else:
        unverified = row.paper is not None and row.paper["R1_tag"] != "verified"
        cells[DELTA_COLUMN] = f"{row.delta:+.1f}" + (" (vs UNVERIFIED)" if unverified else "")
    e = row.efficiency
    if e["params_total"] is None:
        cells[COST_COLUMNS[0]] = EMPTY
    else:
        trainable = "?" if e["params_trainable"] is None else f"{e['params_trainable'] / 1e6:.1f}"
        cells[COST_COLUMNS[0]] = f"{e['params_total'] / 1e6:.1f} / {trainable}"
    cells[COST_COLUMNS[1]] = _fmt(e["text_gflops_per_query"], ".3g")
    cells[COST_COLUMNS[2]] = _fmt(e["video_gflops_per_clip"], ".3g")
    match = e["match_flops_per_query"]
    cells[COST_COLUMNS[3]] = _fmt(None if match is None else match / 1e9, ".3g")
    nbytes = e["index_bytes_per_video"]
    cells[COST_COLUMNS[4]] = _fmt(nbytes, ".0f" if nbytes is not None and nbytes < 1e7 else ".3g")
    ms = e["ms_per_query"]
    gallery = {
        (r.record.get("efficiency") or {}).get("gallery_size") or r.record.get("num_gallery")
        for r in row.runs
    }
    at = f" @{gallery.pop()}" if len(gallery) == 1 and None not in gallery else ""
    cells[COST_COLUMNS[5]] = EMPTY if ms is None else f"{ms:.3g}{at}"
    cells["Runs"] = _runs_cell(row.runs, out_dir)
    return cells


# --------------------------------------------------------------------------------------------- tables


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _group(runs: list[RunResult]) -> dict[TableKey, dict[tuple, list[RunResult]]]:
    tables: dict[TableKey, dict[tuple, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        r = run.record
        ident = _identity(run)[:3]
        for protocol in r["protocols"]:
            key = TableKey(r["dataset"], r["split"], protocol, r.get("caption_policy"))
            tables[key][ident].append(run)
    return tables


def _table_order(key: TableKey) -> tuple:
    return (key.dataset, key.split, key.protocol != "base", key.protocol, key.caption_policy or "")


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _table_markdown(table: LeaderboardTable, plots: list[Path], out_dir: Path) -> str:
    lines = [f"## {table.key.title}", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_escape(row.cells[c]) for c in COLUMNS) + " |")
    lines.append("")
    sources = [row for row in table.rows if row.paper is not None]
    if sources:
        lines.append("Paper numbers:")
        for row in sources:
            p = row.paper
            tag = "verified" if p["source_tag"] == "verified" else "UNVERIFIED"
            note = f" — {p['note']}" if p["note"] else ""
            lines.append(
                f"- {row.method_label} ({row.backbone}): {p['paper']}, {p['source']} [row {tag}]{note}"
            )
        lines.append("")
    if table.hardware:
        lines.append("Timings measured on: " + "; ".join(table.hardware) + ".")
        lines.append("")
    mine = [p for p in plots if p.name.startswith(table.plot_stem + "_")]
    if mine:
        lines.append(
            "Plots: "
            + " · ".join(f"[{p.stem[len(table.plot_stem) + 1 :]}]({_link(p, out_dir)})" for p in mine)
        )
        lines.append("")
    return "\n".join(lines)


def _header(report: AggregateReport) -> str:
    protocols = sorted({t.key.protocol for t in report.tables})
    legend = dict(_PROTOCOL_LEGEND)
    for p in protocols:
        if p not in legend and not re.fullmatch(r"rerank@\d+", p):
            legend[p] = "as named by its recipe; see the recipe for the exact procedure"
    valid, skipped = len(report.runs), len(report.skipped)
    lines = [
        "# vidbench leaderboard",
        "",
        f"Generated by `vidbench aggregate` from {report.n_files} result files under "
        f"`{report.runs_dir}` ({valid} valid, {skipped} skipped). Do not edit by hand: re-run the "
        "aggregator.",
        "",
        "One table per dataset · split · evaluation protocol · caption policy; two protocols never "
        "share a column. Cells are mean ± sample std (ddof=1) over seeds; a single seed shows the "
        "bare value (Seeds = 1). R@K in %, MdR/MnR are ranks (1 = best).",
        "",
        "Protocols:",
        *(f"- `{p}`: {text}" for p, text in legend.items()),
        "",
        "Paper column: the paper-reported t2v R@1 from `results/reference/papers.csv`, matched on "
        "method label, backbone, dataset, split and protocol. **(verified)** = read in a repo README, "
        "an issue quoting the paper, or verified paper text; **(UNVERIFIED)** = from recollection, an "
        "aggregator site or a digitised figure: check it against the paper before treating it as a "
        "target; **NOT FOUND** = no number could be retrieved. Δ = ours − paper in R@1 points.",
        "",
        "Cost columns: parameters in millions; text GFLOPs per query and video GFLOPs per clip "
        "counted with torch's FlopCounterMode (2 FLOPs per multiply-add, attention counted); match "
        "GFLOPs per query = scoring one query against the cached gallery (plus any re-rank); bytes "
        "per video in the retrieval index; ms/query measured at gallery size N on the hardware "
        "listed under each table.",
        "",
    ]
    return "\n".join(lines)


def _footer(report: AggregateReport) -> str:
    lines = ["## Skipped result files", ""]
    if report.skipped:
        for s in report.skipped:
            lines.append(f"- `{s.path.as_posix()}`: " + "; ".join(s.reasons))
    else:
        lines.append("None.")
    lines.append("")
    notes = [*report.duplicates, *report.plot_omissions]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- csv + plots


_CSV_FIELDS: tuple[str, ...] = (
    "recipe",
    "method",
    "variant",
    "method_label",
    "backbone",
    "seed",
    "dataset",
    "split",
    "train_split",
    "caption_policy",
    "num_queries",
    "num_gallery",
    "config_hash",
    "git_commit",
    "git_dirty",
    "created",
    "wall_time_s",
)
_CSV_FIXED: tuple[str, ...] = ("result_path", "duplicate", *_CSV_FIELDS)


def _flat_row(run: RunResult, runs_dir: Path, duplicate: bool) -> dict[str, Any]:
    r = run.record
    row: dict[str, Any] = {"result_path": run.path.relative_to(runs_dir).as_posix(), "duplicate": duplicate}
    for k in _CSV_FIELDS:
        row[k] = r.get(k)
    for section in ("efficiency", "data", "env"):
        for k, v in (r.get(section) or {}).items():
            row[f"{section}.{k}"] = json.dumps(v) if isinstance(v, list | dict) else v
    for name, proto in sorted(r["protocols"].items()):
        row[f"{name}.postprocess"] = proto.get("postprocess")
        for k in METRIC_KEYS:
            row[f"{name}.{k}"] = proto["metrics"][k]
        for k in PROTOCOL_COST_FIELDS:
            if proto.get(k) is not None:
                row[f"{name}.{k}"] = proto[k]
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(_CSV_FIXED)
    for row in rows:  # first-seen order keeps each protocol's metrics together and in METRIC_KEYS order
        columns += [c for c in row if c not in columns]
    df = pd.DataFrame(rows, columns=columns)
    write_text_atomic(path, df.to_csv(index=False))


def _plot_points(table: LeaderboardTable) -> tuple[dict[tuple[str, str], list[PlotPoint]], list[str]]:
    labels = [row.method_label for row in table.rows]
    points: dict[tuple[str, str], list[PlotPoint]] = defaultdict(list)
    omitted: list[str] = []
    for row in table.rows:
        label = (
            row.method_label if labels.count(row.method_label) == 1 else f"{row.method_label} ({row.recipe})"
        )
        for axis, field_name in _PLOT_X_FIELD.items():
            x = row.efficiency[field_name]
            if x is None or not (x > 0 and math.isfinite(x)):
                why = "has no" if x is None else f"has a non-positive ({x})"
                omitted.append(
                    f"{table.key.title}: {label} {why} `{field_name}`; left out of its {axis} plots"
                )
                continue
            points[("r1", axis)].append(
                PlotPoint(label, x, row.metrics["t2v_R1"][0], row.metrics["t2v_R1"][1] or 0.0)
            )
            points[("rmean", axis)].append(PlotPoint(label, x, row.mean_r[0], row.mean_r[1] or 0.0))
    return points, omitted


# --------------------------------------------------------------------------------------------- entry


def aggregate(runs_dir: Path, out_dir: Path, *, reference: pd.DataFrame | None = None) -> AggregateReport:
    """Aggregate every ``result.json`` under ``runs_dir`` into ``out_dir``.

    Writes ``leaderboard.md``, ``results.csv`` (one row per valid run) and ``plots/*.png``.
    ``reference=None`` loads the packaged ``results/reference/papers.csv``; pass an empty
    DataFrame with the same columns to show no paper numbers. Prints nothing.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise ConfigError(
            f"runs directory {runs_dir} does not exist; "
            "pass the folder that holds <recipe>/seed<k>/result.json"
        )
    if reference is None:
        reference = load_reference()

    n_files, valid, skipped = _read_results(runs_dir)
    kept, duplicates = _drop_duplicates(valid)
    grouped = _group(kept)
    keys = sorted(grouped, key=_table_order)
    seen_stems: dict[tuple[str, str, str], int] = defaultdict(int)
    for key in keys:
        seen_stems[(key.dataset, key.split, key.protocol)] += 1

    tables: list[LeaderboardTable] = []
    for key in keys:
        rows = [_build_row(runs, key, reference, out_dir) for runs in grouped[key].values()]
        rows.sort(key=lambda r: (r.method_label, r.backbone, r.recipe))
        hardware = sorted(
            {h for row in rows for r in row.runs if (h := (r.record.get("efficiency") or {}).get("hardware"))}
        )
        stem = "_".join(_slug(s) for s in (key.dataset, key.split, key.protocol))
        if seen_stems[(key.dataset, key.split, key.protocol)] > 1:
            stem += f"_cap-{_slug(key.caption_policy or 'unspecified')}"
        tables.append(LeaderboardTable(key, rows, hardware, stem))

    plots: list[Path] = []
    omissions: list[str] = []
    for table in tables:
        points, omitted = _plot_points(table)
        omissions += omitted
        plots += write_table_plots(
            points, stem=table.plot_stem, title=table.key.title.replace("`", ""), plots_dir=out_dir / "plots"
        )

    kept_ids = {id(r) for r in kept}
    csv_rows = [_flat_row(r, runs_dir, id(r) not in kept_ids) for r in valid]
    report = AggregateReport(
        runs_dir=runs_dir,
        out_dir=out_dir,
        n_files=n_files,
        runs=valid,
        skipped=skipped,
        tables=tables,
        duplicates=duplicates,
        plots=plots,
        plot_omissions=omissions,
        leaderboard_path=out_dir / "leaderboard.md",
        csv_path=out_dir / "results.csv",
    )
    for table in tables:
        table.markdown = _table_markdown(table, plots, out_dir)
    text = "\n".join([_header(report), *(t.markdown for t in tables), _footer(report)])
    write_text_atomic(report.leaderboard_path, text)
    _write_csv(report.csv_path, csv_rows)
    return report


def format_report(report: AggregateReport) -> str:
    """A short plain-text summary for the CLI."""
    lines = [
        f"aggregated {report.n_files} result files under {report.runs_dir}: "
        f"{len(report.runs)} valid, {len(report.skipped)} skipped, {len(report.tables)} tables"
    ]
    for t in report.tables:
        seeds = sum(len(r.runs) for r in t.rows)
        lines.append(f"  {t.key.title.replace('`', '')}: {len(t.rows)} rows from {seeds} runs")
    plots_dir = report.out_dir / "plots"
    lines.append(
        f"wrote {report.leaderboard_path}, {report.csv_path} and {len(report.plots)} plots in {plots_dir}"
    )
    if report.skipped:
        lines.append("skipped:")
        lines += [f"  {s.path}: " + "; ".join(s.reasons) for s in report.skipped]
    if report.duplicates:
        lines.append("duplicates ignored:")
        lines += [f"  {d}" for d in report.duplicates]
    if report.plot_omissions:
        lines.append("left out of plots:")
        lines += [f"  {o}" for o in report.plot_omissions]
    return "\n".join(lines)


__all__ = [
    "AggregateReport",
    "LeaderboardRow",
    "LeaderboardTable",
    "SkippedFile",
    "TableKey",
    "aggregate",
    "format_mean_std",
    "format_report",
    "mean_std",
    "recipe_base",
]
