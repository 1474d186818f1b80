"""Chunked scoring tiles the full score matrix exactly and keeps every block under the memory budget."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from vidbench.eval.retrieval import (
    Features,
    choose_block_size,
    chunked_scores,
    concat_features,
    index_select_features,
    num_items,
    slice_features,
)

N_TEXT, N_VIDEO, L_T, L_V, DIM = 10, 7, 5, 4, 8
ScoreFn = Callable[[Features, Features], torch.Tensor]


def dot_score(text: Features, video: Features) -> torch.Tensor:
    return text["eot"] @ video["eot"].T


def token_max_sum_score(text: Features, video: Features) -> torch.Tensor:
    """Token-wise interaction: mean over valid words of the best frame, and vice versa (DRL-style WTI)."""
    sims = torch.einsum("ald,bmd->ablm", text["tokens"], video["tokens"])
    pair_valid = text["mask"][:, None, :, None].bool() & video["mask"][None, :, None, :].bool()
    sims = sims.masked_fill(~pair_valid, float("-inf"))
    t2v = sims.max(dim=3).values.masked_fill(~text["mask"][:, None, :].bool(), 0.0).sum(2)
    t2v = t2v / text["mask"].sum(1, keepdim=True)
    v2t = sims.max(dim=2).values.masked_fill(~video["mask"][None, :, :].bool(), 0.0).sum(2)
    v2t = v2t / video["mask"].sum(1)[None, :]
    return (t2v + v2t) / 2


def make_features(seed: int) -> tuple[Features, Features]:
    gen = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(N_TEXT, L_T)
    text_mask[:, 3:] = (torch.rand(N_TEXT, L_T - 3, generator=gen) > 0.5).float()
    video_mask = torch.ones(N_VIDEO, L_V)
    video_mask[:, 2:] = (torch.rand(N_VIDEO, L_V - 2, generator=gen) > 0.5).float()
    text = {
        "eot": torch.randn(N_TEXT, DIM, generator=gen, dtype=torch.float64),
        "tokens": torch.randn(N_TEXT, L_T, DIM, generator=gen, dtype=torch.float64),
        "mask": text_mask,
    }
    video = {
        "eot": torch.randn(N_VIDEO, DIM, generator=gen, dtype=torch.float64),
        "tokens": torch.randn(N_VIDEO, L_V, DIM, generator=gen, dtype=torch.float64),
        "mask": video_mask,
    }
    return text, video


def recording(score_fn: ScoreFn, blocks: list[tuple[int, int]]) -> ScoreFn:
    """Wrap score_fn so the block shapes it is called with are recorded."""

    def wrapped(text: Features, video: Features) -> torch.Tensor:
        blocks.append((num_items(text), num_items(video)))
        return score_fn(text, video)

    return wrapped


@pytest.mark.parametrize(
    ("score_fn", "bytes_per_pair"), [(dot_score, 8), (token_max_sum_score, L_T * L_V * 8)]
)
@pytest.mark.parametrize("pairs_in_budget", [1, 3, 6, 7, 20, 69, 10**6])
def test_chunked_equals_full_under_budget(
    score_fn: ScoreFn, bytes_per_pair: int, pairs_in_budget: int
) -> None:
    text, video = make_features(pairs_in_budget)
    full = score_fn(text, video)
    budget = pairs_in_budget * bytes_per_pair
    blocks: list[tuple[int, int]] = []
    got = chunked_scores(
        recording(score_fn, blocks), text, video, budget_bytes=budget, bytes_per_pair=bytes_per_pair
    )
    torch.testing.assert_close(got, full, rtol=1e-12, atol=1e-12)
    assert got.dtype == torch.float64 and got.device.type == "cpu"
    assert all(t * v * bytes_per_pair <= budget for t, v in blocks)
    assert sum(t * v for t, v in blocks) == N_TEXT * N_VIDEO  # every pair scored exactly once
    if pairs_in_budget >= N_VIDEO:
        assert all(v == N_VIDEO for _, v in blocks)  # full video width preferred


@pytest.mark.parametrize(("text_chunk", "video_chunk"), [(3, 4), (1, 1), (4, None), (None, 3), (32, 32)])
def test_explicit_chunk_sizes(text_chunk: int | None, video_chunk: int | None) -> None:
    text, video = make_features(0)
    blocks: list[tuple[int, int]] = []
    got = chunked_scores(
        recording(token_max_sum_score, blocks),
        text,
        video,
        budget_bytes=12 * L_T * L_V * 8,
        bytes_per_pair=L_T * L_V * 8,
        text_chunk=text_chunk,
        video_chunk=video_chunk,
    )
    torch.testing.assert_close(got, token_max_sum_score(text, video), rtol=1e-12, atol=1e-12)
    if text_chunk is not None:
        assert max(t for t, _ in blocks) == min(text_chunk, N_TEXT)
    if video_chunk is not None:
        assert max(v for _, v in blocks) == min(video_chunk, N_VIDEO)


def test_choose_block_size() -> None:
    assert choose_block_size(100, 50, budget_bytes=4 * 50 * 10, bytes_per_pair=4) == (10, 50)
    assert choose_block_size(100, 50, budget_bytes=4 * 20, bytes_per_pair=4) == (1, 20)
    assert choose_block_size(5, 5, budget_bytes=2**30) == (5, 5)
    assert choose_block_size(100, 50, budget_bytes=400, bytes_per_pair=4, text_chunk=8) == (8, 12)
    assert choose_block_size(100, 50, budget_bytes=400, bytes_per_pair=4, video_chunk=30) == (3, 30)
    with pytest.raises(ValueError, match="cannot hold"):
        choose_block_size(10, 10, budget_bytes=3, bytes_per_pair=4)
    with pytest.raises(ValueError, match="text_chunk=8"):
        choose_block_size(10, 10, budget_bytes=28, bytes_per_pair=4, text_chunk=8)
    with pytest.raises(ValueError, match="positive"):
        choose_block_size(10, 10, text_chunk=0)
    with pytest.raises(ValueError, match="nothing to score"):
        choose_block_size(0, 10)


def test_scores_are_computed_without_grad() -> None:
    weight = torch.nn.Parameter(torch.ones(DIM, dtype=torch.float64))
    text, video = make_features(1)
    got = chunked_scores(lambda t, v: (t["eot"] * weight) @ v["eot"].T, text, video, budget_bytes=80)
    assert not got.requires_grad


def test_bad_score_fn_output_is_reported() -> None:
    text, video = make_features(2)
    with pytest.raises(ValueError, match="block of 10 texts x 7 videos"):
        chunked_scores(lambda t, v: dot_score(t, v).T, text, video)


def test_feature_container_helpers() -> None:
    text, _ = make_features(3)
    assert num_items(text) == N_TEXT
    parts = [slice_features(text, 0, 4), slice_features(text, 4, N_TEXT)]
    joined = concat_features(parts)
    for key in text:
        torch.testing.assert_close(joined[key], text[key])
    picked = index_select_features(text, torch.tensor([9, 0, 4]))
    torch.testing.assert_close(picked["tokens"], text["tokens"][[9, 0, 4]])
    with pytest.raises(ValueError, match="disagree"):
        num_items({"a": torch.zeros(3, 2), "b": torch.zeros(4)})
    with pytest.raises(ValueError, match="empty"):
        num_items({})
    with pytest.raises(ValueError, match="leading item dimension"):
        num_items({"a": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="container 1 has keys"):
        concat_features([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
