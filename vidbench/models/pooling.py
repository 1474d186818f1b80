"""Parameter-free pooling of frame features (CLIP4Clip meanP, before the dot product)."""

from __future__ import annotations

import torch
from torch import Tensor


def l2_normalize(x: Tensor, dim: int = -1, eps: float | None = None) -> Tensor:
    """``x / max(||x||, eps)`` along ``dim``.

    Equals the reference ``x / x.norm()`` for every non-zero vector; a zero vector becomes zero
    instead of NaN. The default ``eps`` is 1e-12, raised to the smallest normal number of the dtype
    (6e-5 for fp16) so it does not round to 0 in half precision.
    """
    if eps is None:
        eps = max(1e-12, torch.finfo(x.dtype).tiny) if x.is_floating_point() else 1e-12
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def mean_pool_frames(frames: Tensor, mask: Tensor) -> Tensor:
    """meanP video vector: normalise frames, average the valid ones, normalise again.

    ``v = normalize(sum_t m_t * normalize(f_t) / max(sum_t m_t, 1))``.

    A clip with no valid frame averages to the zero vector; the reference then divides by its zero
    norm (NaN), here it stays zero. Datasets never produce such clips (a video with no decodable
    frame is an error or skipped upstream).

    :param frames: [B, T, D] per-frame features; :param mask: [B, T], 1 = valid. Returns [B, D].
    """
    if frames.dim() != 3 or mask.shape != frames.shape[:2]:
        raise ValueError(
            "mean_pool_frames expects frames [B,T,D] and mask [B,T]; "
            f"got {tuple(frames.shape)}, {tuple(mask.shape)}"
        )
    weights = mask.to(frames.dtype).unsqueeze(-1)  # [B, T, 1]
    summed = (l2_normalize(frames) * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp_min(1.0)
    return l2_normalize(summed / count)
