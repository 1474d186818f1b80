"""The shared retrieval LightningModule: what every method's training and evaluation have in common.

A method is encoders plus a head. The encoders are components chosen by the method's family:
:class:`ClipMethod` composes CLIP frames + CLIP text (one ``ClipBackbone``, attribute ``clip``, so every
existing checkpoint's ``clip.*`` keys stay as they are); HCQ as published composes MMT expert features and
BERT text (``vidbench.methods.hcq_mmt``). The heads are plain ``nn.Module``s of ``vidbench.models`` whose
forward takes features, so they are tested without any backbone. :class:`RetrievalMethod` knows neither
encoder: it only sees the feature containers.

A method supplies the contract of DESIGN.md (written out for plugin authors in the README, "Add a method"):
``config_schema`` (the dataclass of its ``method.*`` keys) and ``method_name`` / ``method_label`` /
``variant`` / ``backbone_label``; ``encode_text`` and ``encode_video`` return feature containers (dicts of
tensors sharing the leading dimension); ``score`` maps (texts, videos) to a ``[n_text, n_video]`` matrix as
a pure function of the pairs (so the base can chunk it); ``training_loss`` works on the globally gathered
batch; ``match_flops_per_query`` is its matching cost; ``protocols`` lists its scoring protocols, each with
its costs and, for a method outside this repository, the leaderboard sentence (``description``). The base
does the rest: the gather with exact DDP gradients, the optimiser and schedule, encoding the test split once,
chunked scoring, the reference metrics, and the efficiency figures of the result record. Methods register
with :func:`vidbench.methods.registry.register_method` (built-ins), an entry point of the group
``vidbench.methods``, or a ``package.module:Class`` path in the recipe.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from vidbench.data.transforms import normalize_video
from vidbench.eval.controls import shuffled_caption_rows, shuffled_verdict
from vidbench.eval.metric import RetrievalScoreboard
from vidbench.eval.postprocess import postprocess_flops_per_query
from vidbench.eval.retrieval import chunked_scores, concat_features, index_select_features, slice_features
from vidbench.models.clip import ClipBackbone
from vidbench.models.gather import gather_features
from vidbench.models.losses import symmetric_infonce

from .grad_cache import GradientStash, grad_cache_step
from .optim import build_optimizer, build_scheduler, param_groups

Features = dict[str, torch.Tensor]
log = logging.getLogger(__name__)


@dataclass
class ScoringProtocol:
    """One way of scoring the test split, reported as its own protocol (its own leaderboard table).

    ``score`` maps (text block, video block) to scores. With ``whole_gallery=True`` it always receives every
    video at once (only texts are chunked), as a two-stage recall-then-rerank needs. ``match_flops`` gives
    the matching FLOPs per query for a gallery of N videos; ``index_bytes_per_video`` what the index stores.
    """

    name: str
    score: Callable[[Features, Features], torch.Tensor]
    postprocess: str = "none"
    bytes_per_pair: int = 4
    whole_gallery: bool = False
    match_flops: Callable[[int], float] | None = None
    index_bytes_per_video: float | None = None
    dsl: bool = False  # also report dual-softmax on this protocol's scores (as protocol "dsl")
    mmt_metrics: bool = False  # also record HCQ's (MMT's) metric family as the entry's "metrics_mmt"
    # One sentence for the leaderboard saying what is scored, what the index stores per video and whether it is
    # transductive; written to result.json, where it replaces the generic sentence (plugins set it; the
    # built-ins' sentences live in vidbench/results/protocols.py).
    description: str | None = None


class RetrievalMethod(L.LightningModule, ABC):
    """Base class, encoder-agnostic; subclasses implement the abstract method contract below."""

    method_name = "base"  # the family written to result.json ("method"); every method sets its own
    config_schema: type | None = None  # the dataclass of its method.* keys (set by @register_method or by hand)
    base_protocol_description: str | None = None  # leaderboard sentence of the main protocol (plugins)

    def __init__(self, config: DictConfig | dict) -> None:
        super().__init__()
        cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg, resolve=True)})
        self.cfg = cfg
        self._eval_parts: dict[int, list[Features]] = {0: [], 1: []}
        self.test_results: dict[str, Any] = {}
        self._heads: list[nn.Module] = []

    def attach_head(self, name: str, head: nn.Module) -> nn.Module:
        """Keep ``head`` (a plain nn.Module of vidbench.models) as ``self.<name>``, its children registered on
        the method itself.

        The children become attributes of the method (``self.vlad``, not ``self.head.vlad``), so state-dict
        keys stay those of the checkpoints written before heads were modules of their own (contract 2). The
        head keeps references to the same child objects, holds no parameters or buffers itself, and follows
        the method's train/eval mode.
        """
        if any(True for _ in head.parameters(recurse=False)) or any(True for _ in head.buffers(recurse=False)):
            raise TypeError(f"{type(head).__name__}: an attached head keeps its tensors in child modules")
        for child_name, child in head._modules.items():
            setattr(self, child_name, child)
        object.__setattr__(self, name, head)  # not a registered submodule: no second set of keys
        self._heads.append(head)
        head.train(self.training)
        return head

    def train(self, mode: bool = True):
        out = super().train(mode)
        for head in getattr(self, "_heads", []):
            head.training = mode
        return out

    @property
    @abstractmethod
    def backbone_label(self) -> str:
        """The encoders as the result record and leaderboard name them (e.g. 'ViT-B/32')."""

    # ---- the method contract -------------------------------------------------------------------------
    @property
    @abstractmethod
    def variant(self) -> str:
        """The variant within the method family, e.g. meanP, WTI+seqTransf+CDCR."""

    @property
    @abstractmethod
    def method_label(self) -> str:
        """What the leaderboard row shows, e.g. 'CLIP4Clip (meanP)'."""

    @abstractmethod
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Features:
        """Text features for a batch of token ids (a dict of tensors sharing the leading dim)."""

    @abstractmethod
    def encode_video(self, video: Any, video_mask: torch.Tensor | None) -> Features:
        """Video features for a batch's video inputs: uint8 frames ``[B, T, 3, S, S]`` and their frame mask
        for the CLIP methods, the expert feature dict for the MMT encoder."""

    def encode_text_batch(self, batch: dict[str, Any]) -> Features:
        return self.encode_text(batch["input_ids"], batch["attention_mask"])

    def encode_video_batch(self, batch: dict[str, Any]) -> Features:
        return self.encode_video(batch["video"], batch.get("video_mask"))

    @abstractmethod
    def score(self, text: Features, video: Features) -> torch.Tensor:
        """Evaluation scores ``[n_text, n_video]``; a pure function of the pairs (chunkable)."""

    @abstractmethod
    def training_loss(self, text: Features, video: Features) -> dict[str, torch.Tensor]:
        """Named loss terms on the globally gathered batch (summed into the training loss)."""

    def train_scalars(self) -> dict[str, torch.Tensor | float]:
        """Extra scalars logged under ``train/`` every step (e.g. CLIP's logit scale)."""
        return {}

    def optimiser_record(self) -> dict[str, Any]:
        """The optimiser and schedule :meth:`configure_optimizers` trains with, for ``result.json``'s ``optim``
        (so a run says whether it trained as the reference code, BertAdam, or with vidbench's AdamW)."""
        o = self.cfg.optim
        return {
            "optimizer": str(o.optimizer),
            "schedule": str(o.schedule),
            "warmup_proportion": float(o.warmup_proportion),
            "lr": float(o.lr),
            "coef_lr": float(o.coef_lr),
        }

    def score_bytes_per_pair(self) -> int:
        """Working-set bytes per (text, video) pair while scoring; sizes the chunks."""
        return 4

    @abstractmethod
    def match_flops_per_query(self, n_gallery: int, text: Features, video: Features) -> float:
        """FLOPs to score one query against ``n_gallery`` indexed videos (the method's own accounting)."""

    def protocols(self, text: Features, video: Features) -> list[ScoringProtocol]:
        """The evaluation protocols; the first is the method's main one (``base``). Methods add more
        (EERCF's ``rerank@k``, HCQ's code-based retrieval)."""
        return [
            ScoringProtocol(
                name="base",
                score=self.score,
                bytes_per_pair=self.score_bytes_per_pair(),
                match_flops=lambda n: self.match_flops_per_query(n, text, video),
                index_bytes_per_video=self.index_bytes_per_video(video),
                dsl=bool(self.cfg.eval.dsl),
                description=self.base_protocol_description,
            )
        ]

    # ---- training --------------------------------------------------------------------------------------
    def encode_parts(self, batch: dict[str, Any]) -> tuple[Features, Features]:
        """The per-sample encoders' outputs (text, video) for a training batch: what ``trainer.contrastive_chunk``
        runs in chunks and caches. Nothing here may couple samples (see :mod:`.grad_cache`)."""
        return self.encode_text_batch(batch), self.encode_video_batch(batch)

    def finish_parts(self, text: Features, video: Features) -> tuple[Features, Features]:
        """The batch-level stage between the encoders and the gather, on the whole local batch (identity here;
        HCQ's VLAD and quantisers, whose BatchNorm couples samples, run here)."""
        return text, video

    def observe_local_features(self, text: Features, video: Features) -> None:
        """Sees this rank's training features once per step, before the gather (HCQ caches them for k-means)."""

    def local_loss_terms(self, text: Features, video: Features) -> dict[str, torch.Tensor]:
        """From the local encoder outputs: the batch-level stage, the gather with gradients, the global loss."""
        text, video = self.finish_parts(text, video)
        self.observe_local_features(text, video)
        mode = self.cfg.trainer.gather_grad
        return self.training_loss(gather_features(text, mode), gather_features(video, mode))

    def global_loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encode the local batch, gather it with gradients, and compute the loss on the global batch."""
        return self.local_loss_terms(*self.encode_parts(batch))

    def contrastive_chunk(self) -> int | None:
        chunk = self.cfg.trainer.get("contrastive_chunk")
        return int(chunk) if chunk else None

    def chunked_loss_terms(self, batch: dict[str, Any], chunk: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Gradient caching (:mod:`.grad_cache`): the earlier chunks are backpropagated here, scaled as Lightning
        scales the returned loss (AMP's GradScaler, 1/accumulation); the returned tensor carries the rest."""
        trainer = self._trainer
        scaler = getattr(trainer.precision_plugin, "scaler", None) if trainer is not None else None
        scale = float(scaler.get_scale()) if scaler is not None else 1.0
        factor = scale / (trainer.accumulate_grad_batches if trainer is not None else 1)

        def backward(surrogate: torch.Tensor) -> None:
            (surrogate * factor).backward()

        check = not getattr(self, "_chunk_checked", False)
        # Lightning zeroes gradients between training_step and backward: the earlier chunks' gradients wait
        # aside and join in on_before_backward, before the final backward (and so before DDP's all-reduce)
        with GradientStash(self) as stash:
            out = grad_cache_step(self, batch, chunk, backward=backward, loss_scale=scale, check=check)
        self._chunk_checked = True
        self._grad_stash = stash
        return out

    def on_before_backward(self, loss: torch.Tensor) -> None:
        stash, self._grad_stash = getattr(self, "_grad_stash", None), None
        if stash is not None:
            stash.release()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        chunk = self.contrastive_chunk()
        if chunk:
            terms, loss = self.chunked_loss_terms(batch, chunk)
        else:
            terms = self.global_loss_terms(batch)
            loss = torch.stack(list(terms.values())).sum()
        if not torch.isfinite(loss):
            values = {k: float(v) for k, v in terms.items()}
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step} (terms {values}); batch caption indices "
                f"{batch['index'].tolist() if 'index' in batch else '?'}. Lower the learning rate or check those "
                "captions/videos; the last good checkpoint is the run directory's last.ckpt"
            )
        bs = batch["index"].shape[0] if "index" in batch else batch["input_ids"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in self.train_scalars().items():
            self.log(f"train/{name}", value, batch_size=bs)
        return loss

    def on_train_epoch_end(self) -> None:
        """With ``eval.select_on_test``: score the test split now (after any end-of-epoch update such as HCQ's
        k-means, which subclasses run before calling this) for the ``BestOnTest`` checkpoint callback."""
        if self.cfg.eval.select_on_test:
            self.selection_score = self.test_split_geomean()
            self.log("select/t2v_GeoMean", self.selection_score, rank_zero_only=True, sync_dist=False)

    @torch.no_grad()
    def test_split_geomean(self) -> float:
        """t2v geometric mean of R@1/5/10 (MMT's metric family) of the main protocol on the test split: the HCQ
        reference's per-epoch monitor. Every rank encodes its shard; the scoreboard syncs the ranks."""
        from lightning.fabric.utilities.apply_func import move_data_to_device

        dm = self.trainer.datamodule
        was_training = self.training
        self.eval()
        parts: dict[int, list[Features]] = {0: [], 1: []}
        for idx, loader in enumerate(dm.test_dataloader()):
            for batch in loader:
                parts[idx].append(self._eval_features(move_data_to_device(batch, self.device), idx))
        text, video = self._collect(parts[0]), self._collect(parts[1])
        n_text = next(iter(text.values())).shape[0]
        world, rank = self.trainer.world_size, self.trainer.global_rank
        rows = torch.arange(rank, n_text, world, device=self.device)
        main = self.protocols(text, video)[0]
        sims = self.score_matrix(main, index_select_features(text, rows), video)
        board = RetrievalScoreboard(
            caption_video=dm.test_caption_video().to(self.device),
            strict=False,
            multi_caption=dm.test_multi_caption(),
            mmt=True,
        ).to(self.device)
        board.update(sims, rows)
        flat = board.compute()
        self.train(was_training)
        return float(flat["mmt/t2v_GeoMean"])  # MMT's metric code (tie-averaged ranks), as the reference monitors

    def configure_optimizers(self):
        o = self.cfg.optim
        groups = param_groups(self, lr=o.lr, coef_lr=o.coef_lr, weight_decay=o.weight_decay)
        optimizer = build_optimizer(o.optimizer, groups, betas=o.betas, eps=o.eps)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, total_steps=total, warmup=o.warmup_proportion, schedule=o.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- evaluation ------------------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._eval_parts = {0: [], 1: []}
        self._test_started = time.perf_counter()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_parts[dataloader_idx].append(self._eval_features(batch, dataloader_idx))

    def _eval_features(self, batch: dict[str, Any], dataloader_idx: int) -> Features:
        feats = self.encode_text_batch(batch) if dataloader_idx == 0 else self.encode_video_batch(batch)
        # Autocast covers this step but not on_test_epoch_end, where the features are scored: under
        # bf16/fp16-mixed some come out in half precision and others in fp32, so store half types in fp32
        # (fp32 and fp64 features keep their precision: a float64 run scores in float64).
        feats = {k: _upcast_half(v.detach()) for k, v in feats.items()}
        feats["_index"] = batch["index"]
        return feats

    def _collect(self, parts: list[Features]) -> Features:
        """All ranks' features in dataset order, the sampler's padding duplicates dropped."""
        local = concat_features(parts)
        if self.trainer.world_size > 1:
            local = {k: self.all_gather(v).flatten(0, 1) for k, v in local.items()}
        index = local.pop("_index")
        order = torch.argsort(index, stable=True)
        index = index[order]
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        keep = order[first]
        if not torch.equal(index[first], torch.arange(int(first.sum()), device=index.device)):
            raise RuntimeError("evaluation lost items: gathered indices are not 0..N-1")
        return index_select_features(local, keep)

    def score_matrix(self, proto: ScoringProtocol, text: Features, video: Features) -> torch.Tensor:
        """``[n_text, n_video]`` scores of one protocol, chunked under ``eval.budget_mb`` (the whole gallery at
        once where the protocol needs it, e.g. a re-rank over the coarse top k)."""
        e = self.cfg.eval
        n_video = next(iter(video.values())).shape[0]
        return chunked_scores(
            proto.score,
            text,
            video,
            budget_bytes=e.budget_mb * 2**20,
            bytes_per_pair=proto.bytes_per_pair,
            text_chunk=e.text_chunk,
            video_chunk=n_video if proto.whole_gallery else e.video_chunk,
            out_device=self.device,
        )

    def on_test_epoch_end(self) -> None:
        text = self._collect(self._eval_parts[0])
        video = self._collect(self._eval_parts[1])
        self._eval_parts = {0: [], 1: []}
        dm = self.trainer.datamodule
        caption_video = dm.test_caption_video().to(self.device)
        n_text, n_video = next(iter(text.values())).shape[0], next(iter(video.values())).shape[0]
        world, rank = self.trainer.world_size, self.trainer.global_rank
        # each rank scores its share of the queries against the whole gallery; the scoreboard syncs rows
        rows = torch.arange(rank, n_text, world, device=self.device)
        my_text = index_select_features(text, rows)
        e = self.cfg.eval
        results: dict[str, dict[str, Any]] = {}
        controls: dict[str, Any] = {}
        post_costs: dict[str, dict[str, Any]] = {}  # protocol -> what its post-processing added
        for i, proto in enumerate(self.protocols(text, video)):
            sims = self.score_matrix(proto, my_text, video)
            post, options, bank_info = self._postprocessing(proto, i == 0, video)
            board = RetrievalScoreboard(
                caption_video=caption_video,
                strict=e.strict,
                postprocess=post,
                postprocess_kwargs=options,
                multi_caption=dm.test_multi_caption(),
                mmt=proto.mmt_metrics,
                summary=True,
            ).to(self.device)
            board.update(sims, rows)
            flat = board.compute()
            entry: dict[str, Any] = {"postprocess": proto.postprocess, "metrics": _plain(flat)}
            if proto.description:
                entry["description"] = proto.description
            strict = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("strict/")}
            if strict:
                entry["strict"] = strict
            mmt = {k.split("/", 1)[1]: float(v) for k, v in flat.items() if k.startswith("mmt/")}
            if mmt:
                entry["metrics_mmt"] = mmt
            if proto.match_flops is not None:
                entry["match_flops_per_query"] = float(proto.match_flops(n_video))
            if proto.index_bytes_per_video is not None:
                entry["index_bytes_per_video"] = float(proto.index_bytes_per_video)
            results[proto.name] = entry
            for name in post:
                block = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(f"{name}/")}
                key = name if proto.name == "base" else f"{proto.name}+{name}"
                results[key] = {
                    "postprocess": name,
                    "metrics": block,
                    **{k: v for k, v in entry.items() if k.startswith(("match_", "index_"))},
                }
                post_costs[key] = self._postprocess_cost(name, n_text, n_video, board, bank_info, proto)
                _add_cost(results[key], post_costs[key])
            if i == 0 and e.get("shuffle_control", True) and n_video > 1:
                controls["shuffled_captions"] = self._shuffled_control(proto, text, video, rows, flat["t2v_R1"])
        self.test_results = {
            "protocols": results,
            "num_queries": n_text,
            "num_gallery": n_video,
            "multi_caption": dm.test_multi_caption(),
            "controls": controls,
        }
        for key, value in results[next(iter(results))]["metrics"].items():
            self.log(f"test/{key}", float(value), rank_zero_only=True, sync_dist=False)
        if self.cfg.eval.efficiency and rank == 0:
            eff = self.test_results["efficiency"] = self.measure_efficiency(text, video)
            for key, cost in post_costs.items():  # the post-processing's time and bank encoding join the cost
                entry = results[key]
                if eff.get("ms_per_query") is not None:
                    entry["ms_per_query"] = float(eff["ms_per_query"]) + cost["ms_per_query"]
                if "bank_size" in cost and eff.get("text_gflops_per_query") is not None:
                    cost["bank_text_gflops"] = cost["bank_size"] * float(eff["text_gflops_per_query"])

    # ---- post-processing families and controls -----------------------------------------------------------
    def _postprocessing(
        self, proto: ScoringProtocol, main: bool, video: Features
    ) -> tuple[list[str], dict[str, dict[str, Any]], dict[str, Any]]:
        """Names and options of the post-processings to report on ``proto``: DSL where the protocol asks,
        Sinkhorn and QB-Norm on the main protocol when the recipe enables them."""
        e = self.cfg.eval
        post = ["dsl"] if proto.dsl else []
        options: dict[str, dict[str, Any]] = {"dsl": {"temperature": e.dsl_temperature}}
        bank_info: dict[str, Any] = {}
        if not main:
            return post, options, bank_info
        if e.get("sinkhorn", False):
            post.append("sinkhorn")
            options["sinkhorn"] = {"temperature": e.sinkhorn_temperature, "iterations": e.sinkhorn_iterations}
        if e.get("qbnorm", False):
            bank_sim, bank_info = self._qbnorm_bank(proto, video)
            if bank_sim is not None:
                post.append("qbnorm")
                options["qbnorm"] = {"beta": e.qbnorm_beta, "k": e.qbnorm_k, "bank_sim": bank_sim}
        return post, options, bank_info

    @torch.no_grad()
    def _qbnorm_bank(self, proto: ScoringProtocol, video: Features) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """QB-Norm's bank: training captions encoded now and scored against the test gallery by ``proto``.

        Every rank builds the whole bank (the same seed, the same rows). A datamodule without training captions
        (``train_caption_bank``) gets no QB-Norm row, and the log says why.
        """
        dm = self.trainer.datamodule
        if not hasattr(dm, "train_caption_bank"):
            log.warning("qbnorm skipped: %s offers no training captions for a query bank", type(dm).__name__)
            return None, {}
        e = self.cfg.eval
        started = time.perf_counter()
        ids, mask, info = dm.train_caption_bank(e.qbnorm_bank, seed=int(self.cfg.run.seed))
        step = int(self.cfg.data.eval_batch_size)
        parts = []
        for start in range(0, ids.shape[0], step):
            chunk = slice(start, start + step)
            feats = self.encode_text(ids[chunk].to(self.device), mask[chunk].to(self.device))
            parts.append({k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in feats.items()})
        bank = concat_features(parts)
        bank_sim = self.score_matrix(proto, bank, video)
        info = {**info, "bank_seconds": time.perf_counter() - started}
        return bank_sim, info

    def _postprocess_cost(
        self,
        name: str,
        n_text: int,
        n_video: int,
        board: RetrievalScoreboard,
        bank_info: dict[str, Any],
        proto: ScoringProtocol,
    ) -> dict[str, Any]:
        """What post-processing ``name`` adds to the protocol's cost (per query; QB-Norm's one-time bank apart)."""
        e = self.cfg.eval
        opts = {"iterations": e.get("sinkhorn_iterations", 20)} if name == "sinkhorn" else {}
        cost: dict[str, Any] = {
            "flops_per_query": postprocess_flops_per_query(name, n_video, **opts),
            "ms_per_query": 1000.0 * board.postprocess_seconds.get(name, 0.0) / max(1, n_text),
        }
        if name == "qbnorm":
            cost["bank_size"] = int(bank_info.get("size", 0))
            cost["bank_split"] = bank_info.get("split")
            cost["bank_seconds"] = float(bank_info.get("bank_seconds", 0.0))
            if proto.match_flops is not None:
                cost["bank_match_flops"] = cost["bank_size"] * float(proto.match_flops(n_video))
            cost["index_bytes_per_video"] = QBNORM_BYTES_PER_VIDEO
        return cost

    @torch.no_grad()
    def _shuffled_control(
        self, proto: ScoringProtocol, text: Features, video: Features, rows: torch.Tensor, real_r1: float
    ) -> dict[str, Any]:
        """Score the main protocol with every caption replaced by one of another video (the same derangement
        on every rank) against the original ground truth; see :mod:`vidbench.eval.controls`."""
        dm = self.trainer.datamodule
        caption_video = dm.test_caption_video()
        seed = int(self.cfg.run.seed)
        borrowed = shuffled_caption_rows(caption_video, seed).to(self.device)
        n_video = next(iter(video.values())).shape[0]
        sims = self.score_matrix(proto, index_select_features(text, borrowed[rows]), video)
        board = RetrievalScoreboard(
            caption_video=caption_video.to(self.device), multi_caption=dm.test_multi_caption()
        ).to(self.device)
        board.update(sims, rows)
        shuffled = board.compute()
        verdict = shuffled_verdict(float(shuffled["t2v_R1"]), float(real_r1), n_video, seed)
        verdict["protocol"] = proto.name
        if verdict["status"] == "fail":
            log.error(
                "shuffled-caption control failed: t2v R@1 %.1f with captions permuted across videos, chance %.1f "
                "(+%.1f); the ranking sees something other than the text",
                verdict["t2v_R1"],
                verdict["chance_R1"],
                verdict["tolerance"],
            )
        return verdict

    # ---- efficiency --------------------------------------------------------------------------------------
    def index_bytes_per_video(self, video: Features) -> float:
        """Bytes stored per gallery video: the evaluation features as kept in memory."""
        one = slice_features(video, 0, 1)
        return float(sum(t.numel() * t.element_size() for t in one.values()))

    @torch.no_grad()
    def measure_efficiency(self, text: Features, video: Features) -> dict[str, Any]:
        from vidbench.eval.efficiency import count_flops, count_params, hardware_name, time_per_query

        dm = self.trainer.datamodule
        total, trainable = count_params(self)
        ids, mask = dm.one_text_sample(self.device)
        frames, fmask = dm.one_video_sample(self.device)
        text_flops = count_flops(lambda: self.encode_text(ids, mask)).total
        video_flops = count_flops(lambda: self.encode_video(frames, fmask)).total
        n_gallery = next(iter(video.values())).shape[0]
        query = slice_features(text, 0, 1)
        main = self.protocols(text, video)[0]
        counted_match = count_flops(lambda: main.score(query, video)).total
        formula_match = main.match_flops(n_gallery) if main.match_flops else counted_match

        def one_query() -> None:
            main.score(self.encode_text(ids, mask), video)

        ms = time_per_query(one_query, 1, device=self.device)
        return {
            "params_total": total,
            "params_trainable": trainable,
            "text_gflops_per_query": text_flops / 1e9,
            "video_gflops_per_clip": video_flops / 1e9,
            "match_flops_per_query": float(formula_match),
            "match_flops_per_query_counted": float(counted_match),
            "index_bytes_per_video": main.index_bytes_per_video or self.index_bytes_per_video(video),
            "ms_per_query": ms,
            "gallery_size": n_gallery,
            "hardware": hardware_name(self.device),
        }


