"""Data verification manifest: which videos of a split are present, missing or undecodable.

Reference loaders silently shrink the gallery (missing files) or feed zero clips (corrupt files), which
inflates or scrambles metrics. ``verify_split`` probes every video of a :class:`SplitIndex` once and writes a
JSON manifest a run can cite; ``format_manifest_summary`` turns it into a few lines for the console.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vidbench.data.types import SplitIndex, VideoRef
from vidbench.data.video import probe_video
from vidbench.errors import VideoDecodeError
from vidbench.io import write_text_atomic

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


def verify_split(index: SplitIndex, out_path: Path, *, workers: int = 4) -> dict[str, Any]:
    """Probe every video of ``index`` (``workers`` threads) and write the manifest JSON to ``out_path``."""
    out_path = Path(out_path)
    refs = index.videos
    if workers > 1 and len(refs) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_check, refs))
    else:
        rows = [_check(r) for r in refs]
    summary = {"annotated": len(rows)} | {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    manifest: dict[str, Any] = {
        "dataset": index.dataset,
        "split": index.split,
        "text_unit": index.text_unit,
        "multi_caption": index.multi_caption,
        "captions": len(index.captions),
        "summary": summary,
        "manifest_path": str(out_path),
        "notes": index.notes,
        "videos": rows,
    }
    write_text_atomic(out_path, json.dumps(manifest, indent=1, default=str) + "\n")
    return manifest


def format_manifest_summary(manifest: dict[str, Any], limit: int = 5) -> str:
    """A few human lines: counts, then the first missing / undecodable ids and where the manifest is."""
    s = manifest["summary"]
    lines = [
        f"{manifest['dataset']} {manifest['split']}: {s['annotated']} videos annotated, "
        f"{s['present']} present, "
        f"{s['missing']} missing, {s['undecodable']} undecodable"
    ]
    for status in ("missing", "undecodable"):
        bad = [r for r in manifest["videos"] if r["status"] == status]
        if not bad:
            continue
        shown = [
            r["video_id"] if status == "missing" else f"{r['video_id']} ({r['error']})" for r in bad[:limit]
        ]
        more = f" (first {limit} of {len(bad)})" if len(bad) > limit else ""
        lines.append(f"  {status}{more}: {', '.join(shown)}")
    lines.append(f"  manifest: {manifest['manifest_path']}")
    return "\n".join(lines)
