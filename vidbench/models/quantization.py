"""HCQ's quantisation machinery: the PQ layer, end-of-epoch spherical k-means, and GhostVLAD levels.

Spec methods-eercf-hcq.md B.2-B.3 (reference: gimpong/WWW22-HCQ).

- :class:`ProductQuantizer` splits a D-dim embedding into M sub-vectors, normalises each, and replaces it
  by the most similar of K unit-norm codewords (hard code). The forward value is the hard reconstruction;
  the backward pass is the identity to the encoder (straight-through), so the AQ-CL terms give the codewords
  no gradient. The reference holds them as ``nn.Parameter``s all the same (``update_codebooks``): its soft-code
  term and its PQ regulariser (ablations, weight 0 in every config) do reach them, and the optimiser moves them
  between the per-step renormalisations; :func:`spherical_kmeans` re-learns them at the end of each epoch.
- :func:`spherical_kmeans` runs on every sub-codebook at once (cosine assignment, normalised means, warm
  start, all iterations as the reference in effect runs; per-sub-codebook stopping at ``MSE(old, new) <= tol``
  is the option ``stop="converged"``). Under DDP the per-cluster sums and counts
  are all-reduced and the new codebook is broadcast from rank 0 at every iteration, so every rank runs the
  k-means of the union of the rank-local caches and ends with bitwise identical codebooks.
- :class:`EmbeddingReservoir` caches (a uniform sample of) the embeddings seen during an epoch.
- :class:`GhostVLAD` is the shared soft assignment that turns word tokens or frames into L fine levels, with
  the reference's quirks by default (ghost column dropped *before* the softmax, mask multiplying the logits
  before the batch-norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vidbench.errors import ConfigError

from .pooling import l2_normalize

EMPTY_POLICIES = ("zero", "keep")
KMEANS_STOPS = ("all", "converged")
VLAD_MODES = ("reference", "textbook")


def split_normalize(x: Tensor, num_subspaces: int) -> Tensor:
    """L2-normalise each of the ``num_subspaces`` consecutive sub-vectors of ``x [..., D]``.

    The result has norm sqrt(M) (zero sub-vectors stay zero), which is why an inner product with a
    concatenation of unit codewords divided by M is a cosine similarity.
    """
    *lead, dim = x.shape
    if dim % num_subspaces:
        raise ConfigError(f"embedding size {dim} is not divisible by {num_subspaces} sub-codebooks (M)")
    sub = x.reshape(*lead, num_subspaces, dim // num_subspaces)
    return l2_normalize(sub).reshape(*lead, dim)


class Quantized(NamedTuple):
    """What one PQ layer returns for a batch ``x [B, D]``."""

    quantized: Tensor  # [B, D] forward = hard reconstruction, backward = identity (straight-through)
    hard: Tensor  # [B, D] concatenated selected codewords (no gradient)
    normalized: Tensor  # [B, D] the sub-normalised input
    codes: Tensor  # [B, M] long, argmax codeword per sub-codebook
    soft: Tensor  # [B, M, K] softmax(alpha * BN(similarities)): the reference's soft codes


class ProductQuantizer(nn.Module):
    """M sub-codebooks of K unit-norm codewords of size D/M; hard codes with a straight-through estimator.

    ``codebook`` ``[M, K, D/M]`` is an ``nn.Parameter`` when ``trainable`` (the reference's PQ layers with
    ``update_codebooks``: the optimiser updates it from the soft-code and PQ-regulariser gradients, and
    :meth:`renormalize_` puts every codeword back on the unit sphere before each step, as the reference's
    ``codebook_normalization``), otherwise a buffer that only the k-means changes. Either way the state-dict
    key is ``codebook``, so checkpoints of both kinds load into both. Codes fit in uint8, so K is at most 256.
    The batch-norm over the similarities (``BatchNorm1d(M, affine=False)``) is monotone within each
    sub-codebook: it never changes a hard code, only the soft codes.
    """

    def __init__(
        self,
        dim: int,
        num_subspaces: int = 32,
        num_codewords: int = 256,
        *,
        alpha: float = 1.0,
        batch_norm: bool = True,
        trainable: bool = False,
    ) -> None:
        super().__init__()
        if num_subspaces < 1 or dim % num_subspaces:
            raise ConfigError(f"M = {num_subspaces} sub-codebooks must divide the embedding size {dim}")
        if not 2 <= num_codewords <= 256:
            raise ConfigError(f"K = {num_codewords} codewords: need 2 <= K <= 256 so a code fits in one byte")
        self.dim, self.num_subspaces, self.num_codewords = dim, num_subspaces, num_codewords
        self.alpha = alpha
        sub = dim // num_subspaces
        # random unit codewords (the global torch RNG: seed before construction); k-means warm-starts here
        init = l2_normalize(torch.randn(num_subspaces, num_codewords, sub))
        if trainable:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
        self.bn = nn.BatchNorm1d(num_subspaces, affine=False) if batch_norm else None

    @property
    def trainable(self) -> bool:
        return isinstance(self.codebook, nn.Parameter) and self.codebook.requires_grad

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Every codeword back to unit norm (zero codewords stay zero), in place: the reference does this before
        every training step, so a codebook the optimiser moved is unit again when it quantises."""
        self.codebook.copy_(l2_normalize(self.codebook))

    @property
    def sub_dim(self) -> int:
        return self.dim // self.num_subspaces

    def similarities(self, normalized: Tensor) -> Tensor:
        """``[B, M, K]`` inner products of sub-normalised sub-vectors with every codeword."""
        sub = normalized.reshape(-1, self.num_subspaces, self.sub_dim)
        return torch.einsum("bmd,mkd->bmk", sub, self.codebook)

    def decode(self, codes: Tensor) -> Tensor:
        """``[..., M]`` integer codes -> ``[..., D]`` concatenated codewords."""
        codes = codes.long()
        sub = torch.arange(self.num_subspaces, device=codes.device)
        return self.codebook[sub, codes].reshape(*codes.shape[:-1], self.dim)

    def encode(self, x: Tensor) -> Tensor:
        """Hard codes ``[B, M]`` (uint8) of ``x [B, D]``."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.similarities(split_normalize(x.float(), self.num_subspaces)).argmax(-1).to(torch.uint8)

    def forward(self, x: Tensor) -> Quantized:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"ProductQuantizer expects [B, {self.dim}], got {tuple(x.shape)}")
        # codes must not depend on the autocast dtype: quantise in float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            normalized = split_normalize(x.float(), self.num_subspaces)
            sims = self.similarities(normalized)
            codes = sims.argmax(-1)
            hard = self.decode(codes)
            logits = self.bn(sims) if self.bn is not None else sims
            soft = F.softmax(self.alpha * logits, dim=-1)
            quantized = normalized + (hard - normalized).detach()
        return Quantized(quantized, hard, normalized, codes, soft)


# ---------------------------------------------------------------------------------------------------------
# spherical k-means
# ---------------------------------------------------------------------------------------------------------
def assign_codes(x: Tensor, codebook: Tensor, chunk: int = 65536) -> Tensor:
    """Cosine assignment: ``x [N, M, d]`` (sub-normalised), ``codebook [M, K, d]`` -> codes ``[N, M]`` long.

    Works in chunks of ``chunk`` rows so the ``[N, M, K]`` similarity never exists at once.
    """
    out = torch.empty(x.shape[0], x.shape[1], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk]
        out[start : start + chunk] = torch.einsum("nmd,mkd->nmk", block, codebook).argmax(-1)
    return out


def cluster_sums(x: Tensor, codes: Tensor, num_codewords: int) -> tuple[Tensor, Tensor]:
    """Per-cluster vector sums ``[M, K, d]`` and counts ``[M, K]`` of ``x [N, M, d]`` under ``codes [N, M]``."""
    n, m, d = x.shape
    flat = (codes + torch.arange(m, device=codes.device) * num_codewords).reshape(-1)
    sums = torch.zeros(m * num_codewords, d, dtype=x.dtype, device=x.device)
    sums.index_add_(0, flat, x.reshape(n * m, d))
    counts = torch.bincount(flat, minlength=m * num_codewords).to(x.dtype)
    return sums.reshape(m, num_codewords, d), counts.reshape(m, num_codewords)


def centroids_from_sums(sums: Tensor, counts: Tensor, previous: Tensor, empty: str = "zero") -> Tensor:
    """Spherical means: the normalised sum of each cluster's members.

    An empty cluster becomes the zero vector (``empty="zero"``, the reference: a dead codeword that only a
    later k-means can revive) or keeps its previous codeword (``empty="keep"``).
    """
    if empty not in EMPTY_POLICIES:
        raise ConfigError(f"k-means empty-cluster policy must be one of {EMPTY_POLICIES}, got {empty!r}")
    new = l2_normalize(sums)
    hollow = (counts == 0).unsqueeze(-1)
    fill = torch.zeros_like(previous) if empty == "zero" else previous
    return torch.where(hollow, fill, new)


class Collective:
    """The two collectives the distributed k-means needs; no-ops on a single process."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1

    def sum_(self, t: Tensor) -> Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def broadcast_(self, t: Tensor) -> Tensor:
        if self.active:
            dist.broadcast(t, src=dist.get_global_rank(self.group, 0) if self.group else 0, group=self.group)
        return t


