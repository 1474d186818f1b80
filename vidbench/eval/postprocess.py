"""Optional re-normalisation of a test similarity matrix before ranking (a separate protocol).

Dual softmax (DSL, from CAMoE) rescales every score by how strongly its column of queries prefers it:
``S' = S * softmax(tau * S, dim=query axis)``. It is **transductive**: each query's scores depend on every
other test query, so it needs the whole test query set at once and cannot serve one query at a time. It
inflates R@1 and neither CLIP4Clip nor DRL uses it, so numbers computed with it are a different protocol:
record them under their own ``postprocess`` name (e.g. ``dsl/t2v_R1``), never next to reference numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vidbench.errors import ConfigError

__all__ = ["POSTPROCESS_CHOICES", "UnknownPostprocessError", "apply_postprocess", "dual_softmax"]

POSTPROCESS_CHOICES: tuple[str, ...] = ("none", "dsl")


class UnknownPostprocessError(ConfigError, ValueError):
    """A post-processing name or option that this module does not offer."""


def dual_softmax(sim: Tensor, temperature: float = 100.0, dim: int = 0) -> Tensor:
    """Dual-softmax re-weighting ``sim * softmax(sim * temperature, dim)``, computed in float64.

    Args:
        sim: similarity matrix (any 2-D layout).
        temperature: inverse softmax temperature (CAMoE uses 100, matching CLIP's logit scale).
        dim: the **query** axis to normalise over. For t2v on ``[n_text, n_video]`` that is 0 (each video
            column is normalised over all text queries).

    Returns:
        float64 tensor shaped like ``sim`` (float64 avoids creating ties by rounding back to float32).

    Example:
        >>> dual_softmax(torch.tensor([[0.5, 0.6], [0.1, 0.9]]), temperature=100.0).argmax(dim=1)
        tensor([0, 1])
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise UnknownPostprocessError(f"dsl temperature must be a positive finite number, got {temperature}")
    scores = sim.to(torch.float64)
    return scores * torch.softmax(scores * temperature, dim=dim)


def apply_postprocess(sim: Tensor, name: str, **kwargs: float) -> tuple[Tensor, Tensor]:
    """Scores to rank for each direction after post-processing ``name``.

    Args:
        sim: ``[n_text, n_video]`` similarity matrix.
        name: ``"none"`` (identity) or ``"dsl"`` (dual softmax; option ``temperature``, default 100).

    Returns:
        ``(t2v_sim, v2t_sim)``, both in the ``[n_text, n_video]`` layout, ready for
        ``retrieval_metrics(t2v_sim, caption_video, sim_v2t=v2t_sim)``. For DSL, t2v normalises over the
        text queries (dim 0) and v2t over the video queries (dim 0 of ``sim.T``, i.e. dim 1 here).

    Raises:
        UnknownPostprocessError: (a ``ValueError``) for an unknown name or option.
    """
    if name == "none":
        _reject_options(name, kwargs, allowed=())
        return sim, sim
    if name == "dsl":
        _reject_options(name, kwargs, allowed=("temperature",))
        temperature = float(kwargs.get("temperature", 100.0))
        return dual_softmax(sim, temperature, dim=0), dual_softmax(sim.T, temperature, dim=0).T
    raise UnknownPostprocessError(
        f"unknown postprocess {name!r}; choose one of {', '.join(POSTPROCESS_CHOICES)}"
    )


def _reject_options(name: str, kwargs: dict[str, float], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        accepted = ", ".join(allowed) if allowed else "no options"
        raise UnknownPostprocessError(
            f"postprocess {name!r} got unknown option(s) {extra}; it takes {accepted}"
        )
