"""The per-run result record (``result.json``): its shape, a validator, and atomic writers.

Every run writes exactly one ``result.json`` into its run directory; ``vidbench aggregate`` reads
nothing else. Keeping the record self-describing (protocol, data policy, environment, cost) is what
lets the leaderboard refuse to put two protocols in one column and lets a reader trust a number
without the logs.

Record, schema_version 1 (``#`` marks what is optional; unknown extra keys are allowed so newer
writers stay readable)::

    {
      "schema_version": 1,
      "recipe": "clip4clip-meanp_vitb32_12f_b128_5e_msrvtt-9k_1ka",   # recipe name (no seed)
      "method": "clip4clip",           # family: clip4clip | drl | eercf | hcq | a plugin's method_name
      "variant": "meanP",              # e.g. seqTransf, WTI+seqTransf+CDCR, HCQ-on-CLIP
      "method_label": "CLIP4Clip (meanP)",   # what the leaderboard row shows
      "backbone": "ViT-B/32",          # or "tiny"
      "seed": 0,
      "config_hash": "<sha256 of the resolved config>", "git_commit": "<sha>", "git_dirty": false,
      "dataset": "msrvtt", "split": "test-1ka", "train_split": "train-9k",
      "caption_policy": "single",      # single | multi (t2v per caption, v2t by best caption)
      "num_queries": 1000, "num_gallery": 1000,
      "protocols": {                   # >= 1 entry; each is one evaluation protocol
        "base": {"postprocess": "none",
                 "metrics": {"t2v_R1": .., ..., "v2t_MnR": ..},     # all ten METRIC_KEYS (+ optional
                                                                     #  t2v_Std_Rank / v2t_Std_Rank)
                 "strict": {same ten keys},                          # optional
                 "metrics_mmt": {"t2v_R1", "t2v_R5", "t2v_R10", "t2v_R50", "t2v_MdR", "t2v_MnR",
                                 "t2v_GeoMean", "v2t_..."},         # optional: HCQ's (MMT's) metric family,
                                                                     #  never shown in a column with "metrics"
                 "match_flops_per_query": float,                     # optional override
                 "ms_per_query": float,                              # optional override
                 "index_bytes_per_video": float,                     # optional override
                 "description": str},                                # optional: the method's own sentence
                                                                     #  for the leaderboard (plugins)
        "dsl": {...}, "rerank@50": {...}
      },
      "efficiency": {"params_total": int, "params_trainable": int,
                     "text_gflops_per_query": float, "video_gflops_per_clip": float,
                     "match_flops_per_query": float, "index_bytes_per_video": float,
                     "ms_per_query": float, "gallery_size": int, "hardware": str},   # each may be null
      "data": {"missing_policy": "fail" | "skip", "skipped_videos": int,
               "skipped_ids": [str, ...], "manifest": str | null,
               "text": {"<split>": {"captions": int, "captions_truncated": int,   # optional; the max_words
                                   "tokens_dropped": int, "longest_tokens": int,   # cut per split, content
                                   "max_words": int, "ids_without_captions": int,  # tokens (SOT/EOT not
                                   "tokens": int}}},                               # counted); tokens optional
      "env": {"python": str, "torch": str, "lightning": str, "transformers": str,
              "device": str, "world_size": int, "precision": str},
      "checkpoint": {"origin": "vidbench" | "clip4clip" | "drl" | "eercf" | "hcq",   # null: zero-shot
                     "path": str, "sha256": "<64 hex>",
                     "source": {"path": str, "sha256": str}},   # optional: the file a converted one came from
                                                   # (older records hold the bare path of vidbench's checkpoint)
      "optim": {"optimizer": "bertadam" | "adamw" | "adam", "schedule": str, ...},   # optional: how vidbench
                                                   # trained the scored weights (null: zero-shot or imported)
      "zero_shot": bool,               # optional: `test --zero-shot` (untrained weights); own headline group
      "controls": {                    # optional: sanity controls run on every test (failures flagged)
        "overlap": {"status": "pass" | "fail" | "declared" | "not-checked" | "not-applicable",
                    "train_split", "shared_ids", "identical_files", "note", ...},
        "shuffled_captions": {"status": "pass" | "fail", "t2v_R1", "real_t2v_R1", "chance_R1",
                              "tolerance", "seed", "protocol"},
        "counts": {"status": "standard" | "short" | "different" | "no-standard", "queries", "gallery",
                   "standard_queries", "standard_gallery", "missing_ids", "note"}},
      "training": {"num_nodes": int, "devices_per_node": int, "world_size": int,   # optional (null: not
                   "per_device_batch": int, "global_batch": int,                 #  trained by vidbench, or
                   "contrastive_chunk": int | null,                              #  before the field existed)
                   "accumulate_grad_batches": int, "samples_per_step": int,
                   "precision": str, "train_split": str | null,
                   "deviations": [str, ...]},    # protocol deviations, e.g. gradient accumulation (> 1)
      "wall_time_s": float, "created": "ISO-8601",
      "paths": {"run_dir": "runs/<recipe>/seed0", "config": "config.yaml", "logs": "tb"}
    }

Required: schema_version, recipe, method, method_label, seed, dataset, split, protocols. Everything
else is optional but must have the documented type when present. A protocol entry may override the
run-level ``match_flops_per_query``, ``ms_per_query`` and ``index_bytes_per_video`` (a two-stage
re-rank costs more per query than the coarse pass alone); the override wins. A ``checkpoint.origin`` other than
``vidbench`` marks a run on an imported checkpoint (trained with the reference code; vidbench only tested it).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from vidbench.errors import FileProblemError
from vidbench.io import write_text_atomic

SCHEMA_VERSION = 1
DIRECTIONS: tuple[str, ...] = ("t2v", "v2t")
METRIC_NAMES: tuple[str, ...] = ("R1", "R5", "R10", "MdR", "MnR")
METRIC_KEYS: tuple[str, ...] = tuple(f"{d}_{m}" for d in DIRECTIONS for m in METRIC_NAMES)
# optional in "metrics": population std of the 1-based ranks (the reference's multi-caption t2v report)
# and the summary scores (vidbench.eval.ranking_scores): R@sum, nDCG@10 and mAP in percent
SUMMARY_METRIC_KEYS: tuple[str, ...] = ("RSum", "t2v_nDCG10", "t2v_mAP", "v2t_nDCG10", "v2t_mAP")
OPTIONAL_METRIC_KEYS: tuple[str, ...] = ("t2v_Std_Rank", "v2t_Std_Rank", *SUMMARY_METRIC_KEYS)
# controls.<name>.status values
CONTROL_STATUSES: dict[str, tuple[str, ...]] = {
    "overlap": ("pass", "fail", "declared", "not-checked", "not-applicable"),
    "shuffled_captions": ("pass", "fail"),
    "counts": ("standard", "short", "different", "no-standard"),
}
# statuses the leaderboard flags
CONTROL_FAILURES: dict[str, tuple[str, ...]] = {
    "overlap": ("fail",),
    "shuffled_captions": ("fail",),
    "counts": ("short", "different"),
}
# "metrics_mmt": HCQ's (MMT's) metric family, a protocol of its own (vidbench.eval.metrics.mmt_retrieval_metrics)
MMT_METRIC_NAMES: tuple[str, ...] = ("R1", "R5", "R10", "R50", "MdR", "MnR", "GeoMean")
MMT_METRIC_KEYS: tuple[str, ...] = tuple(f"{d}_{m}" for d in DIRECTIONS for m in MMT_METRIC_NAMES)
REQUIRED_FIELDS: tuple[str, ...] = (
    "schema_version",
    "recipe",
    "method",
    "method_label",
    "seed",
    "dataset",
    "split",
    "protocols",
)
METHOD_FAMILIES: tuple[str, ...] = ("clip4clip", "drl", "eercf", "hcq")
# Where a tested checkpoint comes from: vidbench's own training, or a reference code base (imported).
CHECKPOINT_ORIGINS: tuple[str, ...] = ("vidbench", *METHOD_FAMILIES)
CAPTION_POLICIES: tuple[str, ...] = ("single", "multi")
MISSING_POLICIES: tuple[str, ...] = ("fail", "skip")
# Checkpoint selection of a protocol entry: the last epoch (default) or the reference's pick on the test split.
SELECTIONS: tuple[str, ...] = ("last", "best-on-test")
BEST_ON_TEST_SUFFIX = "@best-on-test"
CHECKPOINT_ORIGINS: tuple[str, ...] = ("vidbench", "clip4clip", "drl", "eercf", "hcq")
# data.text per split (issue 13; the MMT-feature path fills the same): what the max_words cut removed.
TEXT_COUNT_FIELDS: tuple[str, ...] = (
    "captions",
    "captions_truncated",
    "tokens_dropped",
    "longest_tokens",
    "max_words",
    "ids_without_captions",
)
# Cost fields a protocol entry may override (see module docstring).
PROTOCOL_COST_FIELDS: tuple[str, ...] = ("match_flops_per_query", "ms_per_query", "index_bytes_per_video")

_EFFICIENCY_INT = ("params_total", "params_trainable", "gallery_size")
_EFFICIENCY_FLOAT = (
    "text_gflops_per_query",
    "video_gflops_per_clip",
    "match_flops_per_query",
    "index_bytes_per_video",
    "ms_per_query",
)


class ResultError(FileProblemError):
    """A result file cannot be read, does not parse, or does not follow the record schema."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _check_str(d: dict, key: str, where: str, problems: list[str], *, required: bool) -> None:
    if key not in d:
        if required:
            problems.append(f"missing required field '{where}{key}'")
        return
    v = d[key]
    if not isinstance(v, str) or not v.strip():
        problems.append(f"'{where}{key}' must be a non-empty string, got {v!r}")


