"""Turn every ``result.json`` under a runs folder into a leaderboard, a flat CSV and cost plots.

Rules the output keeps (they are what makes the numbers comparable):
- a headline table per dataset · split first (:mod:`vidbench.results.headline`): every method's main
  numbers and cost, one row per retrieval procedure (protocol), transductive and oracle rows set apart;
- below it the full tables, one per (dataset, split, protocol, caption policy), so two protocols never
  share a column, each split by theme (accuracy, cost, provenance) to stay within a screen's width;
- one row per (method_label, backbone, recipe, checkpoint origin), mean ± sample std (ddof=1) over seeds;
- the paper column shows the reference t2v R@1 with its provenance tag, and Δ = ours − paper;
- links only to files that travel with the leaderboard (:mod:`vidbench.results.links`);
- a broken or incomplete result file is listed with its reason and never stops the aggregation.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from vidbench.errors import ConfigError
from vidbench.io import write_text_atomic
from vidbench.results.figures import SplitFigure, build_split_figures, write_papers_figure, write_split_figures
from vidbench.results.headline import Headline, build_headlines, headline_markdown
from vidbench.results.links import recipe_link, relative_link, run_links, travels_with_git
from vidbench.results.protocols import describe_protocol
from vidbench.results.reference import load_reference, match_reference
from vidbench.results.schema import (
    CONTROL_FAILURES,
    METRIC_KEYS,
    MMT_METRIC_KEYS,
    MMT_METRIC_NAMES,
    PROTOCOL_COST_FIELDS,
    SUMMARY_METRIC_KEYS,
    result_problems,
    training_deviations,
)

RESULT_NAME = "result.json"
_METRIC_LABELS = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR"}
# Display column -> metric key, e.g. "t2v R@1" -> "t2v_R1".
METRIC_COLUMNS: dict[str, str] = {
    f"{d} {label}": f"{d}_{m}" for d in ("t2v", "v2t") for m, label in _METRIC_LABELS.items()
}
PAPER_COLUMN = "Paper t2v R@1"
CONTROLS_COLUMN = "Controls"
# The summary scores of vidbench.eval.ranking_scores, in the full tables only (the headline keeps its columns).
SUMMARY_COLUMNS: dict[str, str] = {
    "R@sum": "RSum",
    "t2v nDCG@10": "t2v_nDCG10",
    "t2v mAP": "t2v_mAP",
    "v2t nDCG@10": "v2t_nDCG10",
    "v2t mAP": "v2t_mAP",
}
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
    origin: str = "vidbench"
    method: str = "?"
    metrics_mmt: dict[str, tuple[float, float | None]] | None = None
    summary: dict[str, tuple[float, float | None]] | None = None  # R@sum, nDCG@10, mAP where every run has them
    zero_shot: bool = False  # every run is `test --zero-shot`
    control_failures: list[str] = field(default_factory=list)  # failed sanity controls, any seed
    deviations: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.record["seed"] for r in self.runs]

    @property
    def imported(self) -> bool:
        return self.origin != "vidbench"

    @property
    def display_label(self) -> str:
        """The method label, marked when the weights were imported from a reference checkpoint."""
        label = self.method_label + (f" [imported {self.origin} checkpoint]" if self.imported else "")
        label += " (zero-shot)" if self.zero_shot else ""
        return label + (" [protocol deviation: gradient accumulation]" if self.deviations else "")


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
    headlines: list[Any] = field(default_factory=list)
    figures: dict[tuple[str, str], Any] = field(default_factory=dict)

    def table(self, dataset: str, split: str, protocol: str) -> LeaderboardTable:
        """The (single) table for a dataset/split/protocol; KeyError if absent or ambiguous."""
        hits = [t for t in self.tables if (t.key.dataset, t.key.split, t.key.protocol) == (dataset, split, protocol)]
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


def checkpoint_origin(record: dict[str, Any]) -> str:
    """Who trained the weights: ``vidbench`` unless ``checkpoint.origin`` names an imported checkpoint."""
    ckpt = record.get("checkpoint")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("origin"), str):
        return ckpt["origin"]
    return "vidbench"


def _identity(run: RunResult) -> tuple:
    r = run.record
    return (
        r["method_label"],
        r.get("backbone") or "?",
        recipe_base(r["recipe"]),
        checkpoint_origin(r),
        r["dataset"],
        r["split"],
        r.get("caption_policy"),
    )


def batch_key(record: dict[str, Any]) -> tuple:
    """(global batch, accumulation) as trained: runs that differ here are different rows (accumulation changes a
    contrastive method); records without a ``training`` entry form their own group."""
    t = record.get("training")
    if not isinstance(t, dict):
        return (None, None)
    return (t.get("global_batch"), t.get("accumulate_grad_batches"))


def _drop_duplicates(runs: list[RunResult]) -> tuple[list[RunResult], list[str]]:
    seen: dict[tuple, RunResult] = {}
    kept: list[RunResult] = []
    notes: list[str] = []
    for run in runs:
        key = (*_identity(run), batch_key(run.record), run.record["seed"])
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


def paper_cell(paper: pd.Series | None) -> str:
    """``"47.6 (verified)"``, ``"43.1 (UNVERIFIED)"``, ``NOT FOUND`` / ``not reported``, or ``—`` (no row)."""
    if paper is None:
        return EMPTY
    if pd.isna(paper["R1"]):
        return "NOT FOUND" if "NOT FOUND" in str(paper["note"]) else "not reported"
    tag = "verified" if paper["R1_tag"] == "verified" else "UNVERIFIED"
    return f"{paper['R1']:.1f} ({tag})"


_paper_cell = paper_cell


def _runs_cell(runs: Iterable[RunResult], out_dir: Path, link_runs: bool | None) -> str:
    """Seeds, with links to run folders only where they travel with the leaderboard (see links.py)."""
    parts = []
    for run in runs:
        paths = run.record.get("paths") or {}
        link = travels_with_git(run.run_dir) if link_runs is None else link_runs
        parts.append(
            run_links(run.run_dir, run.record["seed"], paths.get("config"), paths.get("logs"), out_dir, link=link)
        )
    return " · ".join(parts)


def _build_row(
    runs: list[RunResult], key: TableKey, reference: pd.DataFrame | None, out_dir: Path, link_runs: bool | None
) -> LeaderboardRow:
    runs = sorted(runs, key=lambda r: r.record["seed"])
    first = runs[0].record
    metrics = {
        k: mean_std([float(r.record["protocols"][key.protocol]["metrics"][k]) for r in runs]) for k in METRIC_KEYS
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
    row = LeaderboardRow(label, backbone, recipe_base(first["recipe"]), runs, metrics, mean_r, efficiency, paper, delta)
    row.origin = checkpoint_origin(first)
    row.method = first.get("method", "?")
    mmt = [r.record["protocols"][key.protocol].get("metrics_mmt") for r in runs]
    if all(isinstance(m, dict) for m in mmt):
        row.metrics_mmt = {k: mean_std([float(m[k]) for m in mmt]) for k in MMT_METRIC_KEYS if all(k in m for m in mmt)}
    found = [r.record["protocols"][key.protocol]["metrics"] for r in runs]
    present = [k for k in SUMMARY_METRIC_KEYS if all(k in m for m in found)]
    if present:
        row.summary = {k: mean_std([float(m[k]) for m in found]) for k in present}
    row.zero_shot = all(bool(r.record.get("zero_shot")) for r in runs)
    row.control_failures = list(dict.fromkeys(f for r in runs for f in control_failures(r.record)))
    row.deviations = sorted({d for r in runs for d in training_deviations(r.record)})
    row.cells = _row_cells(row, out_dir, link_runs)
    return row


def recorded_description(row: LeaderboardRow, protocol: str) -> str:
    """The sentence the method recorded for ``protocol`` in its result.json ("" when none: a built-in)."""
    for run in row.runs:
        text = run.record["protocols"].get(protocol, {}).get("description")
        if isinstance(text, str) and text.strip():
            return text
    return ""


_CONTROL_LABELS = {"overlap": "train/test overlap", "shuffled_captions": "shuffled captions above chance",
                   "counts": "non-standard test counts"}


def control_failures(record: dict[str, Any]) -> list[str]:
    """Short labels of the sanity controls a record failed (``controls`` of result.json)."""
    controls = record.get("controls") or {}
    return [
        label
        for name, label in _CONTROL_LABELS.items()
        if (controls.get(name) or {}).get("status") in CONTROL_FAILURES[name]
    ]


def controls_cell(runs: Sequence[RunResult]) -> str:
    """The provenance table's controls cell: ``pass`` or the failed controls."""
    if not any(r.record.get("controls") for r in runs):
        return EMPTY
    failed = list(dict.fromkeys(f for r in runs for f in control_failures(r.record)))
    return "FAIL: " + ", ".join(failed) if failed else "pass"


