"""Frame cache: every clip of a split decoded once into a memory-mapped file, so later epochs decode nothing.

Sampling is deterministic (CLIP4Clip samples the same frames every epoch, train and test alike), so the
sampled, resized uint8 frames of a clip never change: caching them is exact, not an approximation.

Layout of ``cache_dir/<key>/`` (``key`` = sha256 of the inputs, see :func:`cache_key`)::

    frames.npy  uint8 [N, max_frames, 3, size, size]   (.npy header, opened with mmap)
    masks.npy   int64 [N, max_frames]
    meta.json   format version, key, sampling parameters, video ids and paths, status and reason per video

A cache is built in a hidden temporary folder next to it and renamed into place only once complete, so a
crash mid-build never leaves a folder that looks complete; the next build starts again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidbench.data.sampling import check_sampling_args
from vidbench.data.types import VideoRef
from vidbench.data.video import load_clip
from vidbench.errors import DataError, NotWritableError, VideoDecodeError

FORMAT_VERSION = 1
STATUS_OK, STATUS_MISSING, STATUS_UNDECODABLE = "ok", "missing", "undecodable"
_FRAMES, _MASKS, _META = "frames.npy", "masks.npy", "meta.json"


def cache_key(videos: Sequence[VideoRef], params: dict[str, Any]) -> str:
    """sha256 over the format version, the sampling parameters and each video's id, path, window, size, mtime.

    Touching or replacing a video file, or changing any sampling parameter, gives a new key (a new cache);
    the old folder is left for the user to delete.
    """
    rows = []
    for ref in videos:
        size = mtime = None
        if ref.path is not None:
            try:
                st = Path(ref.path).stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                pass
        path = None if ref.path is None else os.path.abspath(ref.path)
        rows.append([ref.video_id, path, ref.start_s, ref.end_s, size, mtime])
    blob = json.dumps({"version": FORMAT_VERSION, "params": params, "videos": rows}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class FrameCache:
    """Read side of a complete cache folder; :meth:`build` makes (or finds) one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / _META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            msg = f"{meta_path}: unreadable frame cache ({err}); delete {self.path} to rebuild"
            raise DataError(msg) from err
        if meta.get("format_version") != FORMAT_VERSION or not meta.get("complete"):
            raise DataError(f"{self.path}: incomplete frame cache or an old format; delete it to rebuild")
        self.key: str = meta["key"]
        self.params: dict[str, Any] = meta["params"]
        self.video_ids: list[str] = meta["video_ids"]
        self._status: list[str] = meta["status"]
        self._reason: list[str | None] = meta["reason"]
        self._masks = np.load(self.path / _MASKS)
        self._frames: np.ndarray | None = None  # opened lazily, once per process
        self._frames_pid: int | None = None

    @classmethod
    def build(
        cls,
        cache_dir: str | Path,
        videos: Sequence[VideoRef],
        *,
        max_frames: int,
        size: int,
        framerate: float = 1.0,
        slice_framepos: int = 2,
        fps_mode: str = "int",
        num_workers: int = 0,
        progress: bool = True,
        setting: str = "data.cache_dir",
    ) -> FrameCache:
        """Return the cache for these videos and parameters, decoding every clip only if none exists yet.

        Clips are decoded with :func:`~vidbench.data.video.load_clip` (in ``num_workers`` processes when
        > 0, order preserved). A missing file (``path`` None or not on disk) is recorded as "missing" and
        a :class:`~vidbench.errors.VideoDecodeError` as "undecodable" with its reason; neither stops the
        build. Their rows stay zero and :meth:`get` refuses them. A ``cache_dir`` that cannot be written
        raises :class:`~vidbench.errors.NotWritableError` naming ``setting`` (the config key that moves it).
        """
        if not videos:
            raise ValueError("FrameCache.build needs at least one video")
        check_sampling_args(max_frames, framerate, slice_framepos, fps_mode)
        if size < 1:
            raise ValueError(f"size={size} must be >= 1")
        params = {
            "max_frames": int(max_frames),
            "size": int(size),
            "framerate": float(framerate),
            "slice_framepos": int(slice_framepos),
            "fps_mode": str(fps_mode),
        }
        key = cache_key(videos, params)
        cache_dir = Path(cache_dir)
        final = cache_dir / key
        if _is_complete(final, key):
            return cls(final)
        try:  # a complete cache in a read-only shared folder is fine (above); building one needs writes
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.building-", dir=cache_dir))
        except OSError as err:
            raise NotWritableError(cache_dir, setting, err.strerror or str(err)) from err
        try:
            _write(tmp, key, videos, params, num_workers, progress)
            _move_into_place(tmp, final, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(final)

    def __len__(self) -> int:
        return len(self.video_ids)

    def get(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[max_frames, 3, size, size]`` frames and long ``[max_frames]`` mask of row ``i``.

        A row whose video is missing or undecodable raises :class:`~vidbench.errors.DataError`: check
        :meth:`status` / :meth:`failures` and leave such rows out instead of training on zeros.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a frame cache of {len(self)} videos")
        if self._status[i] != STATUS_OK:
            raise DataError(
                f"frame cache {self.path}: video {self.video_ids[i]!r} (row {i}) is {self._status[i]}: "
                f"{self._reason[i]}\n  fix: leave out the rows listed by FrameCache.failures()"
            )
        frames = torch.from_numpy(np.array(self._frames_map()[i]))
        return frames, torch.from_numpy(self._masks[i].copy())

    def status(self, i: int) -> str:
        """Status of row ``i``: "ok", "missing" or "undecodable"."""
        return self._status[i]

    def failures(self) -> dict[str, str]:
        """video_id -> reason for every missing or undecodable video."""
        return {
            vid: reason or status
            for vid, status, reason in zip(self.video_ids, self._status, self._reason, strict=True)
            if status != STATUS_OK
        }

    def _frames_map(self) -> np.ndarray:
        # A memmap opened before a fork would be shared by every DataLoader worker; reopen per process.
        if self._frames is None or self._frames_pid != os.getpid():
            self._frames = np.load(self.path / _FRAMES, mmap_mode="r")
            self._frames_pid = os.getpid()
        return self._frames

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frames"] = state["_frames_pid"] = None
        return state

    def __repr__(self) -> str:
        n_bad = len(self) - self._status.count(STATUS_OK)
        return f"FrameCache({self.path}, {len(self)} videos, {n_bad} failed)"


# -- building -------------------------------------------------------------------------------------------


class _ClipJobs(Dataset):
    """Decodes one clip per item; a worker never raises for a bad video, it reports it."""

    def __init__(self, videos: Sequence[VideoRef], params: dict[str, Any]) -> None:
        self.videos = list(videos)
        self.params = params

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, torch.Tensor | None, str, str | None]:
        ref = self.videos[i]
        if ref.path is None:
            return i, None, None, STATUS_MISSING, "no file found for this id"
        if not Path(ref.path).is_file():
            return i, None, None, STATUS_MISSING, f"file not found: {ref.path}"
        try:
            frames, mask = load_clip(ref.path, start_s=ref.start_s, end_s=ref.end_s, **self.params)
        except VideoDecodeError as err:
            return i, None, None, STATUS_UNDECODABLE, err.reason
        return i, frames, mask, STATUS_OK, None


def _decoded(jobs: _ClipJobs, num_workers: int) -> Iterator[tuple]:
    if num_workers <= 0:
        yield from (jobs[i] for i in range(len(jobs)))
        return
    loader = DataLoader(jobs, batch_size=None, shuffle=False, num_workers=num_workers)
    yield from loader


def _write(
    folder: Path,
    key: str,
    videos: Sequence[VideoRef],
    params: dict[str, Any],
    num_workers: int,
    progress: bool,
) -> None:
    n, t, s = len(videos), params["max_frames"], params["size"]
    frames = np.lib.format.open_memmap(folder / _FRAMES, mode="w+", dtype=np.uint8, shape=(n, t, 3, s, s))
    masks = np.zeros((n, t), dtype=np.int64)
    status: list[str] = [""] * n
    reason: list[str | None] = [None] * n
    every = max(1, n // 10)
    start = time.monotonic()
    for done, (i, clip, mask, st, why) in enumerate(_decoded(_ClipJobs(videos, params), num_workers), 1):
        if clip is not None:
            frames[i] = clip.numpy()
            masks[i] = mask.numpy()
        status[i], reason[i] = st, why
        if progress and (done % every == 0 or done == n):
            failed = sum(x not in ("", STATUS_OK) for x in status)
            print(
                f"[frame cache {key[:12]}] {done}/{n} clips ({100 * done // n}%), {failed} failed, "
                f"{time.monotonic() - start:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    frames.flush()
    del frames
    np.save(folder / _MASKS, masks)
    meta = {
        "format_version": FORMAT_VERSION,
        "complete": True,
        "key": key,
        "params": params,
        "video_ids": [v.video_id for v in videos],
        "paths": [None if v.path is None else str(v.path) for v in videos],
        "status": status,
        "reason": reason,
    }
    (folder / _META).write_text(json.dumps(meta, indent=1))


def _is_complete(folder: Path, key: str) -> bool:
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError):
        return False
    version_ok = meta.get("format_version") == FORMAT_VERSION
    return version_ok and meta.get("complete") is True and meta.get("key") == key


def _move_into_place(tmp: Path, final: Path, key: str) -> None:
    """Atomic rename; tolerate another process having finished the same cache first."""
    if final.exists() and not _is_complete(final, key):
        shutil.rmtree(final)  # a damaged folder under the final name (e.g. edited by hand): replace it
    try:
        os.rename(tmp, final)
    except OSError:
        if not _is_complete(final, key):
            raise