def _check_metrics(
    m: Any, where: str, problems: list[str], keys: tuple[str, ...] = METRIC_KEYS, optional: tuple[str, ...] = ()
) -> None:
    if not isinstance(m, dict):
        problems.append(f"'{where}' must be an object with keys {', '.join(keys)}")
        return
    missing = [k for k in keys if k not in m]
    if missing:
        problems.append(f"'{where}' is missing {', '.join(missing)}")
    for k in (*keys, *optional):
        if k in m and not _is_number(m[k]):
            problems.append(f"'{where}.{k}' must be a finite number, got {m[k]!r}")


def _check_protocols(p: Any, problems: list[str]) -> None:
    if not isinstance(p, dict) or not p:
        problems.append("'protocols' must be a non-empty object {name: {postprocess, metrics}}")
        return
    for name, entry in p.items():
        where = f"protocols.{name}"
        if not isinstance(entry, dict):
            problems.append(f"'{where}' must be an object with a 'metrics' object")
            continue
        if "metrics" not in entry:
            problems.append(f"missing required field '{where}.metrics'")
        else:
            _check_metrics(entry["metrics"], f"{where}.metrics", problems, optional=OPTIONAL_METRIC_KEYS)
        if "strict" in entry and entry["strict"] is not None:
            _check_metrics(entry["strict"], f"{where}.strict", problems, optional=OPTIONAL_METRIC_KEYS)
        if entry.get("metrics_mmt") is not None:
            _check_metrics(entry["metrics_mmt"], f"{where}.metrics_mmt", problems, keys=MMT_METRIC_KEYS)
        _check_str(entry, "postprocess", f"{where}.", problems, required=False)
        _check_str(entry, "description", f"{where}.", problems, required=False)
        for k in PROTOCOL_COST_FIELDS:
            if entry.get(k) is not None and not _is_number(entry[k]):
                problems.append(f"'{where}.{k}' must be a finite number or null, got {entry[k]!r}")
        selection = entry.get("selection", "last")
        if selection not in SELECTIONS:
            problems.append(f"'{where}.selection' must be one of {SELECTIONS}, got {selection!r}")
        elif (selection == "best-on-test") != name.endswith(BEST_ON_TEST_SUFFIX):
            problems.append(
                f"'{where}': a protocol chosen on the test split (selection 'best-on-test') is named "
                f"'<protocol>{BEST_ON_TEST_SUFFIX}', and only such a protocol"
            )


