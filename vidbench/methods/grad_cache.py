"""Gradient caching (Gao et al., 2021): the exact full-batch contrastive gradient with the encoders run in chunks.

A contrastive loss couples every pair of the batch, so its batch size is part of the method; the encoders'
activations for a whole batch are what does not fit in memory. ``trainer.contrastive_chunk = C`` splits a
training step in three passes over the per-device batch:

1. every chunk of C samples goes through the per-sample encoders without autograd (``encode_parts``); the
   CPU and CUDA generator states before each chunk are kept;
2. the unchanged loss runs on the whole batch (the method's batch-level stage, the DDP gather, the loss),
   with the cached encoder outputs as leaves; one ``autograd.grad`` gives the loss's gradient with respect to
   every cached tensor (sentence vectors, tokens, frames, patches; masks carry none);
3. each chunk is encoded again with autograd, the generator states replayed so dropout draws the same
   masks, and ``<features, cached gradient>`` is backpropagated: by the chain rule this adds exactly the
   chunk's share of the full-batch parameter gradient.

The parameters the loss itself uses (logit scale, DRL's WTI heads, HCQ's head) get their gradient from the
loss graph, which is kept from pass 2 and backpropagated once, together with the last chunk, by the caller
(Lightning's automatic optimisation, so gradient clipping, accumulation, AMP's GradScaler and DDP's single
all-reduce behave as for an unchunked step). The earlier chunks are backpropagated here through ``backward``,
which the caller scales like its own loss. These inner backward passes run inside DDP's forward, where the
reducer does not yet expect gradients, so they accumulate locally and are all-reduced by the final one.

Exactness needs the encoders to treat samples independently. A layer that normalises over the batch
(BatchNorm in training mode) would see chunk statistics instead of batch statistics; the modules that run
per chunk are scanned at the first chunked step and such a layer stops the run with its name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from vidbench.errors import ConfigError

if TYPE_CHECKING:
    from .base import RetrievalMethod

Features = dict[str, Tensor]
Backward = Callable[[Tensor], None]


@dataclass
class RngState:
    """The CPU generator state and, when the step runs on a GPU, that device's CUDA generator state."""

    cpu: Tensor
    cuda: Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def batch_size(batch: dict[str, Any]) -> int:
    """Samples in a training batch: its ``index`` (every loader sets it), else the first tensor's length."""
    if isinstance(batch.get("index"), Tensor):
        return int(batch["index"].shape[0])
    for value in batch.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError(f"cannot tell the batch size of a batch with keys {sorted(batch)}")


def slice_batch(batch: Any, start: int, stop: int, size: int) -> Any:
    """Samples ``start:stop`` of every tensor (nested dicts too) whose leading dimension is the batch's."""
    if isinstance(batch, Tensor):
        return batch[start:stop] if batch.dim() > 0 and batch.shape[0] == size else batch
    if isinstance(batch, dict):
        return {k: slice_batch(v, start, stop, size) for k, v in batch.items()}
    if isinstance(batch, list | tuple) and len(batch) == size:
        return type(batch)(batch[start:stop])
    return batch


def chunk_bounds(size: int, chunk: int) -> list[tuple[int, int]]:
    if chunk < 1:
        raise ConfigError(f"trainer.contrastive_chunk must be >= 1 (samples per encoder chunk), got {chunk}")
    return [(start, min(start + chunk, size)) for start in range(0, size, chunk)]


def _concat(parts: list[Features]) -> Features:
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


@contextmanager
def modules_run() -> Iterator[list[nn.Module]]:
    """Every module whose forward starts inside the block (a global pre-forward hook, removed on exit)."""
    seen: list[nn.Module] = []
    handle = nn.modules.module.register_module_forward_pre_hook(lambda module, args: seen.append(module))
    try:
        yield seen
    finally:
        handle.remove()


def batch_coupling_layers(root: nn.Module, modules: list[nn.Module]) -> list[str]:
    """Names (in ``root``) and types of the layers among ``modules`` whose output depends on the other samples
    of the batch: BatchNorm (any dimension, SyncBatchNorm included) normalising with batch statistics."""
    names = {id(m): name for name, m in root.named_modules()}
    found: dict[int, str] = {}
    for m in modules:
        if isinstance(m, _BatchNorm) and (m.training or not m.track_running_stats):
            found[id(m)] = f"{names.get(id(m), '?')} ({type(m).__name__})"
    return list(found.values())


def refuse_coupling(method: nn.Module, modules: list[nn.Module]) -> None:
    layers = batch_coupling_layers(method, modules)
    if layers:
        raise ConfigError(
            f"trainer.contrastive_chunk cannot be exact for {type(method).__name__}: its per-sample encoders "
            f"contain layers that normalise over the batch in training mode: {', '.join(layers)}. Chunks would "
            "see chunk statistics instead of the batch's and train a different model. Set "
            "trainer.contrastive_chunk=null (and lower the memory another way), or build the method without "
            "those layers if it has an option for it"
        )


def _dot(feats: Features, grads: dict[str, Tensor], start: int, stop: int) -> Tensor | None:
    """``sum <f, g>`` over the cached keys: its gradient with respect to ``f`` is ``g``."""
    out: Tensor | None = None
    for key, g in grads.items():
        term = (feats[key].to(g.dtype) * g[start:stop]).sum()
        out = term if out is None else out + term
    return out


