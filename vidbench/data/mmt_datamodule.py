"""The LightningDataModule of the MMT feature path (HCQ as published), over :mod:`vidbench.data.mmt`.

It lives in ``data/`` beside the video DataModule (:mod:`vidbench.data.datamodule`); the dataset, the
loader rules and the query tokenizer it wraps stay Lightning-free in :mod:`vidbench.data.mmt`. Training
draws ``data.mmt.samples_per_epoch`` samples per epoch (sample i is video ``i % n``, shuffled per epoch by
the seed-and-epoch sampler, one random caption and token subset per draw); the reference draws indices
``mod n`` from a huge permutation, i.e. effectively with replacement, so its batches can hold a video
twice; here each epoch visits every video ``samples_per_epoch / n`` times (same expectation, fewer
in-batch duplicates). Evaluation has one query per test video (``indiv`` or ``cat``, per split), so
query ``i`` belongs to video ``i``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vidbench.data.bert_text import BertQueryTokenizer
from vidbench.data.datamodule import EpochAwareSampler
from vidbench.data.mmt import MmtFeatureDataset, collate_mmt
from vidbench.errors import DataError


class _Queries(Dataset):
    """The test queries alone (token ids and mask already in memory): no feature file is read for them."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.ids, self.mask = ids, mask

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"token_ids": self.ids[i], "token_mask": self.mask[i], "index": torch.tensor(i)}


class MmtDataModule(L.LightningDataModule):
    """Train on the preset's training split, test on its test split (see the module docstring)."""

    def __init__(self, data_cfg: Any, tokenizer: BertQueryTokenizer, *, seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.mmt = data_cfg.mmt
        self.tokenizer = tokenizer
        self.seed = seed
        self.datasets: dict[str, MmtFeatureDataset] = {}
        self._queries: tuple[torch.Tensor, torch.Tensor] | None = None

    def dataset(self, stage: str) -> MmtFeatureDataset:
        if stage not in self.datasets:
            training = stage == "train"
            from vidbench.data.mmt import get_preset

            preset = get_preset(self.cfg.dataset, self.mmt.cut)
            self.datasets[stage] = MmtFeatureDataset(
                self.cfg.root,
                self.cfg.dataset,
                self.mmt.cut,
                preset.train_split if training else preset.test_split,
                self.tokenizer,
                policy=self.cfg.missing_policy_train if training else self.cfg.missing_policy_test,
                seed=self.seed,
                length=self.mmt.samples_per_epoch if training else None,
                max_tokens=self.mmt.max_tokens,
                max_words=self.mmt.max_words,
                scan_workers=self.mmt.scan_workers,
            )
        return self.datasets[stage]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        self.dataset("test")  # fit needs it too with eval.select_on_test

    # -- loaders ----------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (1, 0) if trainer is None else (trainer.world_size, trainer.global_rank)

    def _loader(
        self, data: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool, collate: bool = True
    ) -> DataLoader:
        world, rank = self._world()
        sampler = EpochAwareSampler(data, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.cfg.num_workers,
            collate_fn=collate_mmt if collate else None,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        data = self.dataset("train")
        world, _ = self._world()
        if self.cfg.batch_size % world:
            raise DataError(f"data.batch_size={self.cfg.batch_size} is not divisible by the world size {world}")
        if len(data) < self.cfg.batch_size:
            raise DataError(
                f"the training split has {len(data)} samples per epoch, fewer than one global batch "
                f"({self.cfg.batch_size}); raise data.mmt.samples_per_epoch or lower data.batch_size"
            )
        return self._loader(data, self.cfg.batch_size // world, shuffle=True, drop_last=True)

    def queries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, W]`` token ids and mask of the test queries, query i = video i's fixed query."""
        if self._queries is None:
            data = self.dataset("test")
            width = data.max_words
            ids = torch.zeros(len(data.videos), width, dtype=torch.long)
            for i, video in enumerate(data.videos):
                query = video.queries[0].ids[:width]
                ids[i, : len(query)] = torch.tensor(query, dtype=torch.long)
            self._queries = (ids, (ids != 0).long())
        return self._queries

    def test_dataloader(self) -> list[DataLoader]:
        bs = self.cfg.eval_batch_size
        return [
            self._loader(_Queries(*self.queries()), bs, shuffle=False, drop_last=False, collate=False),
            self._loader(self.dataset("test"), bs, shuffle=False, drop_last=False),
        ]

    # -- what the result record needs --------------------------------------------------------------------
    def test_caption_video(self) -> torch.Tensor:
        return torch.arange(len(self.dataset("test").videos), dtype=torch.long)

    def test_multi_caption(self) -> bool:
        return False

    def one_text_sample(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.queries()
        return ids[:1].to(device), mask[:1].to(device)

    def one_video_sample(self, device: torch.device | str) -> tuple[dict[str, Any], None]:
        from lightning.fabric.utilities.apply_func import move_data_to_device

        return move_data_to_device(collate_mmt([self.dataset("test")[0]]), device), None

    @property
    def text_counts(self) -> dict[str, dict[str, int]]:
        """``{split: query truncation counts}`` of the splits set up so far (``data.text``; the runner saves the
        training split's after fit and merges it into the test's record)."""
        return {d.split: d.text_report() for d in self.datasets.values()}

    def data_report(self) -> dict[str, Any]:
        """The test split's file policy outcome and ``text``: query truncation per split (contract 1)."""
        test = self.dataset("test")
        report = test.data_report()
        report["features"] = {
            "release": f"MMT {test.preset.name}",
            "experts": list(test.experts),
            "absent_experts": list(test.preset.absent_experts),
            "max_tokens": test.max_tokens,
        }
        if "train" in self.datasets:
            train = self.datasets["train"].data_report()
            report["train"] = {k: train[k] for k in ("skipped_videos", "skipped_ids", "decode_failures_replaced")}
        return report