def _check_efficiency(e: Any, problems: list[str]) -> None:
    if not isinstance(e, dict):
        problems.append("'efficiency' must be an object")
        return
    for k in _EFFICIENCY_INT:
        if e.get(k) is not None and not _is_int(e[k]):
            problems.append(f"'efficiency.{k}' must be an integer or null, got {e[k]!r}")
    for k in _EFFICIENCY_FLOAT:
        if e.get(k) is not None and not _is_number(e[k]):
            problems.append(f"'efficiency.{k}' must be a finite number or null, got {e[k]!r}")
    if e.get("hardware") is not None and not isinstance(e["hardware"], str):
        problems.append(f"'efficiency.hardware' must be a string or null, got {e['hardware']!r}")


def _check_data(d: Any, problems: list[str]) -> None:
    if not isinstance(d, dict):
        problems.append("'data' must be an object")
        return
    if "missing_policy" in d and d["missing_policy"] not in MISSING_POLICIES:
        problems.append(
            f"'data.missing_policy' must be one of {MISSING_POLICIES}, got {d['missing_policy']!r}"
        )
    if "skipped_videos" in d and not (_is_int(d["skipped_videos"]) and d["skipped_videos"] >= 0):
        problems.append(f"'data.skipped_videos' must be a non-negative integer, got {d['skipped_videos']!r}")
    if "skipped_ids" in d and not (
        isinstance(d["skipped_ids"], list) and all(isinstance(x, str) for x in d["skipped_ids"])
    ):
        problems.append("'data.skipped_ids' must be a list of strings")
    if d.get("manifest") is not None and not isinstance(d["manifest"], str):
        problems.append(f"'data.manifest' must be a string or null, got {d['manifest']!r}")
    if "text" in d:
        _check_text(d["text"], problems)


