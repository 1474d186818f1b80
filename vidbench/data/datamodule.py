"""One generic LightningDataModule for every dataset adapter.

Training samples are (video, caption) pairs; evaluation has two loaders, the split's texts and its
videos, so a multi-caption split encodes each video once. Evaluation batches carry dataset indices, so
evaluation under DDP can drop the duplicates a DistributedSampler pads with.

Bad videos are handled before any epoch starts: with the frame cache on (the default) every clip is
decoded once up front and a missing or undecodable file is either an error listing the ids (policy
``fail``, the default for test splits) or left out and counted (policy ``skip``); the count goes into
the run's result record. Without the cache, missing files follow the same policy and a clip that fails
to decode mid-epoch is replaced by the next good clip of the split and counted, never a zero tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vidbench.data.datasets import load_split
from vidbench.data.frame_cache import FrameCache
from vidbench.data.text import TextTokenizer, format_text_counts, tokenize_counted
from vidbench.data.types import SplitIndex
from vidbench.data.verify import search_hint, video_fix
from vidbench.data.video import load_clip
from vidbench.errors import DataError, VideoDecodeError
from vidbench.locations import default_cache_root

log = logging.getLogger(__name__)


@dataclass
class ClipSampling:
    """How clips are sampled and sized; part of the frame cache key."""

    max_frames: int
    size: int
    framerate: float = 1.0
    slice_framepos: int = 2
    fps_mode: str = "int"


@dataclass
class PreparedSplit:
    """A split after the missing-video policy: what is evaluated or trained on, and what was left out."""

    index: SplitIndex
    source: FrameSource
    skipped: dict[str, str] = field(default_factory=dict)  # video_id -> reason
    policy: str = "fail"


class FrameSource:
    """Frames of the kept videos of a split, from the frame cache or decoded on demand."""

    def __init__(self, index: SplitIndex, sampling: ClipSampling, cache: FrameCache | None, rows: list[int]):
        self.index = index
        self.sampling = sampling
        self.cache = cache
        self.rows = rows  # row in the cache of each kept video
        self.decode_failures = torch.zeros(1, dtype=torch.long).share_memory_()

    def __len__(self) -> int:
        return len(self.index.videos)

    def get(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            return self.cache.get(self.rows[i])
        n = len(self.index.videos)
        for step in range(n):
            ref = self.index.videos[(i + step) % n]
            try:
                return load_clip(
                    ref.path,
                    max_frames=self.sampling.max_frames,
                    size=self.sampling.size,
                    framerate=self.sampling.framerate,
                    slice_framepos=self.sampling.slice_framepos,
                    start_s=ref.start_s,
                    end_s=ref.end_s,
                    fps_mode=self.sampling.fps_mode,
                )
            except VideoDecodeError as exc:
                self.decode_failures += 1
                log.warning("%s; using the next clip of the split instead (counted)", exc)
        raise DataError(
            f"no video of split {self.index.dataset}/{self.index.split} could be decoded: {search_hint(self.index)}"
            f"\n  fix: {video_fix(self.index)}; run `vidbench verify-data <recipe>` for the reason per video"
        )


class TrainPairs(Dataset):
    """Every (video, caption) pair (``expand=True``) or one caption per video per epoch."""

    def __init__(self, split: PreparedSplit, ids: torch.Tensor, mask: torch.Tensor, expand: bool, seed: int):
        self.split, self.ids, self.mask = split, ids, mask
        self.expand, self.seed, self.epoch = expand, seed, 0
        cap_video = np.asarray(split.index.caption_video, dtype=np.int64)
        self.caption_video = cap_video
        self.first_caption = np.searchsorted(cap_video, np.arange(len(split.index.videos)))
        self.num_captions = np.bincount(cap_video, minlength=len(split.index.videos))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids) if self.expand else len(self.split.index.videos)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.expand:
            cap, vid = i, int(self.caption_video[i])
        else:
            vid = i
            rng = np.random.default_rng((self.seed, self.epoch, i))
            cap = int(self.first_caption[i] + rng.integers(self.num_captions[i]))
        frames, fmask = self.split.source.get(vid)
        return {
            "input_ids": self.ids[cap],
            "attention_mask": self.mask[cap],
            "video": frames,
            "video_mask": fmask,
            "index": torch.tensor(cap),
            "video_index": torch.tensor(vid),
        }


class EvalTexts(Dataset):
    def __init__(self, ids: torch.Tensor, mask: torch.Tensor):
        self.ids, self.mask = ids, mask

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "index": torch.tensor(i)}


class EvalVideos(Dataset):
    def __init__(self, split: PreparedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split.index.videos)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        frames, fmask = self.split.source.get(i)
        return {"video": frames, "video_mask": fmask, "index": torch.tensor(i)}


def keep_videos(index: SplitIndex, keep: list[int]) -> SplitIndex:
    """The sub-split of the given videos (in order) with their captions."""
    new_pos = {old: new for new, old in enumerate(keep)}
    captions, cap_video = [], []
    for cap, vid in zip(index.captions, index.caption_video, strict=True):
        if vid in new_pos:
            captions.append(cap)
            cap_video.append(new_pos[vid])
    return replace(index, videos=[index.videos[i] for i in keep], captions=captions, caption_video=cap_video)


def require_some_videos(index: SplitIndex) -> None:
    """Stop before any decoding when not one video of the split was found: the folder or the names are wrong."""
    if index.videos and all(v.path is None for v in index.videos):
        raise DataError(
            f"none of the {len(index.videos)} videos of {index.dataset}/{index.split} was found: "
            f"{search_hint(index)}\n  fix: {video_fix(index)}"
        )


def apply_video_policy(
    index: SplitIndex, failures: dict[str, str], policy: str, *, what: str, manifest_hint: str
) -> tuple[SplitIndex, list[int], dict[str, str]]:
    """Keep the good videos or stop with the first bad ids named; returns (index, kept rows, skipped)."""
    if not failures:
        return index, list(range(len(index.videos))), {}
    if policy == "fail":
        first = list(failures.items())[:10]
        lines = "\n".join(f"    {vid}: {reason.splitlines()[0]}" for vid, reason in first)
        raise DataError(
            f"{len(failures)} of {len(index.videos)} videos of {index.dataset}/{index.split} are missing or "
            f"undecodable ({what}); first ones:\n{lines}\n  {search_hint(index)}\n"
            f"  fix: {video_fix(index)}; run `{manifest_hint}` for a full manifest, or set "
            "data.missing_policy_test=skip to evaluate on the rest "
            "(a non-standard gallery; the skip count lands in result.json)"
        )
    keep = [i for i, v in enumerate(index.videos) if v.video_id not in failures]
    if not keep:
        raise DataError(
            f"every video of {index.dataset}/{index.split} is missing or undecodable ({what}): "
            f"{search_hint(index)}\n  fix: {video_fix(index)}; run `{manifest_hint}` for the reason per video"
        )
    log.warning("%s/%s: skipping %d missing/undecodable videos", index.dataset, index.split, len(failures))
    return keep_videos(index, keep), keep, dict(failures)


class EpochAwareSampler(DistributedSampler):
    """A DistributedSampler that also tells its dataset the epoch (one random caption per video per epoch).

    Lightning calls ``set_epoch`` before each epoch's iterator is created, so shuffling and caption choice
    depend only on (seed, epoch): a resumed run sees the same order as an uninterrupted one.
    """

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class RetrievalDataModule(L.LightningDataModule):
    """Builds train pairs and evaluation loaders for any dataset adapter."""

    def __init__(
        self,
        data_cfg,
        tokenizer: TextTokenizer,
        image_size: int,
        *,
        seed: int = 0,
        manifest_hint: str = "vidbench verify-data <recipe>",
    ) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.tokenizer = tokenizer
        self.sampling = ClipSampling(
            max_frames=data_cfg.max_frames,
            size=data_cfg.image_size or image_size,
            framerate=data_cfg.framerate,
            slice_framepos=data_cfg.slice_framepos,
            fps_mode=data_cfg.fps_mode,
        )
        self.seed = seed
        self.manifest_hint = manifest_hint
        self.splits: dict[str, PreparedSplit] = {}
        self._tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.text_counts: dict[str, dict[str, int]] = {}  # split name -> data.text entry of result.json

    # -- preparation ------------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.cache_dir) if self.cfg.cache_dir else Path(default_cache_root()) / "frames"

    def _split_name(self, stage: str) -> str:
        return self.cfg.train_split if stage == "train" else self.cfg.test_split

    def load_index(self, stage: str) -> SplitIndex:
        index = load_split(
            self.cfg.dataset,
            self.cfg.root,
            self._split_name(stage),
            video_root=self.cfg.video_root,
            options=self.cfg.get("custom"),
        )
        require_some_videos(index)  # before a frame cache of failed rows is written
        return index

    def _build_cache(self, index: SplitIndex) -> FrameCache:
        s = self.sampling
        return FrameCache.build(
            self.cache_dir,
            index.videos,
            max_frames=s.max_frames,
            size=s.size,
            framerate=s.framerate,
            slice_framepos=s.slice_framepos,
            fps_mode=s.fps_mode,
            num_workers=self.cfg.num_workers,
        )

    def prepare_data(self) -> None:
        """Decode every clip once into the frame cache (local rank 0 only; the others reuse it)."""
        if not self.cfg.cache:
            return
        stages = (
            ["train", "test"] if getattr(self, "trainer", None) is None or self.trainer.training else ["test"]
        )
        for stage in stages:
            self._build_cache(self.load_index(stage))

    def prepare_split(self, stage: str) -> PreparedSplit:
        if stage in self.splits:
            return self.splits[stage]
        index = self.load_index(stage)
        policy = self.cfg.missing_policy_train if stage == "train" else self.cfg.missing_policy_test
        cache = self._build_cache(index) if self.cfg.cache else None
        failures = (
            cache.failures()
            if cache is not None
            else {v.video_id: "file not found" for v in index.videos if v.path is None}
        )
        what = "decoded into the frame cache" if cache is not None else "file lookup"
        kept_index, rows, skipped = apply_video_policy(
            index, failures, policy, what=what, manifest_hint=self.manifest_hint
        )
        source = FrameSource(kept_index, self.sampling, cache, rows)
        prepared = PreparedSplit(kept_index, source, skipped, policy)
        self.splits[stage] = prepared
        ids, mask, counts = tokenize_counted(self.tokenizer, kept_index.captions, self.cfg.max_words)
        self._tokens[stage] = (ids, mask)
        counts["ids_without_captions"] = int(index.notes.get("ids_without_captions", 0) or 0)
        self.text_counts[index.split] = counts
        if rank_zero_only.rank == 0:  # once per run, not once per rank (Lightning's logger would print it twice)
            log.info(format_text_counts(f"{index.dataset}/{index.split}", counts))
        return prepared

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.prepare_split("train")
        if stage in (None, "test", "validate"):
            self.prepare_split("test")

    # -- loaders ----------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def per_device_batch(self) -> int:
        world, _ = self._world()
        if self.cfg.batch_size % world:
            raise DataError(
                f"data.batch_size={self.cfg.batch_size} (the global batch) is not divisible by the world size "
                f"{world}; pick a multiple"
            )
        return self.cfg.batch_size // world

    def _loader(self, dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool) -> DataLoader:
        world, rank = self._world()
        sampler = EpochAwareSampler(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed, drop_last=False
        )
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        split = self.prepare_split("train")
        ids, mask = self._tokens["train"]
        data = TrainPairs(split, ids, mask, self.cfg.expand_captions, self.seed)
        if len(data) < self.per_device_batch() * self._world()[0]:
            raise DataError(
                f"the training split has {len(data)} samples, fewer than one global batch ({self.cfg.batch_size})"
            )
        return self._loader(data, self.per_device_batch(), shuffle=True, drop_last=True)

    def test_dataloader(self) -> list[DataLoader]:
        split = self.prepare_split("test")
        ids, mask = self._tokens["test"]
        bs = self.cfg.eval_batch_size
        return [
            self._loader(EvalTexts(ids, mask), bs, shuffle=False, drop_last=False),
            self._loader(EvalVideos(split), bs, shuffle=False, drop_last=False),
        ]

    # -- what the result record needs ----------------------------------------------------------------
    def test_caption_video(self) -> torch.Tensor:
        return torch.tensor(self.prepare_split("test").index.caption_video, dtype=torch.long)

    def test_multi_caption(self) -> bool:
        return bool(self.prepare_split("test").index.multi_caption)

    def one_text_sample(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The first test query as a batch of one (FLOP counting and timing)."""
        ids, mask = self._tokens["test"]
        return ids[:1].to(device), mask[:1].to(device)

    def one_video_sample(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        frames, fmask = self.prepare_split("test").source.get(0)
        return frames[None].to(device), fmask[None].to(device)

    def train_caption_bank(
        self, size: int | None, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
        """Token ids and masks of ``size`` captions drawn (seeded, without replacement) from the **training**
        split only, for QB-Norm's query bank; ``None`` or a size above the split's count takes every caption.

        Only the annotation files are read (no video is decoded). Returns ``(ids, mask, info)`` with ``info`` =
        ``{"split", "size", "of", "captions", "video_ids"}`` (the last two say exactly what the bank holds).
        """
        index = load_split(
            self.cfg.dataset,
            self.cfg.root,
            self.cfg.train_split,
            video_root=self.cfg.video_root,
            options=self.cfg.get("custom"),
        )
        n = len(index.captions)
        if n == 0:
            raise DataError(f"{index.dataset}/{index.split} has no captions to build QB-Norm's query bank from")
        if size is None or int(size) >= n:
            pick = list(range(n))
        else:
            g = torch.Generator().manual_seed(int(seed))
            pick = sorted(torch.randperm(n, generator=g)[: int(size)].tolist())
        captions = [index.captions[i] for i in pick]
        ids, mask, _ = tokenize_counted(self.tokenizer, captions, self.cfg.max_words)
        video_ids = [index.videos[index.caption_video[i]].video_id for i in pick]
        info = {"split": index.split, "size": len(pick), "of": n, "captions": captions, "video_ids": video_ids}
        return ids, mask, info

    def train_test_indices(self) -> tuple[SplitIndex, SplitIndex]:
        """The training split as annotated and the test split as evaluated, for the overlap control."""
        train = load_split(
            self.cfg.dataset,
            self.cfg.root,
            self.cfg.train_split,
            video_root=self.cfg.video_root,
            options=self.cfg.get("custom"),
        )
        return train, self.prepare_split("test").index

    def data_report(self) -> dict:
        split = self.prepare_split("test")
        decode_failures = int(split.source.decode_failures.item())
        return {
            "missing_policy": split.policy,
            "skipped_videos": len(split.skipped),
            "skipped_ids": list(split.skipped)[:20],
            "decode_failures_replaced": decode_failures,
            "num_annotated_videos": len(split.index.videos) + len(split.skipped),
            "text": dict(self.text_counts),
        }
