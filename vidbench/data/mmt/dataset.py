"""A torch Dataset over one split of the MMT feature release: one sample = one video + one query.

Construction scans the split once: every listed id's h5 file is opened, its captions read (and
tokenised) and each expert's shape checked from metadata. A missing, unreadable or caption-less file is a
*failure*: with ``policy="fail"`` (the default for test splits) the first ones are listed in a
:class:`~vidbench.errors.DataError` with the fix; with ``policy="skip"`` (training) they are left out and
counted (:meth:`MmtFeatureDataset.data_report`). Truncation of the queries is counted per split
(:meth:`MmtFeatureDataset.text_report`, the ``data.text.<split>`` block of result.json).

``__getitem__`` reads the video's features from its h5 file and applies the loader rules of
:mod:`vidbench.data.mmt.sampling`. A file that breaks after the scan raises in evaluation; in training
(skip policy) it is replaced by the next good video and counted, never a zero tensor.

Randomness: evaluation is deterministic (the reference's ``RandomState(0)`` subset, fixed queries).
Training draws the caption (``shufk1``) and the token subset from a generator seeded by
``(seed, epoch, index)``, so a resumed run sees the same samples; the reference uses the global numpy /
Python RNGs instead (same distribution, not the same draws).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vidbench.data.bert_text import BertQueryTokenizer
from vidbench.data.mmt.h5file import MmtFileError, MmtVideoRecord, read_mmt_h5
from vidbench.data.mmt.layout import (
    EXPERT_FEAT_WIDTH,
    MmtPreset,
    caption_index_for,
    get_preset,
    h5_path,
    split_ids,
)
from vidbench.data.mmt.sampling import (
    build_query,
    crop_words,
    expert_arrays,
    missing_expert,
    stored_centres,
    synthesised_centres,
    token_times,
)
from vidbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "trainval")


@dataclass
class _Query:
    """One possible query of a video: token ids (unpadded) and its truncation figures."""

    ids: list[int]
    full_tokens: int


@dataclass
class _Video:
    video_id: str
    path: Path
    queries: list[_Query]  # the fixed query (indiv/cat) or every caption (shufk1)


@dataclass
class TextStats:
    """Query truncation counts of one split (the ``data.text.<split>`` block of result.json)."""

    captions: int = 0
    captions_truncated: int = 0
    tokens_dropped: int = 0
    longest_tokens: int = 0
    max_words: int = 0
    ids_without_captions: int = 0

    def add(self, q: _Query) -> None:
        self.captions += 1
        dropped = q.full_tokens - len(q.ids)
        self.captions_truncated += int(dropped > 0)
        self.tokens_dropped += max(dropped, 0)
        self.longest_tokens = max(self.longest_tokens, q.full_tokens)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class ScanResult:
    videos: list[_Video] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # video id -> reason
    stats: TextStats = field(default_factory=TextStats)
    not_in_caption_index: int = 0


class MmtFeatureDataset(Dataset):
    """Samples of one split of the MMT feature release.

    :param root: the dataset folder holding ``symlinked-feats/`` and ``vid_feat_files/``.
    :param dataset / cut: a preset of :data:`~vidbench.data.mmt.layout.MMT_PRESETS` (e.g. msrvtt/jsfusion).
    :param split: ``trainval``/``train`` (training: random caption and tokens) or ``val``/``test``.
    :param tokenizer: the BERT query tokenizer (:mod:`vidbench.data.bert_text`).
    :param policy: ``fail`` or ``skip`` for missing/malformed files (see module docstring).
    :param length: training only: the epoch length in samples; sample i is video ``i % n`` (the reference
        draws 32,000 samples per epoch from the list this way). Default: one sample per video.
    :param max_tokens / max_words: override the preset's T and W (tiny tests).
    :param scan_workers: processes for the up-front scan (0: in this process). The scan opens every file
        once (~10 ms each): about 1.5 min for MSRVTT's 9,000 training files, ~15 min for LSMDC's 101k.
    """

    def __init__(
        self,
        root: str | Path,
        dataset: str,
        cut: str,
        split: str,
        tokenizer: BertQueryTokenizer,
        *,
        policy: str = "fail",
        seed: int = 0,
        length: int | None = None,
        max_tokens: int | None = None,
        max_words: int | None = None,
        cross_seed: int = 0,
        scan_workers: int = 0,
    ) -> None:
        if policy not in ("fail", "skip"):
            raise ConfigError(f"policy must be 'fail' or 'skip'; got {policy!r}")
        self.root = Path(root)
        self.preset: MmtPreset = get_preset(dataset, cut)
        self.split = split
        self.training = split in TRAINING_SPLITS
        self.query_mode = self.preset.train_query if self.training else self.preset.test_query
        self.tokenizer = tokenizer
        self.policy = policy
        self.seed = seed
        self.epoch = 0
        self.max_tokens = max_tokens or self.preset.max_tokens
        self.max_words = max_words or self.preset.max_words
        self.experts = self.preset.expert_dims  # sorted by name
        if length is not None and not self.training:
            raise ConfigError("length (samples per epoch) applies to training splits only")
        ids = split_ids(self.root, self.preset, split, cross_seed)
        if not ids:
            raise DataError(f"split {self.preset.name}/{split} under {self.root} lists no video")
        self.caption_index = caption_index_for(self.root, self.preset)
        scan = self._scan(ids, scan_workers)
        self.num_listed = len(ids)
        self.stats = scan.stats
        self.not_in_caption_index = scan.not_in_caption_index
        self.skipped = self._apply_policy(scan)
        self.videos = scan.videos
        self.length = length
        self.read_failures = torch.zeros(1, dtype=torch.long).share_memory_()

    # -- preparation ------------------------------------------------------------------------------
    def _queries(self, record: MmtVideoRecord, video_id: str, scan: ScanResult) -> list[_Query]:
        captions, times = record.captions, record.caption_times
        if not captions:
            return []
        if self.caption_index is not None:
            if video_id in self.caption_index:
                k = self.caption_index[video_id]
                if not 0 <= k < len(captions):
                    raise MmtFileError(
                        h5_path(self.root, video_id),
                        f"the caption index {self.preset.caption_index} picks caption {k} but the file has "
                        f"{len(captions)}",
                    )
                captions, times = [captions[k]], [times[k]]
            elif not self.training:
                scan.not_in_caption_index += 1
        if self.query_mode == "shufk1":
            candidates = [build_query([c], [t], "indiv") for c, t in zip(captions, times, strict=True)]
        else:
            candidates = [build_query(captions, times, self.query_mode)]
        out = []
        for words, wtimes in candidates:
            if not words:
                continue
            ids, _ = self.tokenizer.encode_words(crop_words(words, wtimes, self.max_words), self.max_words)
            full = len(self.tokenizer.pieces(crop_words(words, wtimes, len(words)))) + 2
            out.append(_Query(ids, full))
        return out

    def _records(self, ids: Sequence[str], workers: int) -> Iterator[tuple[str, MmtVideoRecord | MmtFileError]]:
        """Captions (+ metadata checks) of every listed file, in list order; in ``workers`` processes if > 0."""
        jobs = [(str(h5_path(self.root, vid)), self.experts) for vid in ids]
        if workers > 0 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                yield from zip(ids, pool.map(_read_for_scan, jobs, chunksize=64), strict=True)
        else:
            yield from zip(ids, map(_read_for_scan, jobs), strict=True)

    def _scan(self, ids: Sequence[str], workers: int) -> ScanResult:
        scan = ScanResult()
        scan.stats.max_words = self.max_words
        for n, (vid, record) in enumerate(self._records(ids, workers)):
            if n and n % 5000 == 0:
                log.info("%s/%s: scanned %d of %d feature files", self.preset.name, self.split, n, len(ids))
            path = h5_path(self.root, vid)
            try:
                if isinstance(record, MmtFileError):
                    raise record
                queries = self._queries(record, vid, scan)
            except MmtFileError as err:
                scan.failures[vid] = str(err)
                continue
            if not queries:
                scan.stats.ids_without_captions += 1
                scan.failures[vid] = f"{path}: no caption (no non-empty raw_captions.<i> key)"
                continue
            for q in queries:
                scan.stats.add(q)
            scan.videos.append(_Video(vid, path, queries))
        return scan

    def _apply_policy(self, scan: ScanResult) -> dict[str, str]:
        if not scan.failures:
            return {}
        name = f"{self.preset.name}/{self.split}"
        if self.policy == "fail":
            first = list(scan.failures.items())[:10]
            lines = "\n".join(f"    {vid}: {reason.splitlines()[0]}" for vid, reason in first)
            raise DataError(
                f"{len(scan.failures)} of {self.num_listed} videos of {name} have a missing, unreadable "
                f"or caption-less feature file under {self.root}; first ones:\n{lines}\n"
                f"  fix: extract {self.preset.tarball} under {self.root} (see README, 'MMT features'), or set "
                "the missing policy of this split to skip to leave them out (counted in result.json)"
            )
        if not scan.videos:
            raise DataError(f"no video of {name} under {self.root} has a readable feature file with a caption")
        log.warning("%s: skipping %d videos with missing/malformed feature files", name, len(scan.failures))
        return dict(scan.failures)

    # -- sampling ---------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.videos)

    def _video_arrays(self, record: MmtVideoRecord, rng: np.random.Generator | None) -> dict[str, Any]:
        out: dict[str, dict[str, Tensor]] = {
            k: {} for k in ("features", "features_t", "features_ind", "features_avgpool", "features_maxpool")
        }
        for expert, dim in self.experts.items():
            rows = record.features.get(expert)
            if rows is None:
                arr = missing_expert(dim, self.max_tokens)
            else:
                stored = record.times.get(expert)
                centres = (
                    stored_centres(stored)
                    if stored is not None
                    else synthesised_centres(len(rows), EXPERT_FEAT_WIDTH[expert])
                )
                arr = expert_arrays(rows, token_times(centres), self.max_tokens, rng)
            out["features"][expert] = torch.from_numpy(arr.features)
            out["features_t"][expert] = torch.from_numpy(arr.times)
            out["features_ind"][expert] = torch.from_numpy(arr.mask)
            out["features_avgpool"][expert] = torch.from_numpy(arr.avgpool)
            out["features_maxpool"][expert] = torch.from_numpy(arr.maxpool)
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.videos)
        vid_index = i % n
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.training else None
        for step in range(n):
            chosen = (vid_index + step) % n
            video = self.videos[chosen]
            try:
                record = read_mmt_h5(video.path, self.experts)
                break
            except MmtFileError as err:
                if not self.training or self.policy == "fail":
                    raise
                self.read_failures += 1
                log.warning("%s; using the next video of the split instead (counted)", err)
        else:
            raise DataError(f"no feature file of {self.preset.name}/{self.split} could be read")
        # shufk1: one of the video's captions, uniformly (the reference shuffles them and keeps the first).
        query = video.queries[int(rng.integers(len(video.queries)))] if rng is not None else video.queries[0]
        ids = torch.zeros(self.max_words, dtype=torch.long)  # queries are at most W word-pieces
        mask = torch.zeros(self.max_words, dtype=torch.long)
        ids[: len(query.ids)] = torch.tensor(query.ids, dtype=torch.long)
        mask[: len(query.ids)] = 1
        return {
            "video_id": video.video_id,
            "index": torch.tensor(chosen),
            "token_ids": ids,
            "token_mask": mask,
            **self._video_arrays(record, rng),
        }

    # -- what the result record needs ---------------------------------------------------------------
    @property
    def video_ids(self) -> list[str]:
        return [v.video_id for v in self.videos]

    def text_report(self) -> dict[str, int]:
        """``{"captions", "captions_truncated", "tokens_dropped", "longest_tokens", "max_words",
        "ids_without_captions"}`` over the split's queries (training: every caption a query can be)."""
        return self.stats.as_dict()

    def data_report(self) -> dict[str, Any]:
        """Missing/malformed-file policy outcome, in the keys the video path uses."""
        return {
            "missing_policy": self.policy,
            "skipped_videos": len(self.skipped),
            "skipped_ids": list(self.skipped)[:20],
            "decode_failures_replaced": int(self.read_failures.item()),
            "num_annotated_videos": self.num_listed,
            "not_in_caption_index": self.not_in_caption_index,
        }


def _read_for_scan(job: tuple[str, dict[str, int]]) -> MmtVideoRecord | MmtFileError:
    """Top level (picklable for worker processes): the file's captions and metadata checks, or the error."""
    path, experts = job
    try:
        return read_mmt_h5(path, experts, load_features=False)
    except MmtFileError as err:
        return err


def collate_mmt(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: tensors ``[B, ...]``, per-expert dicts of ``[B, ...]``, ``video_id`` a list."""
    if not samples:
        raise ValueError("collate_mmt: empty batch")
    batch: dict[str, Any] = {"video_id": [s["video_id"] for s in samples]}
    for key, value in samples[0].items():
        if key == "video_id":
            continue
        if isinstance(value, dict):
            batch[key] = {e: torch.stack([s[key][e] for s in samples]) for e in value}
        else:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch
