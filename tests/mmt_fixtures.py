"""Tiny trees in the exact on-disk format of the MMT feature release, for tests of the MMT-feature path.

``write_msrvtt(folder)``, ``write_lsmdc(folder)`` and ``write_activitynet(folder)`` write, under
``folder`` (the dataset root that ``MmtFeatureDataset`` takes):

* ``symlinked-feats/``: the split lists with the real file names (MSRVTT: ``*_jsfusion``, ``*_miech``,
  ``*_full``; LSMDC: the two tab-separated CSVs; ActivityNet: ``train_list.txt``/``val_1_list.txt``) and
  MSRVTT's ``jsfusion_val_caption_idx.pkl``;
* ``vid_feat_files/mult_h5/<id[0]>/<id[1]>/<id[2]>/<id>.h5``: flat files with ``raw_captions.<i>``
  (word arrays, bytes or str), ``features.<expert>`` at the release's dims and ``features_t.s3d``.

Feature rows carry their own row number in column 0 (``rows[i, 0] == i``), so tests can see which rows
were kept and in which order. Each writer returns an :class:`MmtFixture` saying what it wrote, including
the deliberately missing experts (absent key, empty array, NaN-led array) and any missing/broken files.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidbench.data.mmt.layout import EXPERT_DIMS, LSMDC_CAPTIONLESS, h5_path

SEVEN = ("face", "ocr", "rgb", "s3d", "scene", "speech", "vggish")


@dataclass
class MmtFixture:
    """What a writer produced. ``lists`` maps each split-list file name to its ids, in file order."""

    root: Path
    dataset: str
    lists: dict[str, list[str]]
    captions: dict[str, list[list[str]]]  # video id -> captions as word lists, in stored order
    features: dict[str, dict[str, np.ndarray]]  # video id -> expert -> rows as written (incl. empty/NaN)
    stored_times: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # id -> expert -> [N, 2]
    caption_index: dict[str, int] = field(default_factory=dict)
    missing_files: list[str] = field(default_factory=list)
    broken_files: list[str] = field(default_factory=list)

    def h5(self, video_id: str) -> Path:
        return h5_path(self.root, video_id)


def rows_for(n: int, dim: int, seed: int) -> np.ndarray:
    """``[n, dim]`` float32 rows with the row number in column 0."""
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    rows[:, 0] = np.arange(n, dtype=np.float32)
    return rows


def write_h5(
    path: Path,
    captions: list[list[str]],
    features: dict[str, np.ndarray],
    stored_times: dict[str, np.ndarray] | None = None,
    *,
    as_bytes: bool = True,
) -> Path:
    """One flat per-video file with the release's key names."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for i, words in enumerate(captions):
            if as_bytes:
                width = max(1, max((len(w.encode()) for w in words), default=1))
                f.create_dataset(f"raw_captions.{i}", data=np.array([w.encode() for w in words], dtype=f"S{width}"))
            else:
                f.create_dataset(f"raw_captions.{i}", data=words, dtype=h5py.string_dtype("utf-8"))
        for expert, rows in features.items():
            f.create_dataset(f"features.{expert}", data=rows)
        for expert, t in (stored_times or {}).items():
            f.create_dataset(f"features_t.{expert}", data=t)
    return path


def _write_list(path: Path, ids: list[str], trailing_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + ("\n" if trailing_newline else ""), encoding="utf-8")


def _break(fx: MmtFixture, video_id: str) -> None:
    fx.h5(video_id).write_bytes(b"this is not an HDF5 file")
    fx.broken_files.append(video_id)


def _drop(fx: MmtFixture, video_id: str) -> None:
    fx.h5(video_id).unlink()
    fx.missing_files.append(video_id)


def write_msrvtt(
    folder: str | Path, *, n_videos: int = 10, missing: tuple[str, ...] = (), broken: tuple[str, ...] = ()
) -> MmtFixture:
    """MSRVTT: ``video0..video{n-1}`` with 3 captions each and the seven experts (face 512-d).

    Splits (n = 10): jsfusion train video0-7 / test video8, video9 (caption index {video8: 1, video9: 2});
    miech train video0-6 / test video7-9; full train video0-5 / val video6 / test video7-9.
    Experts: video1 has no ``features.face`` key, video2's face rows are NaN, video3's speech is empty;
    rgb has 40 rows (> 30: sampled), the others fewer than 30 (padded); video0 stores ``features_t.s3d``
    with starts 2i and ends 2i + 1 (centres 2i + 0.5, so t = 2i + 2.5).
    """
    root = Path(folder)
    ids = [f"video{k}" for k in range(n_videos)]
    lists = {
        "train_list_jsfusion.txt": ids[:-2],
        "val_list_jsfusion.txt": ids[-2:],
        "train_list_miech.txt": ids[:-3],
        "test_list_miech.txt": ids[-3:],
        "train_list_full.txt": ids[:-4],
        "val_list_full.txt": ids[-4:-3],
        "test_list_full.txt": ids[-3:],
    }
    fx = MmtFixture(root, "msrvtt", lists, {}, {}, caption_index={ids[-2]: 1, ids[-1]: 2})
    for name, listed in lists.items():
        _write_list(root / "symlinked-feats" / name, listed, trailing_newline=name != "val_list_jsfusion.txt")
    with (root / "symlinked-feats" / "jsfusion_val_caption_idx.pkl").open("wb") as f:
        pickle.dump(fx.caption_index, f)
    counts = {"face": 3, "ocr": 2, "rgb": 40, "s3d": 12, "scene": 5, "speech": 4, "vggish": 8}
    for k, vid in enumerate(ids):
        caps = [f"A man number {k} cooks pasta in caption {c}".split() for c in range(3)]
        feats = {e: rows_for(counts[e], EXPERT_DIMS[e], seed=100 * k + j) for j, e in enumerate(SEVEN)}
        if k == 1:
            del feats["face"]
        if k == 2:
            feats["face"][:] = np.nan
        if k == 3:
            feats["speech"] = np.zeros((0, EXPERT_DIMS["speech"]), np.float32)
        stored = {}
        if k == 0:
            starts = 2.0 * np.arange(counts["s3d"])
            stored["s3d"] = np.stack([starts, starts + 1.0], axis=1)
        write_h5(fx.h5(vid), caps, feats, stored, as_bytes=k % 2 == 0)
        fx.captions[vid] = caps
        fx.features[vid] = feats
        fx.stored_times[vid] = stored
    for vid in missing:
        _drop(fx, vid)
    for vid in broken:
        _break(fx, vid)
    return fx


