"""Where the MMT feature release keeps things, and which videos each split holds.

The release (``MSRVTT.tar.gz``, ``LSMDC.tar.gz``, ``activity-net.tar.gz`` from
http://thoth.inrialpes.fr/research/video-features/) extracts to one folder per dataset::

    <root>/symlinked-feats/          split lists (+ the 1k-A caption index pickle)
    <root>/vid_feat_files/mult_h5/<id[0]>/<id[1]>/<id[2]>/<id>.h5     one file per video

``<root>`` is what vidbench calls the dataset root (e.g. ``data/MSRVTT``). The split rules below follow
the HCQ loader (which is MMT's with the ``*_full.txt`` names): lists are read line by line and stripped,
LSMDC's CSVs contribute column 0 only, the reference's ``train``/``val`` cut of a training list is a
``RandomState(cross_seed)`` shuffle split at the test-set size, and five caption-less LSMDC clips are
dropped from every split by id.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidbench.errors import AnnotationError, ConfigError

FEATURES_URL = "http://pascal.inrialpes.fr/data2/vgabeur/video-features/"
LANDING_PAGE = "http://thoth.inrialpes.fr/research/video-features/"

# Raw expert dimensions of the release (face is 128-d on LSMDC, see the LSMDC preset).
EXPERT_DIMS: dict[str, int] = {
    "face": 512,
    "ocr": 300,
    "rgb": 2048,
    "s3d": 1024,
    "scene": 2208,
    "speech": 300,
    "vggish": 128,
}
# Seconds covered by one feature row (None: no time, e.g. one row per detected face or word).
EXPERT_FEAT_WIDTH: dict[str, float | None] = {
    "face": None,
    "ocr": None,
    "rgb": 0.2,
    "s3d": 1.0,
    "scene": 1.0,
    "speech": None,
    "vggish": 1.0,
}
# Only these experts take their timings from a stored ``features_t.<e>``; the others are synthesised.
STORED_TIMES_EXPERTS: frozenset[str] = frozenset({"s3d", "vggish"})

# Clips of the LSMDC training CSV that have no caption; the reference drops them from every split by id.
LSMDC_CAPTIONLESS: tuple[str, ...] = (
    "0024_THE_LORD_OF_THE_RINGS_THE_FELLOWSHIP_OF_THE_RING_00.31.10.217-00.31.10.706",
    "1014_2012_00.01.21.399-00.01.23.997",
    "1014_2012_00.27.58.174-00.27.59.021",
    "1018_Body_Of_Lies_00.42.15.677-00.42.18.534",
    "1037_The_Curious_Case_Of_Benjamin_Button_02.25.14.743-02.25.17.312",
)

QUERY_MODES = ("shufk1", "indiv", "cat")


@dataclass(frozen=True)
class MmtPreset:
    """One dataset/cut of the release as HCQ's configs read it.

    :ivar experts: ``(name, raw dim)`` sorted by name: the token order of the video sequence.
    :ivar max_tokens: tokens kept per expert (T); :ivar max_words: words, then word-pieces, per query (W).
    :ivar train_split / test_split: the reference's split names used for training and for evaluation.
    :ivar train_query / test_query: how a query is built from a video's captions (see ``sampling.build_query``).
    :ivar caption_index: file (in ``symlinked-feats``) of ``{video_id: caption index}`` restricting a video's
        captions to one, or None.
    :ivar absent_experts: experts listed in the config that the release never holds for this dataset.
    """

    dataset: str
    cut: str
    folder: str  # the dataset folder name inside the tarball
    tarball: str
    experts: tuple[tuple[str, int], ...]
    max_tokens: int
    max_words: int
    train_split: str
    test_split: str
    train_query: str
    test_query: str
    caption_index: str | None = None
    absent_experts: tuple[str, ...] = ()

    @property
    def expert_dims(self) -> dict[str, int]:
        return dict(self.experts)

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.cut}"


def _experts(names: list[str], **dims: int) -> tuple[tuple[str, int], ...]:
    return tuple((n, dims.get(n, EXPERT_DIMS[n])) for n in sorted(names))


_SEVEN = ["face", "ocr", "rgb", "s3d", "scene", "speech", "vggish"]

MMT_PRESETS: dict[tuple[str, str], MmtPreset] = {
    ("msrvtt", "jsfusion"): MmtPreset(
        "msrvtt", "jsfusion", "MSRVTT", "MSRVTT.tar.gz", _experts(_SEVEN), 30, 30,
        "trainval", "test", "shufk1", "indiv", caption_index="jsfusion_val_caption_idx.pkl",
    ),
    ("msrvtt", "miech"): MmtPreset(
        "msrvtt", "miech", "MSRVTT", "MSRVTT.tar.gz", _experts(_SEVEN), 30, 30,
        "trainval", "test", "shufk1", "indiv",
    ),
    ("msrvtt", "full"): MmtPreset(
        "msrvtt", "full", "MSRVTT", "MSRVTT.tar.gz", _experts(_SEVEN), 30, 30,
        "train", "test", "shufk1", "cat",
    ),
    ("lsmdc", "full"): MmtPreset(
        "lsmdc", "full", "LSMDC", "LSMDC.tar.gz", _experts(_SEVEN, face=128), 30, 30,
        "trainval", "test", "cat", "cat", absent_experts=("speech",),
    ),
    ("activitynet", "val1"): MmtPreset(
        "activitynet", "val1", "activity-net", "activity-net.tar.gz", _experts(["s3d", "vggish"]), 100, 100,
        "trainval", "test", "cat", "cat",
    ),
}  # fmt: skip

# Split list files per (dataset, cut): the training list and the test list (MSRVTT full: see full_lists).
_LISTS: dict[tuple[str, str], tuple[str, str]] = {
    ("msrvtt", "jsfusion"): ("train_list_jsfusion.txt", "val_list_jsfusion.txt"),
    ("msrvtt", "miech"): ("train_list_miech.txt", "test_list_miech.txt"),
    ("lsmdc", "full"): ("LSMDC16_annos_training.csv", "LSMDC16_challenge_1000_publictect.csv"),
    ("activitynet", "val1"): ("train_list.txt", "val_1_list.txt"),
}
_FULL_LISTS = {"train": "train_list_full.txt", "val": "val_list_full.txt", "test": "test_list_full.txt"}


def get_preset(dataset: str, cut: str) -> MmtPreset:
    """The preset of ``dataset``/``cut``; a clear error lists the known ones."""
    key = (dataset.lower(), cut.lower())
    if key not in MMT_PRESETS:
        known = ", ".join(f"{d}/{c}" for d, c in MMT_PRESETS)
        raise ConfigError(f"no MMT-feature preset for {dataset}/{cut}; known: {known}")
    return MMT_PRESETS[key]


def list_dir(root: str | Path) -> Path:
    """``<root>/symlinked-feats``, the folder of split lists."""
    return Path(root) / "symlinked-feats"


def features_dir(root: str | Path) -> Path:
    """``<root>/vid_feat_files/mult_h5``, the folder of per-video h5 files."""
    return Path(root) / "vid_feat_files" / "mult_h5"


def h5_path(root: str | Path, video_id: str) -> Path:
    """The reference's per-video path: ``mult_h5/<id[0]>/<id[1]>/<id[2]>/<id>.h5`` (an id ending in
    ``.h5`` is a path already and is used verbatim)."""
    if video_id.endswith(".h5"):
        return Path(video_id)
    if len(video_id) < 3:
        raise AnnotationError(
            video_id, "video id shorter than 3 characters; the h5 path uses its first three characters"
        )
    return features_dir(root) / video_id[0] / video_id[1] / video_id[2] / f"{video_id}.h5"


def _fetch_fix(preset: MmtPreset, root: Path) -> str:
    return (
        f"download {FEATURES_URL}{preset.tarball} (see {LANDING_PAGE}) and extract it so that "
        f"{root}/symlinked-feats and {root}/vid_feat_files/mult_h5 exist (data.root is the folder holding both)"
    )


def _read_lines(path: Path, preset: MmtPreset, root: Path) -> list[str]:
    if not path.is_file():
        raise AnnotationError(path, "split list not found", _fetch_fix(preset, root))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"cannot read the split list ({err})", _fetch_fix(preset, root)) from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_csv_ids(path: Path, preset: MmtPreset, root: Path) -> list[str]:
    """Column 0 of a tab-separated, header-less LSMDC CSV (the other columns are not read)."""
    ids = []
    for row, line in enumerate(_read_lines(path, preset, root), start=1):
        clip = line.split("\t", 1)[0].strip()
        if not clip:
            raise AnnotationError(path, f"row {row} has an empty first column (the clip id)", _fetch_fix(preset, root))
        ids.append(clip)
    return ids


def read_caption_index(path: Path, preset: MmtPreset, root: Path) -> dict[str, int]:
    """The pickled ``{video_id: caption index}`` dict (read with ``encoding='latin1'`` as the reference)."""
    if not path.is_file():
        raise AnnotationError(path, "caption index pickle not found", _fetch_fix(preset, root))
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a broken file
        raise AnnotationError(path, f"cannot unpickle ({type(err).__name__}: {err})", _fetch_fix(preset, root)) from err
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, int | np.integer) for k, v in obj.items()
    ):
        raise AnnotationError(path, "expected a pickled dict {video_id (str): caption index (int)}")
    return {k: int(v) for k, v in obj.items()}


def _list_reader(preset: MmtPreset):
    return _read_csv_ids if preset.dataset == "lsmdc" else _read_lines


def split_ids(root: str | Path, preset: MmtPreset, split: str, cross_seed: int = 0) -> list[str]:
    """Video ids of ``split`` in the reference's order.

    * MSRVTT ``full``: ``train``/``val``/``test`` are the three ``*_full.txt`` lists; ``trainval`` is
      val + train (HCQ's redefinition; HCQ's full config trains on ``train``).
    * every other cut: ``test`` is the test list; ``trainval`` the whole training list shuffled with
      ``RandomState(cross_seed)``; ``val`` its first len(test) ids and ``train`` the rest.
    * LSMDC: the five caption-less clips (:data:`LSMDC_CAPTIONLESS`) are removed from every split.
    """
    root = Path(root)
    folder = list_dir(root)
    if not folder.is_dir():
        raise AnnotationError(folder, "folder of split lists not found", _fetch_fix(preset, root))
    if preset.cut == "full" and preset.dataset == "msrvtt":
        if split == "trainval":
            ids = _read_lines(folder / _FULL_LISTS["val"], preset, root)
            ids += _read_lines(folder / _FULL_LISTS["train"], preset, root)
        elif split in _FULL_LISTS:
            ids = _read_lines(folder / _FULL_LISTS[split], preset, root)
        else:
            raise ConfigError(f"unknown split {split!r} for {preset.name}; use train, val, test or trainval")
    else:
        read = _list_reader(preset)
        train_file, test_file = _LISTS[(preset.dataset, preset.cut)]
        test_ids = read(folder / test_file, preset, root)
        if split == "test":
            ids = test_ids
        elif split in ("trainval", "train", "val"):
            ids = read(folder / train_file, preset, root)
            np.random.RandomState(cross_seed).shuffle(ids)
            if split == "train":
                ids = ids[len(test_ids) :]
            elif split == "val":
                ids = ids[: len(test_ids)]
        else:
            raise ConfigError(f"unknown split {split!r} for {preset.name}; use trainval, train, val or test")
    if preset.dataset == "lsmdc":
        dropped = set(LSMDC_CAPTIONLESS)
        ids = [i for i in ids if i not in dropped]
    return ids


def caption_index_for(root: str | Path, preset: MmtPreset) -> dict[str, int] | None:
    """The preset's caption index (MSRVTT 1k-A's one test caption per video), or None."""
    if preset.caption_index is None:
        return None
    root = Path(root)
    return read_caption_index(list_dir(root) / preset.caption_index, preset, root)


def release_files(preset: MmtPreset) -> list[str]:
    """The ``symlinked-feats`` files a preset reads (split lists and, for 1k-A, the caption index)."""
    if preset.dataset == "msrvtt" and preset.cut == "full":
        names = list(_FULL_LISTS.values())
    else:
        names = list(_LISTS[(preset.dataset, preset.cut)])
    if preset.caption_index:
        names.append(preset.caption_index)
    return names


def missing_release_message(root: str | Path, dataset: str, cut: str) -> str | None:
    """None when ``root`` looks like an extracted release for this preset, else one line saying what to fill.

    Cheap (no h5 file is opened): the split lists must exist and ``vid_feat_files/mult_h5`` must be a
    non-empty folder. Meant for suites that skip the HCQ-MMT recipes of users without the features.
    """
    preset = get_preset(dataset, cut)
    root = Path(root)
    absent = [n for n in release_files(preset) if not (list_dir(root) / n).is_file()]
    feats = features_dir(root)
    has_feats = feats.is_dir() and any(feats.iterdir())
    if not absent and has_feats:
        return None
    what = []
    if absent:
        what.append(f"{list_dir(root)} (lacks {', '.join(absent)})")
    if not has_feats:
        what.append(f"{feats} (no per-video .h5 files)")
    return (
        f"MMT features for {preset.name} not found: fill {' and '.join(what)} by extracting "
        f"{FEATURES_URL}{preset.tarball} into {root.parent if root.name == preset.folder else root}"
    )
