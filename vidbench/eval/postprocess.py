"""Optional re-normalisation of a test similarity matrix before ranking (a separate protocol).

Dual softmax (DSL, from CAMoE) rescales every score by how strongly its column of queries prefers it:
``S' = S * softmax(tau * S, dim=query axis)``. It is **transductive**: each query's scores depend on every
other test query, so it needs the whole test query set at once and cannot serve one query at a time. It
inflates R@1 and neither CLIP4Clip nor DRL uses it, so numbers computed with it are a different protocol:
record them under their own ``postprocess`` name (e.g. ``dsl/t2v_R1``), never next to reference numbers.

Sinkhorn normalisation (:func:`sinkhorn_log_plan`) goes further along the same road: it turns
``exp(tau * S)`` into a transport plan whose rows (queries) and columns (videos) carry fixed masses, so it is
transductive too. QB-Norm with the dynamic inverted softmax (:func:`querybank_norm`, Bogolin et al., CVPR
2022) is **not** transductive on the test queries: it divides each video's ``exp(beta * s)`` by the same sum
over a bank of queries drawn from the *training* captions, but it uses that extra data, so its rows are set
apart as well.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vidbench.errors import ConfigError

__all__ = [
    "POSTPROCESS_CHOICES",
    "UnknownPostprocessError",
    "apply_postprocess",
    "dual_softmax",
    "postprocess_flops_per_query",
    "querybank_norm",
    "sinkhorn_log_plan",
]

POSTPROCESS_CHOICES: tuple[str, ...] = ("none", "dsl", "sinkhorn", "qbnorm")
# QB-Norm's defaults in the authors' release (ioanacroi/qb-norm, dynamic_inverted_softmax.py): beta 20, k 1.
QBNORM_BETA = 20.0
QBNORM_K = 1
SINKHORN_TEMPERATURE = 100.0
SINKHORN_ITERATIONS = 20


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


def sinkhorn_log_plan(
    sim: Tensor,
    temperature: float = SINKHORN_TEMPERATURE,
    iterations: int = SINKHORN_ITERATIONS,
    column_mass: Tensor | None = None,
) -> Tensor:
    """Log of the Sinkhorn-Knopp transport plan of ``K = exp(temperature * sim)`` (float64, log domain).

    Each iteration scales the columns so that column ``j`` sums to ``column_mass[j]``, then the rows so that
    every row (query) sums to 1; the plan is ``P = diag(u) K diag(v)``. The columns get the number of
    captions of each video (``column_mass``; default 1 each, a square single-caption split), so the masses
    balance on a multi-caption split. Ranking by ``log P`` equals ranking by ``P`` and never overflows.

    Args:
        sim: ``[n_text, n_video]`` scores.
        temperature: inverse temperature of the kernel (100, CLIP's logit scale, as DSL).
        iterations: column-then-row scaling rounds (20).
        column_mass: ``[n_video]`` positive masses summing to ``n_text``.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise UnknownPostprocessError(f"sinkhorn temperature must be a positive finite number, got {temperature}")
    if int(iterations) < 1:
        raise UnknownPostprocessError(f"sinkhorn iterations must be >= 1, got {iterations}")
    log_plan = sim.to(torch.float64) * temperature
    n_text, n_video = log_plan.shape
    if column_mass is None:
        column_mass = torch.full((n_video,), n_text / n_video, dtype=torch.float64)
    log_mass = column_mass.to(device=sim.device, dtype=torch.float64).log()
    for _ in range(int(iterations)):
        log_plan = log_plan - torch.logsumexp(log_plan, dim=0, keepdim=True) + log_mass[None, :]
        log_plan = log_plan - torch.logsumexp(log_plan, dim=1, keepdim=True)
    return log_plan


def querybank_norm(sim: Tensor, bank_sim: Tensor, beta: float = QBNORM_BETA, k: int = QBNORM_K) -> Tensor:
    """QB-Norm with the dynamic inverted softmax (DIS), t2v rows, in the log domain (float64).

    The bank holds queries that are not test queries (training captions). A video is *activated* when it is
    among the top ``k`` of some bank query. A test query whose top-1 video (first index on ties) is activated
    gets ``beta * s[q, j] - log sum_b exp(beta * bank_sim[b, j])`` (the log of the inverted softmax
    ``exp(beta s) / sum_b exp(beta B)``, same ranking); every other query keeps its raw scores, as in the
    authors' release. Rows are ranked one at a time, so the mixture is sound for t2v; v2t is not normalised.

    Args:
        sim: ``[n_text, n_video]`` test scores.
        bank_sim: ``[n_bank, n_video]`` scores of the bank queries against the same gallery.
        beta: inverse temperature (the release's default 20).
        k: activation depth (the release's default 1).
    """
    if sim.ndim != 2 or bank_sim.ndim != 2 or bank_sim.shape[1] != sim.shape[1]:
        raise UnknownPostprocessError(
            f"qbnorm needs bank scores [n_bank, {sim.shape[1] if sim.ndim == 2 else '?'}] over the test gallery, "
            f"got {tuple(bank_sim.shape)}"
        )
    if bank_sim.shape[0] == 0:
        raise UnknownPostprocessError("qbnorm's query bank is empty: it needs training captions")
    if not (math.isfinite(beta) and beta > 0) or int(k) < 1:
        raise UnknownPostprocessError(f"qbnorm needs beta > 0 and k >= 1, got beta={beta}, k={k}")
    scores = sim.to(torch.float64)
    bank = bank_sim.to(device=sim.device, dtype=torch.float64)
    kk = min(int(k), bank.shape[1])
    activated = torch.zeros(bank.shape[1], dtype=torch.bool, device=sim.device)
    activated[bank.topk(kk, dim=1).indices.flatten()] = True
    log_norm = torch.logsumexp(beta * bank, dim=0)  # [n_video]
    normalise = activated[scores.argmax(dim=1)]
    return torch.where(normalise[:, None], beta * scores - log_norm[None, :], scores)


def postprocess_flops_per_query(name: str, n_gallery: int, **options: float) -> float:
    """Extra floating-point operations per text query that post-processing ``name`` adds to matching.

    Counted per element of the query's row (one exp, log or add = 1): DSL ~4 (scale, exp, column sum share,
    multiply), Sinkhorn ~6 per iteration (two log-sum-exp passes) plus the scaling, QB-Norm ~3 (scale,
    subtract the stored log normaliser, top-1 test). QB-Norm's one-time bank cost is reported separately.
    """
    n = float(n_gallery)
    if name == "none":
        return 0.0
    if name == "dsl":
        return 4.0 * n
    if name == "sinkhorn":
        return n * (1.0 + 6.0 * float(options.get("iterations", SINKHORN_ITERATIONS)))
    if name == "qbnorm":
        return 3.0 * n
    raise UnknownPostprocessError(f"unknown postprocess {name!r}; choose one of {', '.join(POSTPROCESS_CHOICES)}")


def apply_postprocess(
    sim: Tensor, name: str, *, caption_video: Tensor | None = None, bank_sim: Tensor | None = None, **kwargs: float
) -> tuple[Tensor, Tensor]:
    """Scores to rank for each direction after post-processing ``name``.

    Args:
        sim: ``[n_text, n_video]`` similarity matrix.
        name: ``"none"`` (identity), ``"dsl"`` (dual softmax; option ``temperature``, default 100),
            ``"sinkhorn"`` (options ``temperature`` 100, ``iterations`` 20; column masses from
            ``caption_video``) or ``"qbnorm"`` (options ``beta`` 20, ``k`` 1; needs ``bank_sim``; v2t unchanged).
        caption_video: ``[n_text]`` video of each caption (Sinkhorn's column masses).
        bank_sim: ``[n_bank, n_video]`` QB-Norm's bank scores.

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
    if name == "sinkhorn":
        _reject_options(name, kwargs, allowed=("temperature", "iterations"))
        mass = None
        if caption_video is not None:
            mass = torch.bincount(caption_video.to(torch.long).cpu(), minlength=sim.shape[1]).double()
        plan = sinkhorn_log_plan(
            sim,
            float(kwargs.get("temperature", SINKHORN_TEMPERATURE)),
            int(kwargs.get("iterations", SINKHORN_ITERATIONS)),
            mass,
        )
        return plan, plan
    if name == "qbnorm":
        _reject_options(name, kwargs, allowed=("beta", "k"))
        if bank_sim is None:
            raise UnknownPostprocessError("postprocess 'qbnorm' needs bank_sim (training-caption bank scores)")
        normed = querybank_norm(sim, bank_sim, float(kwargs.get("beta", QBNORM_BETA)), int(kwargs.get("k", QBNORM_K)))
        return normed, sim
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
