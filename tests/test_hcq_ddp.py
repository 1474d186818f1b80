"""Two real gloo processes: after the end-of-epoch k-means over rank-local caches, both ranks hold identical
codebooks, equal to the k-means of one process that saw all the data."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from tests.distributed import run_processes
from vidbench.config import compose
from vidbench.data.text import HashTokenizer, tokenize
from vidbench.methods import build_method

RECIPE = "hcq-clip_tiny_8f_b64_synth-msrvtt"
OVERRIDES = ["method.num_codewords=4", "method.kmeans_tol=0"]
B, T = 8, 4


def make_method():
    torch.manual_seed(0)
    method = build_method(compose(RECIPE, OVERRIDES))
    return method.train()


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    words = ["red", "blue", "square", "circle", "moves", "left", "right", "then", "appears"]
    texts = [" ".join(words[int(i)] for i in torch.randint(len(words), (5,), generator=g)) for _ in range(B)]
    ids, mask = tokenize(HashTokenizer(), texts, 12)
    video = torch.randint(0, 256, (B, T, 3, 32, 32), generator=g, dtype=torch.uint8)
    video_mask = torch.ones(B, T, dtype=torch.long)
    video_mask[::3, -1] = 0
    return {"input_ids": ids, "attention_mask": mask, "video": video, "video_mask": video_mask}


def cached_levels(n: int, seed: int) -> torch.Tensor:
    """Level embeddings [n, G, D] to put straight into the k-means caches."""
    return torch.randn(n, 4, 64, generator=torch.Generator().manual_seed(seed))


SPLIT = (11, 5)  # unequal rank-local cache sizes (text rows; as many video rows)


def _gather(books: torch.Tensor, world: int) -> list[torch.Tensor]:
    everyone = [torch.empty_like(books) for _ in range(world)]
    dist.all_gather(everyone, books.contiguous())
    return everyone


def _worker(rank: int, world: int, out: str) -> None:
    # 1) a real training step per rank: each caches its local half-batch, then the epoch-end k-means
    method = make_method()
    initial = [pq.codebook.clone() for pq in method.quantizers]
    per = B // world
    batch = make_batch(1)
    method.global_loss_terms({k: v[rank * per : (rank + 1) * per] for k, v in batch.items()})
    local_sizes = [len(c) for c in method._caches]
    method.update_codebooks()
    after_step = _gather(method.codebooks(), world)
    # 2) known rank-local caches of unequal size: the result must be the k-means of their union
    for pq, book in zip(method.quantizers, initial, strict=True):
        pq.codebook.copy_(book)
    text, video = cached_levels(sum(SPLIT), 1), cached_levels(sum(SPLIT), 2)
    lo = sum(SPLIT[:rank])
    method.cache_embeddings(text[lo : lo + SPLIT[rank]], video[lo : lo + SPLIT[rank]])
    stats = method.update_codebooks()
    union = _gather(method.codebooks(), world)
    if rank == 0:
        torch.save({"after_step": after_step, "union": union, "sizes": local_sizes, "stats": stats}, out)


def test_codebooks_identical_across_ranks_after_epoch_end_kmeans(tmp_path: Path):
    out = tmp_path / "books.pt"
    run_processes(_worker, 2, (str(out),))
    got = torch.load(out)

    before = make_method().codebooks()
    a0, a1 = got["after_step"]
    assert got["sizes"] == [2 * (B // 2)] * 4  # rank 0 cached its 4 texts + 4 videos per level
    assert torch.equal(a0, a1)  # bitwise identical on both ranks
    assert not torch.allclose(a0, before)  # the k-means really moved the codewords

    u0, u1 = got["union"]
    assert torch.equal(u0, u1)
    single = make_method()
    single.cache_embeddings(cached_levels(sum(SPLIT), 1), cached_levels(sum(SPLIT), 2))
    single_stats = single.update_codebooks()
    assert got["stats"]["kmeans_vectors"] == single_stats["kmeans_vectors"] == 4 * 2 * sum(SPLIT)
    torch.testing.assert_close(u0, single.codebooks(), rtol=1e-5, atol=1e-6)  # k-means of the union
