"""Atomic file writes: readers see the old file or the new one, never a half-written file.

Results, manifests and leaderboards are written this way, so a preempted job or a crash never leaves a
truncated file behind. Files get the usual permissions (0666 minus the umask), not mkstemp's 0600, so
results stay readable to collaborators on a shared cluster.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from vidbench.errors import NotWritableError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable; not every platform lets a folder be opened, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` so readers see the old file or the new one, never a half-written file.

    The temp file lives in the same folder (so ``os.replace`` is a rename on one filesystem) and is
    fsynced before the rename; a preempted job therefore never leaves a truncated result behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def ensure_writable(folder: str | Path, setting: str) -> Path:
    """Create ``folder`` if needed and prove a file can be written there, before any long work starts.

    Shared dataset folders are often read-only (a bind mount, NFS export, or another user's files); the
    permission bits alone do not tell (root ignores them), so a real file is created and removed. A failure
    is a :class:`NotWritableError` naming the folder and the ``setting`` that moves it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".vidbench-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NotWritableError(folder, setting, exc.strerror or str(exc)) from exc
    return folder