def _check_text(text: Any, problems: list[str]) -> None:
    """``data.text``: per split, what the ``max_words`` cut removed (see TEXT_COUNT_FIELDS)."""
    if not isinstance(text, dict):
        problems.append("'data.text' must be an object split -> counts")
        return
    for split, counts in text.items():
        where = f"'data.text.{split}'"
        if not isinstance(counts, dict):
            problems.append(f"{where} must be an object")
            continue
        for k in TEXT_COUNT_FIELDS:
            if k not in counts:
                problems.append(f"{where} lacks '{k}'")
            elif not (_is_int(counts[k]) and counts[k] >= 0):
                problems.append(f"'data.text.{split}.{k}' must be a non-negative integer, got {counts[k]!r}")
        if "tokens" in counts and not (_is_int(counts["tokens"]) and counts["tokens"] >= 0):
            problems.append(f"'data.text.{split}.tokens' must be a non-negative integer, got {counts['tokens']!r}")
        if all(_is_int(counts.get(k)) for k in ("captions", "captions_truncated")) and (
            counts["captions_truncated"] > counts["captions"]
        ):
            problems.append(f"{where}: captions_truncated exceeds captions")


def _check_checkpoint(c: Any, problems: list[str]) -> None:
    """A path string (older records) or ``{origin, path, sha256}``."""
    if isinstance(c, str):
        return
    if not isinstance(c, dict):
        problems.append("'checkpoint' must be a path string or an object {origin, path, sha256}")
        return
    if c.get("origin") not in CHECKPOINT_ORIGINS:
        problems.append(f"'checkpoint.origin' must be one of {CHECKPOINT_ORIGINS}, got {c.get('origin')!r}")
    for k in ("path", "sha256"):
        if c.get(k) is not None and not isinstance(c[k], str):
            problems.append(f"'checkpoint.{k}' must be a string, got {c[k]!r}")


