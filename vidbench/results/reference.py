"""Paper-reported numbers as data (``results/reference/papers.csv``) and how runs are matched to them.

One CSV row = one (paper, method_label, backbone, dataset, split, protocol, direction) with R1, R5,
R10, R50, MdR, MnR (empty = not reported / NOT FOUND), optional ``mean_R`` (mean of R@1/5/10),
``flops_per_match`` and ``bytes_per_video`` for efficiency figures, and provenance:

- ``source``: the spec's provenance code, e.g. ``[R] DRL README``, ``[M] recollection``,
  ``[I] C4C#25``, ``[README:H]``, ``[fig1:E] digitised``;
- ``source_tag``: ``verified`` only when every filled cell of the row comes from a verified source
  ([R], [I], [V], a repo README, or verified paper text); any cell from [M], [P], a digitised figure
  or marked UNVERIFIED makes the whole row ``unverified``;
- ``R1_tag``: the tag of the R@1 cell alone (the leaderboard only shows R@1, which is often better
  sourced than the rest of its row);
- ``note``: caveats, including ``NOT FOUND`` for numbers that could not be retrieved.

Matching rule (:func:`match_reference`): a run matches a row when method_label, backbone, dataset,
split, protocol and direction are all equal (exact, case-sensitive strings). When several rows
match (e.g. the DRL README re-run and the DRL paper row), the one whose R@1 is verified wins, then
the one with more filled metric cells, then the earlier row in the file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vidbench.errors import AnnotationError

KEY_COLUMNS: tuple[str, ...] = ("method_label", "backbone", "dataset", "split", "protocol", "direction")

# A run's backbone as result.json names it -> the name the papers' rows use for the same inputs (HCQ's table
# says "MMT experts"; our record names both encoders, contract 1 of the HCQ-MMT path).
BACKBONE_ALIASES: dict[str, str] = {"MMT experts + BERT": "MMT experts"}
METRIC_COLUMNS: tuple[str, ...] = ("R1", "R5", "R10", "R50", "MdR", "MnR")
EXTRA_NUMERIC: tuple[str, ...] = ("mean_R", "flops_per_match", "bytes_per_video")
TEXT_COLUMNS: tuple[str, ...] = ("paper", *KEY_COLUMNS, "source_tag", "R1_tag", "source", "note")
COLUMNS: tuple[str, ...] = (*TEXT_COLUMNS[:7], *METRIC_COLUMNS, *EXTRA_NUMERIC, *TEXT_COLUMNS[7:])
TAGS: tuple[str, ...] = ("verified", "unverified")
DIRECTIONS: tuple[str, ...] = ("t2v", "v2t")


def default_reference_path() -> Path:
    """``results/reference/papers.csv`` at the repository root (the package is used in-tree)."""
    return Path(__file__).resolve().parents[2] / "results" / "reference" / "papers.csv"


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """Read and check the reference table; raises :class:`AnnotationError` naming the bad row."""
    path = Path(path) if path is not None else default_reference_path()
    fix = "edit the file so it follows the columns documented in vidbench/results/reference.py"
    if not path.is_file():
        raise AnnotationError(path, "reference table not found", "pass the path of papers.csv explicitly")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, f"does not parse as CSV: {exc}", fix) from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise AnnotationError(path, f"missing columns {', '.join(missing)}", fix)
    df = df[list(COLUMNS)].copy()
    for col in TEXT_COLUMNS:
        df[col] = df[col].str.strip()
    df.loc[df["R1_tag"] == "", "R1_tag"] = df["source_tag"]
    for i, row in df.iterrows():
        line = int(i) + 2  # header is line 1
        for col in KEY_COLUMNS:
            if not row[col]:
                raise AnnotationError(path, f"line {line}: empty key column '{col}'", fix)
        if row["direction"] not in DIRECTIONS:
            raise AnnotationError(
                path, f"line {line}: direction {row['direction']!r} not in {DIRECTIONS}", fix
            )
        for col in ("source_tag", "R1_tag"):
            if row[col] not in TAGS:
                raise AnnotationError(path, f"line {line}: {col} {row[col]!r} not in {TAGS}", fix)
        if not row["source"]:
            raise AnnotationError(path, f"line {line}: empty 'source' (every number needs provenance)", fix)
    for col in (*METRIC_COLUMNS, *EXTRA_NUMERIC):
        values = pd.to_numeric(df[col].where(df[col] != ""), errors="coerce")
        bad = df[col].ne("") & values.isna()
        if bad.any():
            line = int(bad.idxmax()) + 2
            raise AnnotationError(
                path, f"line {line}: column {col} is not a number: {df.at[bad.idxmax(), col]!r}", fix
            )
        df[col] = values.astype(float)
    return df.reset_index(drop=True)


def match_reference(
    df: pd.DataFrame,
    *,
    method_label: str,
    backbone: str,
    dataset: str,
    split: str,
    protocol: str,
    direction: str,
) -> pd.Series | None:
    """The reference row for one run and direction, or None (see the module docstring for the rule; a backbone
    in :data:`BACKBONE_ALIASES` also matches rows under its alias)."""
    if backbone in BACKBONE_ALIASES:
        found = match_reference(
            df,
            method_label=method_label,
            backbone=BACKBONE_ALIASES[backbone],
            dataset=dataset,
            split=split,
            protocol=protocol,
            direction=direction,
        )
        if found is not None:
            return found
    key = {
        "method_label": method_label,
        "backbone": backbone,
        "dataset": dataset,
        "split": split,
        "protocol": protocol,
        "direction": direction,
    }
    if df.empty:
        return None
    mask = pd.Series(True, index=df.index)
    for col, value in key.items():
        mask &= df[col] == value
    hits = df[mask]
    if hits.empty:
        return None
    order = pd.DataFrame(
        {
            "unverified_r1": (hits["R1_tag"] != "verified").astype(int),
            "empty_cells": hits[list(METRIC_COLUMNS)].isna().sum(axis=1),
            "position": range(len(hits)),
        },
        index=hits.index,
    ).sort_values(["unverified_r1", "empty_cells", "position"])
    return hits.loc[order.index[0]]