def grad_cache_step(
    method: RetrievalMethod,
    batch: dict[str, Any],
    chunk: int,
    *,
    backward: Backward,
    loss_scale: float = 1.0,
    check: bool = True,
) -> tuple[dict[str, Tensor], Tensor]:
    """One training step's loss terms and the tensor the caller backpropagates last.

    ``backward`` receives each earlier chunk's surrogate (the caller applies its loss scaling: AMP's scale,
    1/accumulation); ``loss_scale`` is AMP's current scale, used only to keep the cached gradients out of
    float16 underflow. The returned tensor has the loss's value; its backward delivers the loss-side
    parameters' gradient and the last chunk's. ``check`` scans the per-chunk modules for batch coupling.
    """
    size = batch_size(batch)
    bounds = chunk_bounds(size, chunk)
    device = next((p.device for p in method.parameters()), torch.device("cpu"))
    states: list[RngState] = []
    text_parts: list[Features] = []
    video_parts: list[Features] = []
    with torch.no_grad():
        for i, (start, stop) in enumerate(bounds):
            states.append(RngState.capture(device))
            sub = slice_batch(batch, start, stop, size)
            if i == 0 and check:
                with modules_run() as seen:
                    text, video = method.encode_parts(sub)
                refuse_coupling(method, seen)
            else:
                text, video = method.encode_parts(sub)
            text_parts.append(text)
            video_parts.append(video)
    after = RngState.capture(device)

    leaves_text = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in _concat(text_parts).items()}
    leaves_video = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in _concat(video_parts).items()}
    del text_parts, video_parts
    with torch.enable_grad():
        terms = method.local_loss_terms(leaves_text, leaves_video)
        loss = torch.stack(list(terms.values())).sum()
        wanted = [(side, k, v) for side, d in (("t", leaves_text), ("v", leaves_video)) for k, v in d.items()]
        wanted = [w for w in wanted if w[2].requires_grad]
        grads = torch.autograd.grad(loss * loss_scale, [w[2] for w in wanted], retain_graph=True, allow_unused=True)
    cached: dict[str, dict[str, Tensor]] = {"t": {}, "v": {}}
    for (side, key, _), g in zip(wanted, grads, strict=True):
        if g is not None:  # a feature the loss does not use gets no gradient, as without chunking
            # unscaled in at least float32, so float16 gradients cannot underflow once divided
            wide = g.to(torch.promote_types(g.dtype, torch.float32))
            cached[side][key] = wide / loss_scale if loss_scale != 1.0 else g
    del grads, leaves_text, leaves_video

    final = loss
    for i, (start, stop) in enumerate(bounds):
        states[i].restore()
        with torch.enable_grad():
            text, video = method.encode_parts(slice_batch(batch, start, stop, size))
            parts = [_dot(text, cached["t"], start, stop), _dot(video, cached["v"], start, stop)]
            present = [p for p in parts if p is not None and p.requires_grad]
            if not present:  # nothing trainable before the cache (frozen encoders)
                continue
            surrogate = present[0] if len(present) == 1 else present[0] + present[1]
        if i < len(bounds) - 1:
            backward(surrogate)
        else:  # value: the loss; gradient: the loss graph's plus the last chunk's
            final = loss + (surrogate - surrogate.detach()).to(loss.dtype)
    after.restore()
    return {k: v.detach() for k, v in terms.items()}, final


class GradientStash:
    """Keeps the gradients computed inside the block apart from ``.grad`` until :meth:`release` adds them back.

    Lightning's automatic optimisation zeroes ``.grad`` after ``training_step`` and before it backpropagates
    the returned loss; the chunks backpropagated inside the step would be lost. On entry the parameters'
    current gradients (an accumulation window's) are set aside, on exit they are put back and what the block
    produced is held here; ``release`` (from ``on_before_backward``) adds it to ``.grad``, so the final
    backward pass, and DDP's all-reduce with it, sees the sum.
    """

    def __init__(self, module: nn.Module) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.held: list[tuple[nn.Parameter, Tensor]] = []

    def __enter__(self) -> GradientStash:
        self._outer = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.held = [(p, p.grad) for p in self.params if p.grad is not None]
        for p, g in zip(self.params, self._outer, strict=True):
            p.grad = g
        self._outer = []

    def release(self) -> None:
        for p, g in self.held:
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
        self.held = []


def suggest_chunk(per_device_batch: int, chunk: int | None) -> int | None:
    """A ``contrastive_chunk`` to try after running out of memory: a quarter of the per-device batch when
    unchunked (a power of two), half the current chunk otherwise; None when chunks of one did not fit."""
    if chunk is None or chunk >= per_device_batch:
        value = max(1, per_device_batch // 4)
        return 1 << (value.bit_length() - 1)
    return chunk // 2 if chunk > 1 else None


def oom_hint(per_device_batch: int, chunk: int | None) -> str:
    """What to do when the first training step runs out of device memory, without changing the method."""
    advice = suggest_chunk(per_device_batch, chunk)
    if advice is None:
        return (
            "out of memory at the first training step even with trainer.contrastive_chunk=1: the loss over the "
            f"per-device batch of {per_device_batch} does not fit. Use more devices (the global batch, "
            "data.batch_size, is split over them) or a smaller precision (trainer.precision=bf16-mixed)"
        )
    now = f"trainer.contrastive_chunk={chunk}" if chunk else "unchunked"
    return (
        f"out of memory at the first training step ({now}, per-device batch {per_device_batch}). Keep the batch "
        f"(it is part of the method) and run the encoders in chunks: trainer.contrastive_chunk={advice} gives "
        "the same gradients with a fraction of the activation memory (benchmarks/README.md lists measured peaks "
        "per chunk); lower it further if this still fails. Shrinking data.batch_size or accumulating gradients "
        "changes the method and is recorded as a deviation"
    )