def _row_cells(row: LeaderboardRow, out_dir: Path, link_runs: bool | None) -> dict[str, str]:
    cells = {
        "Method": row.display_label,
        "Backbone": row.backbone,
        "Recipe": recipe_link(row.recipe, out_dir),
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
    gallery = {(r.record.get("efficiency") or {}).get("gallery_size") or r.record.get("num_gallery") for r in row.runs}
    at = f" @{gallery.pop()}" if len(gallery) == 1 and None not in gallery else ""
    cells[COST_COLUMNS[5]] = EMPTY if ms is None else f"{ms:.3g}{at}"
    cells["Runs"] = _runs_cell(row.runs, out_dir, link_runs)
    cells[CONTROLS_COLUMN] = controls_cell(row.runs)
    for col, k in SUMMARY_COLUMNS.items():
        cells[col] = format_mean_std(*row.summary[k]) if row.summary and k in row.summary else EMPTY
    cells.update(training_cells(row.runs))
    return cells


def _agreed(runs: list[RunResult], fn) -> str:
    """One display value for the row's runs: EMPTY when no run says, every distinct value otherwise."""
    values = []
    for run in runs:
        t = run.record.get("training")
        v = fn(t) if isinstance(t, dict) else None
        if v is not None and v not in values:
            values.append(v)
    return " / ".join(values) if values else EMPTY


def training_cells(runs: list[RunResult]) -> dict[str, str]:
    """The batch the runs were trained with (result.json ``training``; EMPTY for older records)."""

    def topo(t: dict) -> str | None:
        return f"{t['num_nodes']} × {t['devices_per_node']}" if "num_nodes" in t else None

    def num(key: str):
        return lambda t: None if t.get(key) is None else str(t[key])

    return {
        "Nodes × devices": _agreed(runs, topo),
        "Per-device batch": _agreed(runs, num("per_device_batch")),
        "Global batch": _agreed(runs, num("global_batch")),
        "Chunk": _agreed(runs, lambda t: "off" if "contrastive_chunk" in t and t["contrastive_chunk"] is None
                         else num("contrastive_chunk")(t)),
        "Accumulation": _agreed(runs, num("accumulate_grad_batches")),
        "Precision": _agreed(runs, num("precision")),
        "Train split": _agreed(runs, num("train_split")),
    }


# --------------------------------------------------------------------------------------------- tables


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "x"


def _group(runs: list[RunResult]) -> dict[TableKey, dict[tuple, list[RunResult]]]:
    tables: dict[TableKey, dict[tuple, list[RunResult]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        r = run.record
        ident = (*_identity(run)[:4], batch_key(r))
        for protocol in r["protocols"]:
            key = TableKey(r["dataset"], r["split"], protocol, r.get("caption_policy"))
            tables[key][ident].append(run)
    return tables


def _table_order(key: TableKey) -> tuple:
    return (key.dataset, key.split, key.protocol != "base", key.protocol, key.caption_policy or "")


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


ACCURACY_COLUMNS: tuple[str, ...] = ("Method", "Seeds", *METRIC_COLUMNS)
COST_TABLE_COLUMNS: tuple[str, ...] = ("Method", *COST_COLUMNS)
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "Method",
    "Backbone",
    "Recipe",
    PAPER_COLUMN,
    DELTA_COLUMN,
    CONTROLS_COLUMN,
    "Runs",
)
SUMMARY_TABLE_COLUMNS: tuple[str, ...] = ("Method", "Seeds", *SUMMARY_COLUMNS)
TRAINING_COLUMNS: tuple[str, ...] = (
    "Method",
    "Nodes × devices",
    "Per-device batch",
    "Global batch",
    "Chunk",
    "Accumulation",
    "Precision",
    "Train split",
)
THEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Accuracy", ACCURACY_COLUMNS),
    ("Cost", COST_TABLE_COLUMNS),
    ("Provenance", PROVENANCE_COLUMNS),
    ("Training batch", TRAINING_COLUMNS),
)


def _md_table(columns: Sequence[str], rows: Iterable[dict[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_escape(r[c]) for c in columns) + " |" for r in rows]
    return lines


def _mmt_tables(table: LeaderboardTable) -> list[str]:
    """The HCQ/MMT metric family (``metrics_mmt``) in tables of its own, one per direction."""
    rows = [r for r in table.rows if r.metrics_mmt]
    if not rows:
        return []
    lines: list[str] = []
    for d in ("t2v", "v2t"):
        names = [n for n in MMT_METRIC_NAMES if all(f"{d}_{n}" in (r.metrics_mmt or {}) for r in rows)]
        columns = ["Method", "Seeds", *(f"{d} {n.replace('R', 'R@', 1) if n[1:].isdigit() else n}" for n in names)]
        cells = []
        for r in rows:
            c = {"Method": r.display_label, "Seeds": str(len(r.runs))}
            for col, n in zip(columns[2:], names, strict=True):
                c[col] = format_mean_std(*(r.metrics_mmt or {})[f"{d}_{n}"])
            cells.append(c)
        lines += [f"MMT metric family ({d}; HCQ's own evaluation code, not comparable column for column):", ""]
        lines += [*_md_table(columns, cells), ""]
    return lines


def _table_markdown(table: LeaderboardTable, out_dir: Path) -> str:
    lines = [f"### {table.key.title}", ""]
    sentences: dict[str, list[str]] = {}
    for method, recorded in sorted({(r.method, recorded_description(r, table.key.protocol)) for r in table.rows}):
        info = describe_protocol(table.key.protocol, method=method, description=recorded)
        if method not in sentences.setdefault(info.sentence, []):
            sentences[info.sentence].append(method)
    if len(sentences) == 1:
        lines += [next(iter(sentences)), ""]
    else:
        lines += [*(f"- {', '.join(methods)}: {sentence}" for sentence, methods in sentences.items()), ""]
    for theme, columns in THEMES:
        lines += [f"{theme}:", "", *_md_table(columns, (row.cells for row in table.rows)), ""]
    if any(row.summary for row in table.rows):
        lines += [
            "Summary scores (R@sum = R@1+R@5+R@10 of both directions; nDCG@10 and mAP in %, ties as the "
            "expected value over their orders; multi-caption v2t ranks all captions, every own caption "
            "relevant):",
            "",
            *_md_table(SUMMARY_TABLE_COLUMNS, (row.cells for row in table.rows)),
            "",
        ]
    lines += _mmt_tables(table)
    deviating = [(row, d) for row in table.rows for d in row.deviations]
    if deviating:
        lines += ["Protocol deviations (rows marked above):", ""]
        lines += [f"- {row.method_label}, `{row.recipe}`: {d}" for row, d in deviating] + [""]
    sources = [row for row in table.rows if row.paper is not None]
    if sources:
        lines.append("Paper numbers:")
        for row in sources:
            p = row.paper
            tag = "verified" if p["source_tag"] == "verified" else "UNVERIFIED"
            note = f" — {p['note']}" if p["note"] else ""
            lines.append(f"- {row.method_label} ({row.backbone}): {p['paper']}, {p['source']} [row {tag}]{note}")
        lines.append("")
    if table.hardware:
        lines += ["Timings measured on: " + "; ".join(table.hardware) + ".", ""]
    return "\n".join(lines)


def _legend(tables: Sequence[LeaderboardTable]) -> list[str]:
    """One sentence per protocol (per method family where the procedure differs), deduplicated."""
    by_sentence: dict[str, list[str]] = {}
    for t in tables:
        for method, recorded in sorted({(r.method, recorded_description(r, t.key.protocol)) for r in t.rows}):
            info = describe_protocol(t.key.protocol, method=method, description=recorded)
            names = by_sentence.setdefault(info.sentence, [])
            tag = f"`{t.key.protocol}`" + (f" ({method})" if t.key.protocol.split("@best")[0] == "base" else "")
            if tag not in names:
                names.append(tag)
    return [f"- {', '.join(names)}: {sentence}" for sentence, names in by_sentence.items()]


def _data_notes(runs: Sequence[RunResult], dataset: str, split: str) -> list[str]:
    """Caption truncation and captionless ids of the test split, per recipe, where ``data.text`` reports it."""
    notes: dict[str, str] = {}
    for run in runs:
        r = run.record
        if (r["dataset"], r["split"]) != (dataset, split):
            continue
        rep = ((r.get("data") or {}).get("text") or {}).get(split)
        if not isinstance(rep, dict):
            continue
        parts = []
        if rep.get("captions_truncated"):
            parts.append(
                f"{rep['captions_truncated']} of {rep.get('captions', '?')} test captions cut at max_words = "
                f"{rep.get('max_words', '?')} ({rep.get('tokens_dropped', '?')} tokens dropped; longest "
                f"{rep.get('longest_tokens', '?')} tokens)"
            )
        if rep.get("ids_without_captions"):
            parts.append(f"{rep['ids_without_captions']} test ids without captions")
        if parts:
            notes[recipe_base(r["recipe"])] = f"- Data, `{recipe_base(r['recipe'])}`: " + "; ".join(parts) + "."
    return [notes[k] for k in sorted(notes)]


def _rows_of(table: LeaderboardTable, h: Headline) -> list[Any]:
    """The table's rows wrapped like headline items, when the table belongs to the headline's dataset · split."""
    k = table.key
    if (k.dataset, k.split, k.caption_policy) != (h.dataset, h.split, h.caption_policy):
        return []
    return [SimpleNamespace(row=row) for row in table.rows]


def indistinguishable(h: Headline) -> list[tuple[str, str]]:
    """Pairs of comparable headline rows whose t2v R@1 means differ by less than the sum of their seed stds.

    Only rows with at least two seeds can be judged; set-apart rows are not compared.
    """
    rows = [(f"{i.row.display_label} `{i.protocol}`", *i.row.metrics["t2v_R1"]) for i in h.main]
    rows = [r for r in rows if r[2] is not None]
    return [
        (a[0], b[0])
        for k, a in enumerate(rows)
        for b in rows[k + 1 :]
        if abs(a[1] - b[1]) < (a[2] or 0.0) + (b[2] or 0.0)
    ]


def indistinguishable_groups(h: Headline) -> list[list[str]]:
    """Groups of comparable headline rows whose t2v R@1 intervals (mean ± seed std) overlap, each listed once.

    Intervals are merged along the R@1 axis, so a group is a chain: every member overlaps at least one other
    (two ends of a long chain may not overlap each other). Only rows with at least two seeds are judged;
    set-apart and zero-shot rows are not compared. Groups of one are left out.
    """
    rows = [(f"{i.row.display_label} `{i.protocol}`", *i.row.metrics["t2v_R1"]) for i in h.main]
    spans = sorted((mean - std, mean + std, label) for label, mean, std in rows if std is not None)
    groups: list[list[str]] = []
    reach = float("-inf")
    for lo, hi, label in spans:
        if groups and lo < reach:
            groups[-1].append(label)
            reach = max(reach, hi)
        else:
            groups.append([label])
            reach = hi
    return [g for g in groups if len(g) > 1]


def _controls_notes(h: Headline) -> list[str]:
    """What the sanity controls say about the headline's rows: failures by name, and counts."""
    notes: list[str] = []
    seen: set[str] = set()
    counts_notes: dict[str, list[str]] = {}
    for item in h.rows:
        row = item.row
        key = f"{row.display_label} ({row.recipe})"
        if key in seen:
            continue
        seen.add(key)
        details = []
        for run in row.runs:
            c = run.record.get("controls") or {}
            for name in ("overlap", "shuffled_captions", "counts"):
                entry = c.get(name) or {}
                if entry.get("status") in CONTROL_FAILURES[name]:
                    if name == "shuffled_captions":
                        text = (
                            f"shuffled-caption t2v R@1 {entry.get('t2v_R1', float('nan')):.1f} above chance "
                            f"{entry.get('chance_R1', float('nan')):.1f} + {entry.get('tolerance', float('nan')):.1f}"
                        )
                    else:
                        text = str(entry.get("note") or entry.get("status"))
                    details.append(f"{_CONTROL_LABELS[name]}: {text} (seed {run.record['seed']})")
            counts = c.get("counts") or {}
            if counts.get("status") in ("standard", "no-standard") and counts.get("note"):
                counts_notes.setdefault(str(counts["note"]), [])
                if row.display_label not in counts_notes[str(counts["note"])]:
                    counts_notes[str(counts["note"])].append(row.display_label)
        if details:
            notes.append(f"- ⚠ Control failed, {key}: " + "; ".join(dict.fromkeys(details)) + ".")
    banks: dict[str, str] = {}
    for item in h.rows:
        if item.protocol.split("@")[0].endswith("qbnorm"):
            costs = [r.record["protocols"][item.protocol].get("postprocess_cost") or {} for r in item.row.runs]
            sizes = sorted({int(c["bank_size"]) for c in costs if "bank_size" in c})
            split = next((c.get("bank_split") for c in costs if c.get("bank_split")), "?")
            secs = [float(c["bank_seconds"]) for c in costs if "bank_seconds" in c]
            if sizes:
                size = "/".join(f"{n:,}" for n in sizes)
                took = f", encoded and scored in {statistics.fmean(secs):.2g} s" if secs else ""
                banks[item.row.display_label] = f"{size} captions of `{split}`{took}"
    if banks:
        notes.append(
            "- `qbnorm` query banks (training captions, a one-time cost not in ms/query): "
            + "; ".join(f"{k}: {v}" for k, v in banks.items())
            + "."
        )
    for note, labels in counts_notes.items():
        who = "all rows" if len(labels) == len({i.row.display_label for i in h.rows}) else ", ".join(labels)
        notes.append(f"- Query and gallery counts ({who}): {note}.")
    return notes


def _headline_section(h: Headline, fig: SplitFigure | None, report: AggregateReport) -> str:
    notes = list(_data_notes(report.runs, h.dataset, h.split))
    if any(item.row.imported for item in h.rows):
        notes.append(
            "- Rows marked *imported* evaluate a reference repository's checkpoint (`checkpoint.origin`), "
            "not weights trained by vidbench."
        )
    seeds = {len(item.row.runs) for item in h.rows}
    if seeds == {1}:
        notes.append("- One seed per row: differences smaller than a few points may be noise.")
    served = sorted({i.row.display_label for t in report.tables for i in _rows_of(t, h) if t.key.protocol == "faiss"})
    if served:
        notes.append(
            f"- `faiss` ({', '.join(served)}) serves the same codes and ranking as `base` from a FAISS index: "
            "in the full tables only."
        )
    groups = indistinguishable_groups(h)
    if groups:
        notes.append(
            "- Not separated by these seeds (t2v R@1 intervals, mean ± std, overlap along each group; no "
            "ranking within a group is implied): " + "; ".join("{" + ", ".join(g) + "}" for g in groups) + "."
        )
    notes += _controls_notes(h)
    text = headline_markdown(h, notes).rstrip("\n") + "\n\n"
    if fig is not None and fig.paths:
        links = []
        for path in fig.paths:
            rel = relative_link(path, report.out_dir)
            if path.name.endswith("_accuracy_vs_match_flops.png"):
                text += f"![{h.title}: t2v R@1 and mean R against matching FLOPs per query]({rel})\n\n"
            else:
                links.append(f"[R@1 against index bytes per video]({rel})")
        if links:
            text += "Also: " + " · ".join(links) + "\n\n"
    return text


def _header(report: AggregateReport) -> str:
    valid, skipped = len(report.runs), len(report.skipped)
    lines = [
        "# vidbench leaderboard",
        "",
        f"Generated by `vidbench aggregate` from {report.n_files} result files ({valid} valid, {skipped} "
        "skipped). Do not edit by hand: re-run the aggregator.",
        "",
        "First one headline table per dataset · split: each method's main numbers and their cost, one row per "
        "retrieval procedure (protocol), rows in a fixed order (not a ranking), and the rows that cannot be "
        "compared with the others (transductive post-processing, checkpoints picked on the test split) set "
        "apart at the bottom. Then the full tables, one per dataset · split · protocol, split into accuracy, "
        "cost and provenance. Cells are mean ± sample std (ddof=1) over seeds; a single seed shows the bare "
        "value. R@K in %, MdR/MnR are ranks (1 = best).",
        "",
        "Protocols (what is scored, what the index stores per video, whether it is transductive):",
        *_legend(report.tables),
        "",
        "Paper column: the paper-reported t2v R@1 from `results/reference/papers.csv`, matched on method "
        "label, backbone, dataset, split and protocol, with its tag: **(verified)** = read in an official "
        "repository README or verified paper text; **(UNVERIFIED)** = from recollection, a secondary source "
        "or a digitised figure; **NOT FOUND** = no number could be retrieved. Δ = ours − paper in R@1 points.",
        "",
        "Cost: matching FLOPs per query = scoring one query against the indexed gallery (plus any re-rank), "
        "each method's own accounting at the run's gallery size N; bytes per video in the retrieval index; "
        "ms/query measured at N on the hardware named under each full table; parameters and encoder GFLOPs "
        "(torch FlopCounterMode, 2 FLOPs per multiply-add, attention counted) are in the full tables.",
        "",
    ]
    return "\n".join(lines)


def _papers_section(report: AggregateReport, papers_figure: Path | None) -> str:
    if papers_figure is None:
        return ""
    rel = relative_link(papers_figure, report.out_dir)
    return "\n".join(
        [
            "## The papers' own numbers against matching cost (no runs)",
            "",
            "MSRVTT 1k-A t2v R@1 as reported (tag as in `results/reference/papers.csv`), placed at the matching "
            "FLOPs per query that vidbench's own cost formulas give each paper's configuration at N = 1,000.",
            "",
            f"![papers: MSRVTT 1k-A t2v R@1 against matching FLOPs per query]({rel})",
            "",
        ]
    )


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
    for section in ("efficiency", "data", "env", "training"):
        for k, v in (r.get(section) or {}).items():
            row[f"{section}.{k}"] = json.dumps(v) if isinstance(v, list | dict) else v
    for name, proto in sorted(r["protocols"].items()):
        row[f"{name}.postprocess"] = proto.get("postprocess")
        for k in METRIC_KEYS:
            row[f"{name}.{k}"] = proto["metrics"][k]
        for k in PROTOCOL_COST_FIELDS:
            if proto.get(k) is not None:
                row[f"{name}.{k}"] = proto[k]
        if proto.get("selection"):
            row[f"{name}.selection"] = proto["selection"]
        for k in SUMMARY_METRIC_KEYS:
            if k in proto["metrics"]:
                row[f"{name}.{k}"] = proto["metrics"][k]
        for k, v in sorted((proto.get("metrics_mmt") or {}).items()):
            row[f"{name}.mmt.{k}"] = v
    row["checkpoint.origin"] = checkpoint_origin(r)
    row["zero_shot"] = bool(r.get("zero_shot", False))
    for name, entry in sorted((r.get("controls") or {}).items()):
        if isinstance(entry, dict):
            row[f"controls.{name}.status"] = entry.get("status")
            if entry.get("note"):
                row[f"controls.{name}.note"] = entry["note"]
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(_CSV_FIXED)
    for row in rows:  # first-seen order keeps each protocol's metrics together and in METRIC_KEYS order
        columns += [c for c in row if c not in columns]
    df = pd.DataFrame(rows, columns=columns)
    write_text_atomic(path, df.to_csv(index=False))


# --------------------------------------------------------------------------------------------- entry


def _remove_stale_plots(plots_dir: Path, written: Sequence[Path]) -> list[Path]:
    """Delete this aggregator's own plots (``*_vs_*.png``) left by an earlier run and not redrawn now.

    Without this a committed ``results/plots`` keeps figures of protocols or layouts that no longer exist, and
    the README or a reader may link to them. Files of any other name are left alone.
    """
    keep = {p.resolve() for p in written}
    stale = [p for p in sorted(plots_dir.glob("*_vs_*.png")) if p.resolve() not in keep]
    for p in stale:
        p.unlink()
    return stale


def aggregate(
    runs_dir: Path,
    out_dir: Path,
    *,
    reference: pd.DataFrame | None = None,
    link_runs: bool | None = None,
) -> AggregateReport:
    """Aggregate every ``result.json`` under ``runs_dir`` into ``out_dir``.

    Writes ``leaderboard.md``, ``results.csv`` (one row per valid run) and ``plots/*.png``.
    ``reference=None`` loads the packaged ``results/reference/papers.csv``; pass an empty
    DataFrame with the same columns to show no paper numbers. ``link_runs``: link run folders
    (True), never (False), or only those git would commit (None). Prints nothing.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise ConfigError(
            f"runs directory {runs_dir} does not exist; pass the folder that holds <recipe>/seed<k>/result.json"
        )
    if reference is None:
        reference = load_reference()

    n_files, valid, skipped = _read_results(runs_dir)
    kept, duplicates = _drop_duplicates(valid)
    grouped = _group(kept)
    keys = sorted(grouped, key=_table_order)
    tables: list[LeaderboardTable] = []
    for key in keys:
        rows = [_build_row(runs, key, reference, out_dir, link_runs) for runs in grouped[key].values()]
        rows.sort(key=lambda r: (r.method_label, r.backbone, r.recipe, r.imported, r.origin))
        hardware = sorted(
            {h for row in rows for r in row.runs if (h := (r.record.get("efficiency") or {}).get("hardware"))}
        )
        stem = "_".join(_slug(s) for s in (key.dataset, key.split, key.protocol))
        tables.append(LeaderboardTable(key, rows, hardware, stem))

    headlines = build_headlines(tables)
    figures = build_split_figures(headlines, reference)
    plots_dir = out_dir / "plots"
    plots = write_split_figures(figures, plots_dir)
    papers_figure = write_papers_figure(reference, plots_dir)
    if papers_figure is not None:
        plots.append(papers_figure)
    omissions = [o for f in figures for o in f.omitted]
    stale = _remove_stale_plots(plots_dir, plots)

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
        headlines=headlines,
        figures={(f.dataset, f.split, f.caption_policy): f for f in figures},
    )
    report.plot_omissions += [
        f"removed {p.name}: a plot of an earlier aggregation that this one did not draw" for p in stale
    ]
    for table in tables:
        table.markdown = _table_markdown(table, out_dir)
    fig_by_key = report.figures
    parts = [_header(report)]
    parts += [_headline_section(h, fig_by_key.get((h.dataset, h.split, h.caption_policy)), report) for h in headlines]
    parts.append(_papers_section(report, papers_figure))
    if tables:
        parts.append("# Full tables\n")
    parts += [t.markdown for t in tables]
    parts.append(_footer(report))
    write_text_atomic(report.leaderboard_path, "\n".join(p for p in parts if p))
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
    lines.append(f"wrote {report.leaderboard_path}, {report.csv_path} and {len(report.plots)} plots in {plots_dir}")
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
    "indistinguishable_groups",
    "mean_std",
    "recipe_base",
]
