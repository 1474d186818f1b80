"""Reading one per-video ``.h5`` file of the MMT release, with errors that name the file and the key.

The file is flat (no groups). Keys used:

* ``raw_captions.<i>`` (i = 0..n-1, contiguous): a 1-D array of words (bytes or str);
* ``raw_captions_t.<i>`` (optional): ``[n_words, 2]`` word start/end seconds, cut to the caption length;
* ``features.<expert>``: ``[N_e, D_e]`` float rows; absent, empty or NaN in ``[0, 0]`` means *missing*;
* ``features_t.<expert>`` (optional, read for s3d and vggish only): ``[N_e, 2]`` start/end seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidbench.data.mmt.layout import STORED_TIMES_EXPERTS
from vidbench.errors import DataError, FileProblemError

CAPTION_PREFIX = "raw_captions."
CAPTION_TIMES_PREFIX = "raw_captions_t."

_FIX = (
    "re-extract this file from the release tarball (see README, 'MMT features'), or set "
    "data.missing_policy_train=skip / data.missing_policy_test=skip to leave the video out (counted in result.json)"
)


class MmtFileError(FileProblemError, DataError):
    """A per-video h5 file is missing, unreadable or malformed (the message names the file and the key)."""

    def __init__(self, path: str | Path, reason: str, fix: str = _FIX) -> None:
        super().__init__(path, reason, fix)
        self.fix = fix

    def __reduce__(self):  # picklable across the scan's worker processes
        return (type(self), (self.path, self.reason, self.fix))


@dataclass
class MmtVideoRecord:
    """What one h5 file holds for the experts asked for.

    ``captions[i]`` is caption i as a list of words; ``caption_times[i]`` its ``[n_words, 2]`` timings or
    None. ``features`` and ``times`` hold only the *present* experts; ``times[e]`` is ``[N_e, 2]`` when
    stored (s3d/vggish) and None otherwise (synthesised later from the expert's feature width).
    """

    captions: list[list[str]]
    caption_times: list[np.ndarray | None]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    times: dict[str, np.ndarray | None] = field(default_factory=dict)


def _words(path: Path, key: str, value: np.ndarray) -> list[str]:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise MmtFileError(path, f"{key!r} has shape {arr.shape}; expected a 1-D array of words")
    words = []
    for w in arr.tolist():
        if isinstance(w, bytes):
            try:
                w = w.decode("utf-8")
            except UnicodeDecodeError as err:
                raise MmtFileError(path, f"{key!r} holds a word that is not UTF-8 ({err})") from err
        elif not isinstance(w, str):
            raise MmtFileError(path, f"{key!r} holds a {type(w).__name__}, expected word strings")
        words.append(w)
    return words


def _read_captions(path: Path, f) -> tuple[list[list[str]], list[np.ndarray | None]]:
    keys = [k for k in f if k.startswith(CAPTION_PREFIX)]
    captions, times = [], []
    for i in range(len(keys)):
        key = f"{CAPTION_PREFIX}{i}"
        if key not in f:
            raise MmtFileError(
                path, f"{len(keys)} caption keys but {key!r} is absent (indices must run 0..n-1): {sorted(keys)[:5]}"
            )
        words = _words(path, key, f[key][()])
        captions.append(words)
        tkey = f"{CAPTION_TIMES_PREFIX}{i}"
        if tkey in f:
            t = np.asarray(f[tkey][()], dtype=np.float64)
            if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] < len(words):
                raise MmtFileError(path, f"{tkey!r} has shape {t.shape}; expected [n_words >= {len(words)}, 2]")
            times.append(t[: len(words)])
        else:
            times.append(None)
    return captions, times


def _check_expert(path: Path, f, expert: str, dim: int) -> bool:
    """Validate ``features.<expert>``'s metadata; True when present (not absent, empty or NaN-led)."""
    key = f"features.{expert}"
    if key not in f:
        return False
    ds = f[key]
    if not hasattr(ds, "shape") or len(ds.shape) != 2:
        raise MmtFileError(path, f"{key!r} has shape {getattr(ds, 'shape', None)}; expected [N, {dim}]")
    if ds.shape[0] == 0:
        return False
    if ds.shape[1] != dim:
        raise MmtFileError(
            path,
            f"{key!r} has {ds.shape[1]} dims but the preset expects {dim}",
            "check data.dataset/data.cut: the face expert is 512-d on MSRVTT and 128-d on LSMDC",
        )
    return not bool(np.isnan(float(ds[0, 0])))


def read_mmt_h5(path: str | Path, experts: dict[str, int], *, load_features: bool = True) -> MmtVideoRecord:
    """Read captions and (when ``load_features``) the present experts' rows and stored timings.

    With ``load_features=False`` only the captions are read and every expert's shape is checked from the
    file's metadata (used by the up-front scan of a split). The expert keys of ``features`` are then
    present experts mapped to empty arrays.

    :raises MmtFileError: missing file, not HDF5, non-contiguous caption keys, wrong shapes or dims.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MmtFileError(path, "feature file not found")
    try:
        with h5py.File(path, "r") as f:
            captions, caption_times = _read_captions(path, f)
            record = MmtVideoRecord(captions, caption_times)
            for expert, dim in experts.items():
                if not _check_expert(path, f, expert, dim):
                    continue
                if not load_features:
                    record.features[expert] = np.zeros((0, dim), dtype=np.float32)
                    record.times[expert] = None
                    continue
                rows = np.asarray(f[f"features.{expert}"][()], dtype=np.float32)
                record.features[expert] = rows
                tkey = f"features_t.{expert}"
                stored = None
                if expert in STORED_TIMES_EXPERTS and tkey in f:
                    stored = np.asarray(f[tkey][()], dtype=np.float64)
                    if stored.ndim != 2 or stored.shape[1] != 2 or stored.shape[0] < len(rows):
                        raise MmtFileError(path, f"{tkey!r} has shape {stored.shape}; expected [>= {len(rows)}, 2]")
                    stored = stored[: len(rows)]
                record.times[expert] = stored
    except MmtFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise MmtFileError(path, f"not a readable MMT feature file ({type(err).__name__}: {err})") from err
    return record
