"""The headline table: every method's main result and its cost for one dataset · split, on one screen.

One row per (method row, protocol) where the protocol is its own retrieval procedure (EERCF's re-rank,
HCQ on codes vs dense); ``faiss`` serves the same codes and ranking as HCQ's ``base`` and stays in the full
tables. Rows that must not be ranked with the others, transductive post-processing (``dsl``) and oracle
checkpoint selection (``@best-on-test``), come last under their own label. Rows keep a fixed order
(method, then protocol): the order says nothing about which method is better.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vidbench.results.protocols import ProtocolInfo, describe_protocol

SAME_AS_BASE = ("faiss",)
COLUMNS: tuple[str, ...] = (
    "Method",
    "Protocol",
    "Seeds",
    "Batch · trained on",
    "t2v R@1",
    "t2v R@5",
    "t2v R@10",
    "t2v MdR",
    "v2t R@1",
    "Paper R@1",
    "Δ R@1",
    "Match FLOPs/query",
    "Bytes/video",
    "ms/query @N",
)
_FROM_FULL = {
    "Seeds": "Seeds",
    "t2v R@1": "t2v R@1",
    "t2v R@5": "t2v R@5",
    "t2v R@10": "t2v R@10",
    "t2v MdR": "t2v MdR",
    "v2t R@1": "v2t R@1",
    "Paper R@1": "Paper t2v R@1",
    "Δ R@1": "Δ R@1",
    "Bytes/video": "Bytes/video",
    "ms/query @N": "ms/query @N",
}


@dataclass
class HeadlineRow:
    row: Any  # aggregate.LeaderboardRow
    protocol: str
    info: ProtocolInfo
    cells: dict[str, str]


@dataclass
class Headline:
    dataset: str
    split: str
    caption_policy: str | None
    main: list[HeadlineRow]
    apart: list[HeadlineRow]
    zero_shot: list[HeadlineRow] = field(default_factory=list)  # `test --zero-shot` rows, their own group

    @property
    def title(self) -> str:
        cap = f" · {self.caption_policy}-caption" if self.caption_policy else ""
        return f"{self.dataset} · {self.split}{cap}"

    @property
    def rows(self) -> list[HeadlineRow]:
        return [*self.main, *self.zero_shot, *self.apart]


def _flops(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def batch_cell(row: Any) -> str:
    """The global batch and the training split (e.g. ``128 · train-9k``), so nobody decodes a recipe name;
    records without a ``training`` entry fall back to their ``train_split``; "—" for what is unknown."""
    batch = row.cells.get("Global batch", "—")
    split = row.cells.get("Train split", "—")
    if split == "—":
        splits = {r.record.get("train_split") for r in row.runs} - {None}
        split = " / ".join(sorted(splits)) if splits else "—"
    return f"{batch} · {split}"


def headline_cells(row: Any, protocol: str, info: ProtocolInfo, backbones: int) -> dict[str, str]:
    label = row.display_label + (f" · {row.backbone}" if backbones > 1 else "")
    flags = getattr(row, "control_failures", [])
    if flags:
        label += " ⚠ " + ", ".join(flags)
    cells = {"Method": label, "Protocol": f"`{protocol}`"}
    cells.update({col: row.cells[src] for col, src in _FROM_FULL.items()})
    cells["Match FLOPs/query"] = _flops(row.efficiency.get("match_flops_per_query"))
    cells["Batch · trained on"] = batch_cell(row)
    if info.transductive:
        cells["Protocol"] += " (transductive)"
    if info.oracle:
        cells["Protocol"] += " (oracle checkpoint)"
    if info.extra_data:
        cells["Protocol"] += " (uses training captions)"
    return cells


def build_headlines(tables: Sequence[Any]) -> list[Headline]:
    """Headlines from the aggregator's per-protocol tables, one per dataset · split · caption policy."""
    grouped: dict[tuple, list[tuple[Any, Any]]] = defaultdict(list)
    for table in tables:
        k = table.key
        grouped[(k.dataset, k.split, k.caption_policy)].append((table, k.protocol))
    out: list[Headline] = []
    for (dataset, split, policy), entries in grouped.items():
        backbones = len({row.backbone for table, _ in entries for row in table.rows})
        items: list[HeadlineRow] = []
        for table, protocol in entries:
            for row in table.rows:
                selection = {r.record["protocols"][protocol].get("selection") for r in row.runs} - {None}
                info = describe_protocol(
                    protocol,
                    method=row.method,
                    selection="best-on-test" if "best-on-test" in selection else None,
                    description=next(
                        (d for r in row.runs if (d := r.record["protocols"][protocol].get("description"))), None
                    ),
                )
                core = protocol.split("@best-on-test")[0]
                if core in SAME_AS_BASE:
                    continue
                items.append(HeadlineRow(row, protocol, info, headline_cells(row, protocol, info, backbones)))
        items.sort(
            key=lambda h: (
                h.row.method_label,
                h.row.backbone,
                h.row.recipe,
                h.row.imported,
                h.row.origin,
                h.protocol != "base",
                h.protocol,
            )
        )
        out.append(
            Headline(
                dataset,
                split,
                policy,
                [h for h in items if not h.info.set_apart and not _zero_shot(h)],
                [h for h in items if h.info.set_apart and not _zero_shot(h)],
                [h for h in items if _zero_shot(h)],
            )
        )
    out.sort(key=lambda h: (h.dataset, h.split, h.caption_policy or ""))
    return out


def _zero_shot(item: HeadlineRow) -> bool:
    return bool(getattr(item.row, "zero_shot", False))


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def headline_markdown(h: Headline, notes: Sequence[str] = ()) -> str:
    lines = [f"## {h.title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for item in h.main:
        lines.append("| " + " | ".join(_escape(item.cells[c]) for c in COLUMNS) + " |")
    blank = ["" for _ in COLUMNS[1:]]
    if h.zero_shot:
        label = "**Zero-shot: untrained by this recipe (`test --zero-shot`), not comparable with fine-tuned rows**"
        lines.append("| " + " | ".join([label, *blank]) + " |")
        for item in h.zero_shot:
            lines.append("| " + " | ".join(_escape(item.cells[c]) for c in COLUMNS) + " |")
    if h.apart:
        label = (
            "**Set apart, not comparable with the rows above: transductive, oracle-selected or using extra data**"
        )
        lines.append("| " + " | ".join([label, *blank]) + " |")
        for item in h.apart:
            lines.append("| " + " | ".join(_escape(item.cells[c]) for c in COLUMNS) + " |")
    lines.append("")
    lines += [*notes]
    if notes:
        lines.append("")
    return "\n".join(lines)


__all__ = ["COLUMNS", "Headline", "HeadlineRow", "build_headlines", "headline_markdown"]
