"""Data verification manifest: which videos of a split are present, missing or undecodable.

Reference loaders silently shrink the gallery (missing files) or feed zero clips (corrupt files), which
inflates or scrambles metrics. ``verify_split`` probes every video of a :class:`SplitIndex` once and writes a
JSON manifest a run can cite; ``format_manifest_summary`` turns it into a few lines for the console: where
videos were searched, the names expected, the counts, the first missing ids, the caption truncation counts and
the fix. ``search_hint`` and ``video_fix`` give every "video not found" message the same folder, pattern and fix.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidbench.data.text import format_text_counts
from vidbench.data.types import SplitIndex, VideoRef
from vidbench.data.video import probe_video
from vidbench.errors import VidbenchError, VideoDecodeError
from vidbench.io import ensure_writable, write_text_atomic
from vidbench.locations import manifest_dir

STATUSES = ("present", "missing", "undecodable")


def _check(ref: VideoRef) -> dict[str, Any]:
    row: dict[str, Any] = {
        "video_id": ref.video_id,
        "path": str(ref.path) if ref.path is not None else None,
        "status": "missing",
        "duration_s": None,
        "num_frames": None,
        "error": None,
    }
    if ref.path is None:
        return row
    if not ref.path.is_file():
        row["error"] = f"file not found: {ref.path}"
        return row
    try:
        info = probe_video(ref.path)
    except (VideoDecodeError, OSError) as e:
        row["status"] = "undecodable"
        row["error"] = getattr(e, "reason", None) or str(e)
        return row
    row.update(status="present", duration_s=float(info.duration_s), num_frames=int(info.num_frames))
    return row


def search_hint(index: SplitIndex) -> str:
    """Where videos of ``index`` were searched and the names expected, with the names tried for one id."""
    notes = index.notes
    folder = notes.get("video_root", "?")
    pattern = notes.get("name_pattern", "<id>.<ext>")
    example = notes.get("example_id")
    names = notes.get("example_names") or []
    line = f"searched {folder} recursively for {pattern}"
    if example is not None and names:
        line += f"; e.g. id {example!r} matches {' or '.join(names)}"
    if notes.get("video_root_missing"):
        line += f" (the folder {folder} does not exist)"
    return line


def video_fix(index: SplitIndex) -> str:
    """What to do when videos of ``index`` are not found."""
    folder = index.notes.get("video_root", "the data root")
    return (
        f"put the video files anywhere under {folder} with the names above, or set data.video_root=DIR "
        "(paths.data_root=DIR for the whole dataset tree) to the folder that holds them"
    )


def verify_split(
    index: SplitIndex, out_path: Path, *, workers: int = 4, text: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Probe every video of ``index`` (``workers`` threads) and write the manifest JSON to ``out_path``.

    ``text`` holds the caption truncation counts of the split (``data.text`` of result.json), or None
    when the tokenizer was not available.
    """
    out_path = Path(out_path)
    refs = index.videos
    if workers > 1 and len(refs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_check, refs))
    else:
        rows = [_check(r) for r in refs]
    summary = {"annotated": len(rows)} | {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    notes = index.notes
    manifest: dict[str, Any] = {
        "dataset": index.dataset,
        "split": index.split,
        "text_unit": index.text_unit,
        "multi_caption": index.multi_caption,
        "captions": len(index.captions),
        "summary": summary,
        "search": {
            "video_root": notes.get("video_root"),
            "name_pattern": notes.get("name_pattern"),
            "example_id": notes.get("example_id"),
            "example_names": notes.get("example_names"),
            "hint": search_hint(index),
            "fix": video_fix(index),
        },
        "text": text,
        "ids_without_captions": int(notes.get("ids_without_captions", 0) or 0),
        "manifest_path": str(out_path),
        "notes": notes,
        "videos": rows,
    }
    write_text_atomic(out_path, json.dumps(manifest, indent=1, default=str) + "\n")
    return manifest


def format_manifest_summary(manifest: dict[str, Any], limit: int = 5) -> str:
    """The console report of one split: counts, where and what was searched, first bad ids, text, manifest, fix."""
    s = manifest["summary"]
    lines = [
        f"{manifest['dataset']} {manifest['split']}: {s['annotated']} videos annotated, "
        f"{s['present']} present, "
        f"{s['missing']} missing, {s['undecodable']} undecodable; {manifest['captions']} captions"
    ]
    search = manifest.get("search") or {}
    if search.get("hint"):
        lines.append(f"  {search['hint']}")
    for status in ("missing", "undecodable"):
        bad = [r for r in manifest["videos"] if r["status"] == status]
        if not bad:
            continue
        shown = [r["video_id"] if status == "missing" else f"{r['video_id']} ({r['error']})" for r in bad[:limit]]
        more = f" (first {limit} of {len(bad)})" if len(bad) > limit else ""
        lines.append(f"  {status}{more}: {', '.join(shown)}")
    text = manifest.get("text")
    if text:
        counts = dict(text)
        counts.setdefault("ids_without_captions", manifest.get("ids_without_captions", 0))
        lines.append("  " + format_text_counts("", counts).strip())
    elif "text" in manifest:
        lines.append("  text: not counted (no tokenizer available offline; see `model.tokenizer`)")
    lines.append(f"  manifest: {manifest['manifest_path']}")
    if s["missing"] or s["undecodable"]:
        fix = search.get("fix") or "put the missing files under the data root (see README, 'Data layout')"
        if s["undecodable"]:
            fix += "; re-download or re-encode the undecodable files"
        lines.append(f"  fix: {fix}")
    return "\n".join(lines)


@dataclass
class VerifyReport:
    """What ``vidbench verify-data`` prints and how it exits, one block per split."""

    blocks: list[str] = field(default_factory=list)
    incomplete: dict[str, int] = field(default_factory=dict)  # split -> missing + undecodable videos
    unreadable: list[str] = field(default_factory=list)  # splits whose annotations could not be read
    test_split: str = ""
    manifests: dict[str, str] = field(default_factory=dict)  # split -> manifest path

    def exit_code(self, *, strict: bool = False) -> int:
        """2: a split's annotations are unreadable; 1: the test split is incomplete (any split with
        ``strict``); 0 otherwise (missing training videos are skipped and counted by ``fit``)."""
        if self.unreadable:
            return 2
        if self.incomplete.get(self.test_split) or (strict and any(self.incomplete.values())):
            return 1
        return 0

    @property
    def verdict(self) -> str:
        parts = []
        if self.unreadable:
            parts.append(f"annotations unreadable for {', '.join(self.unreadable)} (exit 2)")
        if self.incomplete.get(self.test_split):
            parts.append(
                f"test split {self.test_split} incomplete: {self.incomplete[self.test_split]} videos missing or "
                "undecodable (exit 1; `fit`/`test` stop unless data.missing_policy_test=skip)"
            )
        train = {k: v for k, v in self.incomplete.items() if v and k != self.test_split}
        if train:
            parts.append(
                "training videos missing or undecodable: "
                + ", ".join(f"{k} {v}" for k, v in train.items())
                + " (skipped and counted by fit under data.missing_policy_train=skip; exit 1 only with --strict)"
            )
        return "verify-data: " + ("; ".join(parts) if parts else "every checked split is complete")


def _text_counts_or_none(cfg: Any, index: SplitIndex) -> dict[str, int] | None:
    from vidbench.data.text import build_tokenizer, tokenize_counted

    try:
        tokenizer = build_tokenizer(cfg.model.tokenizer or cfg.model.clip)
    except VidbenchError:
        return None
    counts = tokenize_counted(tokenizer, index.captions, cfg.data.max_words)[2]
    counts["ids_without_captions"] = int(index.notes.get("ids_without_captions", 0) or 0)
    return counts


def verify_data(cfg: Any, which: str = "both", *, out_dir: str | Path | None = None) -> VerifyReport:
    """Verify the train and/or test split of a composed recipe; a split that fails does not stop the other.

    Manifests go to ``out_dir`` or, by default, under ``paths.cache_dir`` (never into the dataset root,
    which may be read-only); the folder is checked for writing before any video is probed.
    """
    from vidbench.data.datasets import load_split

    d = cfg.data
    splits = {"train": d.train_split, "test": d.test_split}
    chosen = list(splits.values()) if which == "both" else [splits[which]]
    if out_dir is not None:
        folder = ensure_writable(out_dir, "--out")
    else:
        folder = ensure_writable(
            manifest_dir(cfg.paths.cache_dir, d.dataset, d.root), "paths.cache_dir (or pass --out DIR)"
        )
    report = VerifyReport(test_split=d.test_split)
    for split in dict.fromkeys(chosen):
        try:
            index = load_split(d.dataset, d.root, split, video_root=d.video_root, options=d.get("custom"))
        except VidbenchError as exc:
            report.unreadable.append(split)
            report.blocks.append(f"{d.dataset} {split}: cannot read the annotations:\n  {exc}".replace("\n", "\n  "))
            continue
        manifest = verify_split(index, folder / f"{d.dataset}_{split}.json", text=_text_counts_or_none(cfg, index))
        report.blocks.append(format_manifest_summary(manifest))
        report.incomplete[split] = manifest["summary"]["missing"] + manifest["summary"]["undecodable"]
        report.manifests[split] = manifest["manifest_path"]
    return report