@dataclass
class KMeansResult:
    codebook: Tensor  # [M, K, d]
    iterations: Tensor  # [M] iterations run per sub-codebook
    counts: Tensor  # [M, K] members per codeword at the last assignment (over all ranks)

    @property
    def empty(self) -> int:
        return int((self.counts == 0).sum())


@torch.no_grad()
def spherical_kmeans(
    x: Tensor,
    init: Tensor,
    *,
    iters: int = 10,
    tol: float = 1e-5,
    empty: str = "zero",
    stop: str = "all",
    chunk: int = 65536,
    collective: Collective | None = None,
) -> KMeansResult:
    """Spherical k-means of every sub-codebook at once, warm-started from ``init [M, K, d]``.

    :param x: ``[N, M, d]`` rank-local data; each sub-vector is normalised here (cosine assignment).
    :param iters: assignment + update rounds (at most, with ``stop="converged"``).
    :param stop: ``"all"`` (default) runs all ``iters`` rounds. That is what the reference effectively does:
        from its second round on, its convergence test compares the new normalised means with a codebook
        tensor its in-place update has already overwritten with this round's *unnormalised* means, so it
        measures their distance from unit norm, which rarely falls under the threshold. ``"converged"`` stops
        each sub-codebook once the mean squared change of its codewords is ``<= tol``.
    :param collective: under DDP, sums and counts are all-reduced and the new codebook is broadcast from
        rank 0 each round, so all ranks compute the k-means of the union of their data and take identical
        stopping decisions. Every rank must call this together (with possibly different N, even 0).
    """
    if x.dim() != 3 or x.shape[1:] != (init.shape[0], init.shape[2]):
        raise ValueError(f"k-means data {tuple(x.shape)} does not match codebook {tuple(init.shape)} ([N, M, d])")
    if stop not in KMEANS_STOPS:
        raise ConfigError(f"k-means stop rule must be one of {KMEANS_STOPS}, got {stop!r}")
    coll = collective or Collective()
    x = l2_normalize(x.float())
    codebook = init.float().clone()
    m, k, _ = codebook.shape
    active = torch.ones(m, dtype=torch.bool, device=codebook.device)
    ran = torch.zeros(m, dtype=torch.long, device=codebook.device)
    counts = torch.zeros(m, k, device=codebook.device)
    for _ in range(iters):
        codes = assign_codes(x, codebook, chunk)
        sums, counts = cluster_sums(x, codes, k)
        coll.sum_(sums)
        coll.sum_(counts)
        new = coll.broadcast_(centroids_from_sums(sums, counts, codebook, empty))
        mse = (new - codebook).pow(2).mean(dim=(1, 2))
        codebook = torch.where(active[:, None, None], new, codebook)
        ran += active.long()
        if stop == "converged":
            active &= mse > tol
        if not bool(active.any()):
            break
    return KMeansResult(codebook, ran, counts)