LSMDC_TRAIN = [f"00{m}_Movie_{m}_00.0{k}.10.000-00.0{k}.12.500" for m in (10, 11) for k in range(3)]
LSMDC_TEST = ["3001_Test_Movie_00.01.00.000-00.01.02.000", "3002_Test_Movie_00.02.00.000-00.02.03.000"]


def write_lsmdc(folder: str | Path, *, missing: tuple[str, ...] = (), broken: tuple[str, ...] = ()) -> MmtFixture:
    """LSMDC: six training clips (+ one of the caption-less clips the reference drops, without a file) and
    two test clips, in header-less six-column tab-separated CSVs; one caption each, face 128-d, no speech key.
    """
    root = Path(folder)
    train_rows = [*LSMDC_TRAIN[:3], LSMDC_CAPTIONLESS[0], *LSMDC_TRAIN[3:]]
    lists = {"LSMDC16_annos_training.csv": train_rows, "LSMDC16_challenge_1000_publictect.csv": LSMDC_TEST}
    fx = MmtFixture(root, "lsmdc", lists, {}, {})
    for name, listed in lists.items():
        lines = [
            f"{vid}\t00.00.00.000\t00.00.02.000\t00.00.00.000\t00.00.02.000\tSomeone opens a door." for vid in listed
        ]
        _write_list(root / "symlinked-feats" / name, lines)
    dims = {**EXPERT_DIMS, "face": 128}
    for k, vid in enumerate(LSMDC_TRAIN + LSMDC_TEST):
        caps = [f"Someone opens door {k} slowly".split()]
        feats = {e: rows_for(4 + k, dims[e], seed=7 * k + j) for j, e in enumerate(SEVEN) if e != "speech"}
        write_h5(fx.h5(vid), caps, feats)
        fx.captions[vid] = caps
        fx.features[vid] = feats
    for vid in missing:
        _drop(fx, vid)
    for vid in broken:
        _break(fx, vid)
    return fx


ANET_TRAIN = ["v_QOlSCBRmfWY", "v_ehGHCYKzyZ8", "v_nwznKOuZM7w", "v_ogQozSI5V8U"]
ANET_TEST = ["v_uqiMw7tQ1Cc", "v_bXdq2zI1Ms0", "v_FsS_NCZEfaI"]


def write_activitynet(folder: str | Path, *, missing: tuple[str, ...] = (), broken: tuple[str, ...] = ()) -> MmtFixture:
    """ActivityNet: ``v_…`` ids, a paragraph of 2-3 sentences per video (one per ``raw_captions.<i>``),
    only s3d and vggish. The first test video's paragraph has 120 words (> 100: cut) and 130 s3d rows
    (> 100: sampled)."""
    root = Path(folder)
    lists = {"train_list.txt": ANET_TRAIN, "val_1_list.txt": ANET_TEST}
    fx = MmtFixture(root, "activitynet", lists, {}, {})
    for name, listed in lists.items():
        _write_list(root / "symlinked-feats" / name, listed)
    for k, vid in enumerate(ANET_TRAIN + ANET_TEST):
        sentences = [f"Sentence {s} of video {k} shows people .".split() for s in range(2 + k % 2)]
        s3d_rows = 20 + k
        if vid == ANET_TEST[0]:
            sentences = [[f"w{i}" for i in range(60)], [f"x{i}" for i in range(60)]]
            s3d_rows = 130
        feats = {"s3d": rows_for(s3d_rows, 1024, seed=k), "vggish": rows_for(10 + k, 128, seed=50 + k)}
        write_h5(fx.h5(vid), sentences, feats)
        fx.captions[vid] = sentences
        fx.features[vid] = feats
    for vid in missing:
        _drop(fx, vid)
    for vid in broken:
        _break(fx, vid)
    return fx


def write_tiny_bert_vocab(path: str | Path, words: list[str] | None = None) -> Path:
    """A BERT ``vocab.txt``: the specials at the usual low ids, then the given (cased) words and word-pieces."""
    specials = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    base = words or [
        ".", "a", "A", "man", "Man", "number", "cooks", "pasta", "in", "caption", "someone", "opens", "door",
        "slowly", "sentence", "of", "video", "shows", "people", "cafe", "Café", "##s", "##0", "##1", "##2",
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "w", "x",
    ]  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(specials + base) + "\n", encoding="utf-8")
    return path
