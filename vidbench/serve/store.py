"""A store of encoded videos, in open formats: what ``vidbench encode`` writes and ``search``/``index`` read.

Layout of ``STORE/``::

    manifest.json        recipe + its resolved config, checkpoint path and sha256, vidbench version, counts
    videos.parquet       one row per listed video: id, path, start, end, duration, frames, status, error,
                         shard, row (status "ok" rows have features at (shard, row); "failed" rows have none)
    shards/*.safetensors one per rank and flush: the method's per-video tensors (the dict ``encode_video``
                         returns at test time), plus in the header metadata the JSON rows of its videos
    method.safetensors   method-level tensors a serving index needs without the model (HCQ codebooks, weights)

A shard is written to a temporary name and renamed, so a shard on disk is complete; its videos are done.
Resuming reads the shard headers only. ``videos.parquet`` and the manifest's counts are (re)written when an
encode finishes; until then the manifest says ``complete: false``.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from vidbench.errors import DataError, VidbenchError
from vidbench.io import write_bytes_atomic, write_text_atomic

FORMAT = "vidbench-store/1"
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}
Features = dict[str, torch.Tensor]


@dataclass(frozen=True)
class VideoEntry:
    """One video to encode: a stable id, its file, and an optional window in seconds."""

    video_id: str
    path: str
    start_s: float | None = None
    end_s: float | None = None


def list_videos(spec: str | Path) -> list[VideoEntry]:
    """Videos of a folder (searched recursively; ids are paths relative to it) or of a list file.

    A ``.csv`` list has a header with ``path`` and optionally ``id``, ``start``, ``end`` (seconds); a ``.txt``
    list has one path per line. Relative paths are taken from the list file's folder.
    """
    spec = Path(spec)
    if spec.is_dir():
        files = sorted(p for p in spec.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise DataError(f"{spec}: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) under this folder")
        return [VideoEntry(p.relative_to(spec).with_suffix("").as_posix(), str(p)) for p in files]
    if not spec.is_file():
        raise DataError(f"--videos {spec}: neither a folder nor a list file (.csv with a 'path' column, or .txt)")
    entries = _read_csv(spec) if spec.suffix.lower() == ".csv" else _read_txt(spec)
    if not entries:
        raise DataError(f"{spec}: the list names no video")
    seen: set[str] = set()
    for e in entries:
        if e.video_id in seen:
            raise DataError(f"{spec}: video id {e.video_id!r} appears twice; ids must be unique (add an 'id' column)")
        seen.add(e.video_id)
    return entries


def _resolve(base: Path, path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _read_txt(path: Path) -> list[VideoEntry]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [VideoEntry(Path(ln).with_suffix("").as_posix(), _resolve(path.parent, ln)) for ln in lines if ln]


def _read_csv(path: Path) -> list[VideoEntry]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise DataError(f"{path}: a CSV list needs a header with a 'path' column (optional: id, start, end)")
        out = []
        for i, row in enumerate(reader, start=2):
            try:
                start = float(row["start"]) if row.get("start") not in (None, "") else None
                end = float(row["end"]) if row.get("end") not in (None, "") else None
            except ValueError as err:
                raise DataError(
                    f"{path}:{i}: start/end must be seconds, got {row.get('start')!r}/{row.get('end')!r}"
                ) from err
            vid = row.get("id") or Path(row["path"]).with_suffix("").as_posix()
            out.append(VideoEntry(vid, _resolve(path.parent, row["path"]), start, end))
        return out


# ---------------------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------------------
def shard_dir(store: Path) -> Path:
    return store / "shards"


def write_shard(store: Path, rank: int, rows: list[dict[str, Any]], features: Features) -> Path:
    """Write one shard atomically: ``features`` (rows of the "ok" videos, in order) and every row's record."""
    name = f"rank{rank:03d}-{uuid.uuid4().hex[:12]}.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in features.items()}
    data = save(tensors, metadata={"videos": json.dumps(rows), "format": FORMAT})
    return write_bytes_atomic(shard_dir(store) / name, data)