class EmbeddingReservoir:
    """A uniform random sample (without replacement) of at most ``capacity`` rows seen since the last take.

    Every row gets a random key; the ``capacity`` rows with the smallest keys are kept (compaction happens
    when twice the capacity is pending, so the cost per row is constant). Rows are stored detached, in
    float32, on the device they came from.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"k-means cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self._rows: list[Tensor] = []
        self._keys: list[Tensor] = []
        self._pending = 0
        self.seen = 0
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(self._pending, self.capacity)

    def add(self, x: Tensor) -> None:
        x = x.detach().float().reshape(x.shape[0], -1)
        keys = torch.rand(x.shape[0], generator=self._gen).to(x.device)
        self._rows.append(x)
        self._keys.append(keys)
        self._pending += x.shape[0]
        self.seen += x.shape[0]
        if self._pending >= 2 * self.capacity:
            self._compact()

    def _compact(self) -> None:
        rows, keys = torch.cat(self._rows), torch.cat(self._keys)
        if rows.shape[0] > self.capacity:
            keep = torch.topk(keys, self.capacity, largest=False).indices.sort().values
            rows, keys = rows[keep], keys[keep]
        self._rows, self._keys, self._pending = [rows], [keys], rows.shape[0]

    def take(self, seed: int | None = None) -> Tensor | None:
        """The cached rows (``None`` if nothing was added); empties the reservoir (re-seeded if asked)."""
        out = None
        if self._rows:
            self._compact()
            out = self._rows[0]
        self.reset(seed if seed is not None else int(torch.randint(2**62, (1,), generator=self._gen)))
        return out


# ---------------------------------------------------------------------------------------------------------
# GhostVLAD
# ---------------------------------------------------------------------------------------------------------
class GhostVLAD(nn.Module):
    """NetVLAD with ghost clusters over a set of tokens: ``[B, N, D]`` + mask -> ``[B, K, D]`` unit vectors.

    ``V_k = sum_n a_nk x_n - (sum_n a_nk) c_k``, then L2 per cluster. The assignment logits ``x W`` have
    ``K + G`` columns (G ghost clusters) and go through a batch-norm over all tokens.

    - ``mode="reference"`` (HCQ's code): the ghost columns are dropped *before* the softmax (so they absorb
      nothing), and the mask *multiplies the logits before the batch-norm*, whose batch statistics cover the
      K real columns of every token, padding included: a padded token's logits become ``BN(0)`` (not 0), and
      the token is still softmax-weighted into the sums with its own features.
    - ``mode="textbook"`` (GhostVLAD, Zhong et al. 2018): the softmax spans K + G columns and the ghost
      weights are discarded afterwards; padded tokens get zero weight and are left out of the batch-norm.
    """

    def __init__(
        self, dim: int, clusters: int, ghost_clusters: int = 1, *, mode: str = "reference", batch_norm: bool = True
    ) -> None:
        super().__init__()
        if mode not in VLAD_MODES:
            raise ConfigError(f"GhostVLAD mode must be one of {VLAD_MODES}, got {mode!r}")
        if clusters < 1 or ghost_clusters < 0:
            raise ConfigError(f"GhostVLAD needs >= 1 cluster and >= 0 ghosts, got {clusters} and {ghost_clusters}")
        self.dim, self.clusters, self.ghost_clusters, self.mode = dim, clusters, ghost_clusters, mode
        scale = 1.0 / math.sqrt(dim)
        self.assignment = nn.Parameter(scale * torch.randn(dim, clusters + ghost_clusters))
        self.centers = nn.Parameter(scale * torch.randn(clusters, dim))
        width = clusters if mode == "reference" else clusters + ghost_clusters
        self.bn = nn.BatchNorm1d(width) if batch_norm else None

    def _bn(self, logits: Tensor, valid: Tensor | None = None) -> Tensor:
        if self.bn is None:
            return logits
        flat = logits.reshape(-1, logits.shape[-1])
        if valid is None:
            return self.bn(flat).reshape(logits.shape)
        rows = valid.reshape(-1)
        out = torch.zeros_like(flat)
        out[rows] = self.bn(flat[rows])
        return out.reshape(logits.shape)

    def soft_assign(self, x: Tensor, mask: Tensor) -> Tensor:
        """Weights ``[B, N, K]`` of every token for the K real clusters."""
        logits = x @ self.assignment  # [B, N, K+G]
        m = mask.to(logits.dtype).unsqueeze(-1)
        if self.mode == "reference":
            # the reference's order: drop the ghosts, multiply by the mask, *then* batch-norm over all B * N
            # rows (padding's zeros included, in the running statistics too), then softmax over K
            logits = self._bn(logits[..., : self.clusters] * m)
            return F.softmax(logits, dim=-1)
        valid = mask.bool()
        logits = self._bn(logits, valid)
        return F.softmax(logits, dim=-1)[..., : self.clusters] * m

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim or mask.shape != x.shape[:2]:
            raise ValueError(
                f"GhostVLAD expects tokens [B, N, {self.dim}] and mask [B, N]; "
                f"got {tuple(x.shape)}, {tuple(mask.shape)}"
            )
        a = self.soft_assign(x, mask)
        agg = torch.einsum("bnk,bnd->bkd", a, x) - a.sum(1).unsqueeze(-1) * self.centers
        return l2_normalize(agg)
