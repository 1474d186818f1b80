"""Exceptions that tell the user which file, id or key is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path


class VidbenchError(Exception):
    """Base class: every error the suite raises on purpose derives from this."""


class FileProblemError(VidbenchError):
    """A problem with one file: the message names the file, the reason and, when known, the fix."""

    def __init__(self, path: str | Path, reason: str, fix: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        msg = f"{self.path}: {reason}"
        if fix:
            msg += f"\n  fix: {fix}"
        super().__init__(msg)


class ConfigError(VidbenchError):
    """A recipe or override is malformed (unknown key, wrong type, missing value)."""


class DataError(VidbenchError):
    """Input data is missing or malformed."""


class AnnotationError(FileProblemError, DataError):
    """An annotation or split file is missing or does not parse."""


class VideoDecodeError(DataError):
    """A video file exists but cannot be decoded (zero bytes, truncated, not a video)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"cannot decode video {self.path}: {reason}\n"
            "  fix: re-download or re-encode this file, or run `vidbench verify-data` and set "
            "data.missing_policy=skip to leave it out (the skip is counted in result.json)"
        )


class MissingWeightsError(VidbenchError):
    """CLIP weights or tokenizer files are not available offline."""


class NotWritableError(VidbenchError):
    """A folder the suite must write (frame cache, manifests, run directory) cannot be written."""

    def __init__(self, folder: str | Path, setting: str, reason: str) -> None:
        self.folder = Path(folder)
        self.setting = setting
        super().__init__(f"cannot write to {self.folder} ({reason}); set {setting} to a writable folder")
