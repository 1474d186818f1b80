"""All-gather with gradients, for contrastive losses over the global batch.

Every rank gathers the local features of all ranks and computes the same global loss. Two gradient
semantics are offered (spec methods-clip4clip-drl.md 2.5):

- ``exact``: the backward pass sums the gathered-tensor gradients over ranks before taking the local
  slice. With DDP's gradient averaging, every parameter then gets exactly the gradient a single process
  would get on the concatenated batch.
- ``reference``: the backward pass keeps only the local slice without summing, as CLIP4Clip/DRL's
  ``AllGather`` does; parameters used before the gather then get 1/world_size of that gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sum_grads: bool) -> torch.Tensor:  # type: ignore[override]
        rank, world = _world()
        ctx.rank, ctx.local = rank, x.shape[0]
        ctx.sum_grads = sum_grads
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        if ctx.sum_grads:
            grad = grad.contiguous()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local
        return grad[start : start + ctx.local], None


def gather_with_grad(x: torch.Tensor, mode: str = "exact") -> torch.Tensor:
    """Concatenate ``x`` from all ranks in rank order (dim 0); the identity on a single process.

    Every rank must pass the same shape (training loaders drop the ragged last batch).
    """
    if mode not in ("exact", "reference"):
        raise ValueError(f"gather mode must be 'exact' or 'reference', got {mode!r}")
    _, world = _world()
    if world == 1:
        return x
    return _AllGather.apply(x, mode == "exact")


def gather_features(feats: dict[str, torch.Tensor], mode: str = "exact") -> dict[str, torch.Tensor]:
    """Gather every tensor of a feature container (masks too; they simply carry no gradient)."""
    return {key: gather_with_grad(value, mode) for key, value in feats.items()}