def _upcast_half(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; every other dtype (fp32, fp64, integer masks) unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


QBNORM_BYTES_PER_VIDEO = 5.0  # QB-Norm stores a float32 log normaliser and a one-byte activation flag per video


def _add_cost(entry: dict[str, Any], cost: dict[str, Any]) -> None:
    """Fold a post-processing's per-query FLOPs and per-video bytes into its protocol entry's cost fields."""
    if entry.get("match_flops_per_query") is not None:
        entry["match_flops_per_query"] = float(entry["match_flops_per_query"]) + float(cost["flops_per_query"])
    if entry.get("index_bytes_per_video") is not None and "index_bytes_per_video" in cost:
        entry["index_bytes_per_video"] = float(entry["index_bytes_per_video"]) + float(cost["index_bytes_per_video"])
    entry["postprocess_cost"] = cost


def _plain(flat: dict[str, float]) -> dict[str, float]:
    """The unprefixed metric keys (t2v_R1, ..., n_queries_v2t) of a scoreboard result."""
    return {k: float(v) for k, v in flat.items() if "/" not in k}


class ClipMethod(RetrievalMethod):
    """The methods on CLIP frames + CLIP text: one ``ClipBackbone`` (attribute ``clip``) encodes both sides,
    its logit scale multiplies the training scores (clamped after every step as the reference does)."""

    def __init__(self, config: DictConfig | dict) -> None:
        super().__init__(config)
        m = self.cfg.model
        self.clip = ClipBackbone(m.clip, freeze_layer_num=m.freeze_layer_num, attn_implementation=m.attn_implementation)

    @property
    def backbone_label(self) -> str:
        return self.clip.label

    def pixels(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """uint8 frames travel to the device; normalisation happens there (padding frames become 0)."""
        return normalize_video(video, video_mask)

    def training_logits(self, text: Features, video: Features) -> torch.Tensor:
        """Logit-scaled ``[B, B]`` matrix over the global batch."""
        return self.clip.logit_scale.exp() * self.score(text, video)

    def training_loss(self, text: Features, video: Features) -> dict[str, torch.Tensor]:
        return {"loss_infonce": symmetric_infonce(self.training_logits(text, video))}

    def train_scalars(self) -> dict[str, torch.Tensor | float]:
        return {"logit_scale": self.clip.logit_scale.exp()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.clip.clamp_logit_scale_()
