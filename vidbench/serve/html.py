"""One self-contained HTML page of search results: each hit's frames in a strip, embedded as JPEG data URIs."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import torch

from vidbench.data.video import load_clip
from vidbench.errors import VideoDecodeError
from vidbench.io import write_text_atomic

from .search import QueryResult

STRIP_FRAMES, THUMB = 4, 96


def frame_strip(path: str, start: float | None = None, end: float | None = None) -> str | None:
    """A JPEG data URI of ``STRIP_FRAMES`` frames spread over the clip, side by side (None if undecodable)."""
    from PIL import Image

    try:
        video, mask = load_clip(path, max_frames=STRIP_FRAMES, size=THUMB, start_s=start, end_s=end)
    except (VideoDecodeError, OSError, ValueError):
        return None
    frames = video[: int(mask.sum())]
    strip = torch.cat(list(frames), dim=2).permute(1, 2, 0).numpy()  # [S, n*S, 3]
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def write_page(results: list[QueryResult], out: str | Path, title: str) -> Path:
    """Write the page atomically; returns its path."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}h2{font-size:1.1em;margin-top:1.5em}"
        "table{border-collapse:collapse}td{padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:middle}"
        ".id{font-family:monospace}.miss{color:#a00}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    strips: dict[str, str | None] = {}
    for res in results:
        parts.append(f"<h2>{html.escape(res.query)} <small>({res.ms:.1f} ms)</small></h2><table>")
        for hit in res.hits:
            if hit.path not in strips:
                strips[hit.path] = frame_strip(hit.path)
            img = strips[hit.path]
            cell = (
                f"<img src='{img}' alt='{html.escape(hit.video_id)}'>" if img else "<span class='miss'>no frames</span>"
            )
            parts.append(
                f"<tr><td>{hit.rank}</td><td>{hit.score:.4f}</td><td class='id'>{html.escape(hit.video_id)}<br>"
                f"<small>{html.escape(hit.path)}</small></td><td>{cell}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return write_text_atomic(Path(out), "\n".join(parts))
