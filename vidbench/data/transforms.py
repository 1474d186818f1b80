"""CLIP's image preprocessing, done in torch on whole clips.

Resizing happens once per clip on the decoding side and stays uint8 (4x smaller batches, frame cache
friendly); normalisation happens on the device the model runs on, so batches travel as uint8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESIZE_CHUNK = 8  # frames resized at once: bounds the float32 working copy of long, high-res clips


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shape after scaling the short side to ``size``; the long side is truncated like PIL/CLIP's Resize."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``uint8 [n, H, W, 3]`` (as decoded) -> ``uint8 [n, 3, size, size]``, CLIP's Resize + CenterCrop.

    Bicubic with antialiasing (torch's antialiased bicubic uses PIL's kernel, a = -0.5), done as PIL does it:
    a horizontal pass, rounding and clamping to uint8 range, then a vertical pass; this matches PIL's
    ``Image.resize(BICUBIC)`` to within one grey level, where a single 2-D pass differs by up to ~20 near
    sharp edges. The centre crop uses offsets ``int(round((H - size) / 2))`` as in CLIP.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [n, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if size < 1:
        raise ValueError(f"size={size} must be >= 1")
    n, h, w, _ = frames.shape
    new_h, new_w = resized_shape(h, w, size)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    out = torch.empty((n, 3, size, size), dtype=torch.uint8, device=frames.device)
    for s in range(0, n, _RESIZE_CHUNK):
        x = frames[s : s + _RESIZE_CHUNK].permute(0, 3, 1, 2).float()
        if new_w != w:
            x = _bicubic(x, (h, new_w)).round_().clamp_(0, 255)
        x = x[:, :, :, left : left + size]  # columns are final after the horizontal pass
        if new_h != h:
            x = _bicubic(x, (new_h, size)).round_().clamp_(0, 255)
        out[s : s + _RESIZE_CHUNK] = x[:, :, top : top + size, :].to(torch.uint8)
    return out


def _bicubic(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=shape, mode="bicubic", align_corners=False, antialias=True)


def normalize_video(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., T, 3, S, S]`` + mask ``[..., T]`` -> float32 ``(x / 255 - mean) / std``.

    Padded frames (mask 0) come out exactly 0, as the reference feeds zero tensors for padding after its
    normalisation. Runs on whatever device ``video`` is on.
    """
    if video.dtype != torch.uint8 or video.ndim < 4 or video.shape[-3] != 3:
        raise ValueError(f"video must be uint8 [..., T, 3, S, S], got {video.dtype} {tuple(video.shape)}")
    if tuple(mask.shape) != tuple(video.shape[:-3]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match frames {tuple(video.shape[:-3])}")
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=video.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=video.device).view(3, 1, 1)
    x = (video.float() / 255.0 - mean) / std
    keep = (mask.to(device=video.device) != 0).to(torch.float32)
    return x * keep[..., None, None, None]