def shard_rows(path: Path) -> list[dict[str, Any]]:
    """The video records in a shard's header (no tensor is read)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "videos" not in meta:
        raise DataError(f"{path}: not a vidbench store shard (no 'videos' metadata); remove it or use a new --out")
    return json.loads(meta["videos"])


def shard_files(store: Path) -> list[Path]:
    folder = shard_dir(store)
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def done_ids(store: Path) -> set[str]:
    """Ids already in a shard (encoded or counted as failed): a resumed encode skips them."""
    return {row["id"] for path in shard_files(store) for row in shard_rows(path)}


# ---------------------------------------------------------------------------------------------------------
# manifest and table
# ---------------------------------------------------------------------------------------------------------
def read_manifest(store: Path) -> dict[str, Any]:
    path = Path(store) / "manifest.json"
    if not path.is_file():
        raise VidbenchError(f"{store}: not a vidbench store (no manifest.json); create one with `vidbench encode`")
    return json.loads(path.read_text())


def write_manifest(store: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(Path(store) / "manifest.json", json.dumps(manifest, indent=2, default=str))


def check_resumable(store: Path, manifest: dict[str, Any]) -> None:
    """A store may be resumed only with the recipe config and checkpoint it was started with."""
    path = store / "manifest.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    for key in ("config_hash", "checkpoint_sha256"):
        if old.get(key) != manifest.get(key):
            raise VidbenchError(
                f"{store} was encoded with another {key.split('_')[0]} ({old.get(key)} vs {manifest.get(key)}); "
                "encode into a new --out folder, or delete this one to start over"
            )


def write_table(store: Path, entries: list[VideoEntry]) -> dict[str, int]:
    """Gather every shard's rows into ``videos.parquet`` in listing order; returns the counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = {e.video_id: i for i, e in enumerate(entries)}
    rows = []
    for path in shard_files(store):
        ok_row = 0
        for row in shard_rows(path):
            row = dict(row, shard=path.name, row=-1)
            if row["status"] == "ok":
                row["row"] = ok_row
                ok_row += 1
            rows.append(row)
    rows.sort(key=lambda r: (order.get(r["id"], len(order)), r["id"]))
    columns = ["id", "path", "start", "end", "duration", "frames", "status", "error", "shard", "row"]
    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    tmp = store / f".videos.parquet.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    tmp.replace(store / "videos.parquet")
    ok = sum(r["status"] == "ok" for r in rows)
    return {"videos": len(rows), "encoded": ok, "failed": len(rows) - ok}


def read_table(store: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    path = Path(store) / "videos.parquet"
    if not path.is_file():
        raise VidbenchError(
            f"{store}: no videos.parquet; the encode did not finish: run the same `vidbench encode` again"
        )
    return pq.read_table(path).to_pylist()


def feature_bytes(store: Path) -> int:
    """Bytes the store's features take in memory, from the shard headers alone."""
    total = 0
    for path in shard_files(store):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is no dict
                sl = f.get_slice(key)
                n = 1
                for s in sl.get_shape():
                    n *= s
                total += n * _DTYPE_BYTES.get(sl.get_dtype(), 4)
    return total


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}


def load_features(store: Path, table: list[dict[str, Any]]) -> Features:
    """The "ok" videos' features, in table order (all shards concatenated, then one index_select per key)."""
    from safetensors.torch import load_file

    ok = [r for r in table if r["status"] == "ok"]
    names = sorted({r["shard"] for r in ok})
    offset, start = {}, 0
    parts: dict[str, list[torch.Tensor]] = {}
    for name in names:
        tensors = load_file(str(shard_dir(store) / name))
        offset[name] = start
        start += next(iter(tensors.values())).shape[0]
        for key, value in tensors.items():
            parts.setdefault(key, []).append(value)
    rows = torch.tensor([offset[r["shard"]] + r["row"] for r in ok], dtype=torch.long)
    return {k: torch.cat(v).index_select(0, rows) for k, v in parts.items()}


def write_method_tensors(store: Path, tensors: Features) -> None:
    if tensors:
        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        write_bytes_atomic(store / "method.safetensors", data)


def read_method_tensors(store: Path) -> Features:
    from safetensors.torch import load_file

    path = store / "method.safetensors"
    return load_file(str(path)) if path.is_file() else {}


def memory_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (a large number where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no /proc/meminfo (not Linux): no limit can be known, so none is enforced
        return 1 << 62
    return 1 << 62


def require_memory(needed: int, what: str, fix: str) -> None:
    """Stop before loading ``needed`` bytes when the machine lacks them."""
    have = memory_available()
    if needed > have:
        raise VidbenchError(
            f"{what} needs {needed / 2**30:.2f} GiB in memory; this machine has {have / 2**30:.2f} GiB available. {fix}"
        )