def _check_env(e: Any, problems: list[str]) -> None:
    if not isinstance(e, dict):
        problems.append("'env' must be an object")
        return
    for k, v in e.items():
        if k == "world_size":
            if not (_is_int(v) and v >= 1):
                problems.append(f"'env.world_size' must be a positive integer, got {v!r}")
        elif v is not None and not isinstance(v, str | int | float | bool):
            problems.append(
                f"'env.{k}' must be a scalar (string/number/bool) or null, got {type(v).__name__}"
            )


def _check_checkpoint(c: Any, problems: list[str]) -> None:
    if isinstance(c, str) and c.strip():
        return  # records written before the {origin, path, sha256} entry: the path of vidbench's own checkpoint
    if not isinstance(c, dict):
        problems.append("'checkpoint' must be an object {origin, path, sha256} or null")
        return
    if c.get("origin") not in CHECKPOINT_ORIGINS:
        problems.append(f"'checkpoint.origin' must be one of {CHECKPOINT_ORIGINS}, got {c.get('origin')!r}")
    _check_str(c, "path", "checkpoint.", problems, required=True)
    sha = c.get("sha256")
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        problems.append(f"'checkpoint.sha256' must be 64 lowercase hex digits, got {sha!r}")
    source = c.get("source")
    if source is not None and not (isinstance(source, dict) and all(isinstance(v, str) for v in source.values())):
        problems.append("'checkpoint.source' must be an object of strings {path, sha256}")


def _check_controls(c: Any, problems: list[str]) -> None:
    if not isinstance(c, dict):
        problems.append("'controls' must be an object {overlap, shuffled_captions, counts}")
        return
    for name, entry in c.items():
        allowed = CONTROL_STATUSES.get(name)
        if not isinstance(entry, dict):
            problems.append(f"'controls.{name}' must be an object with a 'status'")
        elif allowed is not None and entry.get("status") not in allowed:
            problems.append(f"'controls.{name}.status' must be one of {allowed}, got {entry.get('status')!r}")


# "training" (optional; records before it stay valid): how the model was trained, the batch above all
TRAINING_INT_FIELDS: tuple[str, ...] = (
    "num_nodes",
    "devices_per_node",
    "world_size",
    "per_device_batch",
    "global_batch",
    "accumulate_grad_batches",
    "samples_per_step",
)


def _check_training(t: Any, problems: list[str]) -> None:
    if not isinstance(t, dict):
        problems.append("'training' must be an object or null")
        return
    for k in TRAINING_INT_FIELDS:
        if t.get(k) is not None and not (_is_int(t[k]) and t[k] >= 1):
            problems.append(f"'training.{k}' must be a positive integer, got {t[k]!r}")
    chunk = t.get("contrastive_chunk")
    if chunk is not None and not (_is_int(chunk) and chunk >= 1):
        problems.append(f"'training.contrastive_chunk' must be a positive integer or null, got {chunk!r}")
    for k in ("precision", "train_split"):
        if t.get(k) is not None and not isinstance(t[k], str):
            problems.append(f"'training.{k}' must be a string or null, got {t[k]!r}")
    dev = t.get("deviations", [])
    if not (isinstance(dev, list) and all(isinstance(x, str) for x in dev)):
        problems.append("'training.deviations' must be a list of strings")


def training_deviations(record: dict[str, Any]) -> list[str]:
    """The protocol deviations a record declares (gradient accumulation on a contrastive loss); [] if none."""
    t = record.get("training")
    return list(t.get("deviations") or []) if isinstance(t, dict) else []


