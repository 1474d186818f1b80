"""``vidbench encode``: every video of a folder or list through the recipe's sampling and video encoder, into a store.

It is a Lightning ``predict``: under DDP each rank takes every ``world``-th pending video (no padding, so no
video twice) and writes its own shards. A shard is flushed every ``shard_size`` videos, atomically, so an
interrupted encode resumes from the shards on disk and re-encodes nothing that was finished. A video that
cannot be decoded becomes a "failed" row with the reason, counted; it never gets a vector.
"""

from __future__ import annotations

import hashlib
import logging
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from vidbench.data.video import load_clip, probe_video
from vidbench.errors import ConfigError, VideoDecodeError
from vidbench.io import ensure_writable
from vidbench.methods import build_method
from vidbench.methods.base import RetrievalMethod

from . import store as st

log = logging.getLogger(__name__)


def vidbench_version() -> str:
    try:
        return metadata.version("vidbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def config_digest(cfg: DictConfig) -> str:
    """Hash of what changes the features: model, data sampling, method (not paths or trainer)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    keep = {k: plain.get(k) for k in ("model", "method")}
    data = plain.get("data", {})
    keep["sampling"] = {k: data.get(k) for k in ("max_frames", "image_size", "framerate", "slice_framepos", "fps_mode")}
    return hashlib.sha256(repr(keep).encode()).hexdigest()[:16]


def load_method(cfg: DictConfig, ckpt: str | Path | None) -> tuple[RetrievalMethod, dict[str, Any] | None]:
    """The recipe's method in eval mode, seeded as ``vidbench test`` seeds it, with the checkpoint loaded."""
    from vidbench.reference_ckpt import load_into

    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    method = build_method(cfg)
    info = None
    if ckpt is not None:
        imported = load_into(method, ckpt, cfg.run.name)
        info = imported.record()
    return method.eval(), info


class EncodeVideos(Dataset):
    """Pending videos as decoded clips; a failure is returned as a record, never as a frame tensor."""

    def __init__(self, entries: list[st.VideoEntry], data_cfg, size: int) -> None:
        self.entries, self.d, self.size = entries, data_cfg, size

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e = self.entries[i]
        row: dict[str, Any] = {"id": e.video_id, "path": e.path, "start": e.start_s, "end": e.end_s}
        try:
            info = probe_video(e.path)
            video, mask = load_clip(
                e.path,
                max_frames=self.d.max_frames,
                size=self.size,
                framerate=self.d.framerate,
                slice_framepos=self.d.slice_framepos,
                start_s=e.start_s,
                end_s=e.end_s,
                fps_mode=self.d.fps_mode,
            )
        except (VideoDecodeError, OSError, ValueError) as exc:
            return {"row": dict(row, status="failed", error=str(exc), duration=None, frames=0)}
        duration = float(info.duration_s) if info.duration_s else None
        row.update(status="ok", error=None, duration=duration, frames=int(mask.sum()))
        return {"row": row, "video": video, "video_mask": mask}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [it for it in items if "video" in it]
    batch: dict[str, Any] = {"rows": [it["row"] for it in items]}
    if ok:
        batch["video"] = torch.stack([it["video"] for it in ok])
        batch["video_mask"] = torch.stack([it["video_mask"] for it in ok])
    return batch


class EncodeModule(L.LightningModule):
    """Thin wrapper: ``predict_step`` runs the method's test-time video encoder on the decodable clips."""

    def __init__(self, method: RetrievalMethod) -> None:
        super().__init__()
        self.method = method

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": batch["rows"], "features": {}}
        if "video" in batch:
            feats = self.method.encode_video_batch(batch)
            out["features"] = {
                k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in feats.items()
            }
        return out


class ShardWriter(BasePredictionWriter):
    """Buffers a rank's encoded videos and flushes a shard every ``shard_size`` videos and at the end."""

    def __init__(self, store: Path, shard_size: int, total: int) -> None:
        super().__init__(write_interval="batch")
        self.store, self.shard_size, self.total = store, shard_size, total
        self.rows: list[dict[str, Any]] = []
        self.feats: dict[str, list[torch.Tensor]] = {}
        self.done = 0
        self.started = time.perf_counter()
        self.last_report = 0.0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.rows += prediction["rows"]
        for k, v in prediction["features"].items():
            self.feats.setdefault(k, []).append(v)
        self.done += len(prediction["rows"])
        if len(self.rows) >= self.shard_size:
            self.flush(trainer.global_rank)
        now = time.perf_counter()
        if trainer.global_rank == 0 and (now - self.last_report > 5 or self.done == self.total):
            self.last_report = now
            rate = self.done / max(now - self.started, 1e-9)
            log.info(
                "encode: rank 0 %d/%d clips, %.1f clips/s (x%d ranks)", self.done, self.total, rate, trainer.world_size
            )

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self.flush(trainer.global_rank)

    def flush(self, rank: int) -> None:
        if not self.rows:
            return
        feats = {k: torch.cat(v) for k, v in self.feats.items()}
        st.write_shard(self.store, rank, self.rows, feats)
        self.rows, self.feats = [], {}


class PendingData(L.LightningDataModule):
    """Each rank's share of the pending videos: ``pending[rank::world]``, unpadded."""

    def __init__(self, pending: list[st.VideoEntry], data_cfg, size: int) -> None:
        super().__init__()
        self.pending, self.d, self.size = pending, data_cfg, size

    def predict_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        mine = self.pending[rank::world]
        return DataLoader(
            EncodeVideos(mine, self.d, self.size),
            batch_size=self.d.eval_batch_size,
            shuffle=False,
            num_workers=self.d.num_workers,
            collate_fn=collate,
        )


def encode(
    cfg: DictConfig, videos: str | Path, out: str | Path, *, ckpt: str | Path | None = None, shard_size: int = 512
) -> dict[str, Any]:
    """Encode the listed videos into the store ``out`` (resuming it); returns the manifest."""
    from vidbench.runner import apply_cpu_threads

    if cfg.data.get("mmt") is not None:
        raise ConfigError(
            f"{cfg.run.name} reads MMT expert features, not video files; encode with a CLIP recipe (e.g. hcq-clip_*)"
        )
    out = ensure_writable(out, "--out")
    entries = st.list_videos(videos)
    apply_cpu_threads(cfg)
    method, ckpt_info = load_method(cfg, ckpt)
    manifest: dict[str, Any] = {
        "format": st.FORMAT,
        "recipe": cfg.run.name,
        "method": method.method_label,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "config_hash": config_digest(cfg),
        "checkpoint": ckpt_info,
        "checkpoint_sha256": ckpt_info["sha256"] if ckpt_info else None,
        "vidbench_version": vidbench_version(),
        "videos_source": str(videos),
        "complete": False,
    }
    st.check_resumable(out, manifest)
    done = st.done_ids(out)
    pending = [e for e in entries if e.video_id not in done]
    st.write_manifest(out, manifest)
    t = cfg.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[ShardWriter(out, shard_size, len(pending))],
        default_root_dir=out,
    )
    size = cfg.data.image_size or method.clip.image_size
    started = time.perf_counter()
    if pending:
        trainer.predict(EncodeModule(method), datamodule=PendingData(pending, cfg.data, size), return_predictions=False)
    if trainer.world_size > 1:
        trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return manifest
    st.write_method_tensors(out, method_tensors(method))
    counts = st.write_table(out, entries)
    seconds = time.perf_counter() - started
    manifest.update(
        complete=True,
        counts=dict(counts, skipped_as_done=len(entries) - len(pending), encoded_now=len(pending)),
        world_size=trainer.world_size,
        seconds=round(seconds, 2),
        clips_per_s=round(len(pending) / seconds, 2) if pending else None,
    )
    st.write_manifest(out, manifest)
    return manifest


def method_tensors(method: RetrievalMethod) -> dict[str, torch.Tensor]:
    """What a serving index needs from the model itself (HCQ: codebooks and level weights)."""
    if hasattr(method, "codebooks") and hasattr(method, "level_w"):
        return {"codebooks": method.codebooks().detach().float(), "level_weights": method.level_w.detach().float()}
    return {}