def result_problems(d: Any) -> list[str]:
    """Schema problems of one record, without a file prefix (empty list = valid)."""
    if not isinstance(d, dict):
        return [f"top level must be a JSON object, got {type(d).__name__}"]
    problems: list[str] = []
    for key in REQUIRED_FIELDS:
        if key not in d:
            problems.append(f"missing required field '{key}'")
    if "schema_version" in d and d["schema_version"] != SCHEMA_VERSION:
        problems.append(
            f"unsupported schema_version {d['schema_version']!r}; this vidbench reads {SCHEMA_VERSION}"
        )
    for key in ("recipe", "method", "method_label", "dataset", "split"):
        if key in d:
            _check_str(d, key, "", problems, required=True)
    for key in ("variant", "backbone", "train_split", "config_hash", "git_commit"):
        if d.get(key) is not None:
            _check_str(d, key, "", problems, required=False)
    if "seed" in d and not _is_int(d["seed"]):
        problems.append(f"'seed' must be an integer, got {d['seed']!r}")
    if "git_dirty" in d and d["git_dirty"] is not None and not isinstance(d["git_dirty"], bool):
        problems.append(f"'git_dirty' must be true/false, got {d['git_dirty']!r}")
    if "caption_policy" in d and d["caption_policy"] not in CAPTION_POLICIES:
        problems.append(f"'caption_policy' must be one of {CAPTION_POLICIES}, got {d['caption_policy']!r}")
    for key in ("num_queries", "num_gallery"):
        if d.get(key) is not None and not (_is_int(d[key]) and d[key] > 0):
            problems.append(f"'{key}' must be a positive integer, got {d[key]!r}")
    if "protocols" in d:
        _check_protocols(d["protocols"], problems)
    if d.get("efficiency") is not None:
        _check_efficiency(d["efficiency"], problems)
    if d.get("data") is not None:
        _check_data(d["data"], problems)
    if d.get("env") is not None:
        _check_env(d["env"], problems)
    if d.get("checkpoint") is not None:
        _check_checkpoint(d["checkpoint"], problems)
    if d.get("controls") is not None:
        _check_controls(d["controls"], problems)
    if "zero_shot" in d and not isinstance(d["zero_shot"], bool):
        problems.append(f"'zero_shot' must be true/false, got {d['zero_shot']!r}")
    if d.get("training") is not None:
        _check_training(d["training"], problems)
    if d.get("wall_time_s") is not None and not (_is_number(d["wall_time_s"]) and d["wall_time_s"] >= 0):
        problems.append(f"'wall_time_s' must be a non-negative number, got {d['wall_time_s']!r}")
    if d.get("created") is not None:
        try:
            datetime.fromisoformat(str(d["created"]))
        except ValueError:
            problems.append(f"'created' must be an ISO-8601 timestamp, got {d['created']!r}")
    if d.get("paths") is not None:
        p = d["paths"]
        if not isinstance(p, dict) or not all(isinstance(v, str) for v in p.values()):
            problems.append("'paths' must be an object of strings {run_dir, config, logs}")
    return problems


def validate_result(d: dict, source: str) -> list[str]:
    """Problems with record ``d`` read from ``source``, each prefixed with it; empty list = valid."""
    return [f"{source}: {p}" for p in result_problems(d)]


def load_result(path: str | Path) -> dict:
    """Read and validate one ``result.json``; raises :class:`ResultError` naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultError(
            path,
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            "the run was probably interrupted before its atomic write; re-run `vidbench test` for it",
        ) from exc
    problems = result_problems(d)
    if problems:
        raise ResultError(
            path,
            "does not follow the result schema: " + "; ".join(problems),
            "regenerate it with this vidbench version (see vidbench/results/schema.py)",
        )
    return d


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Serialise ``obj`` as strict JSON (no NaN/inf) and write it atomically.

    NaN is refused rather than written because other JSON readers reject it; store ``null`` for an
    unmeasured value instead.
    """
    try:
        text = json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    except ValueError as exc:
        raise ResultError(path, f"cannot serialise: {exc}", "replace NaN/inf values with null") from exc
    except TypeError as exc:
        raise ResultError(
            path, f"cannot serialise: {exc}", "convert tensors/numpy values to Python numbers"
        ) from exc
    return write_text_atomic(path, text)
