"""The compiled ADC scan equals the torch scan bitwise, for one query and for a batch, at any thread count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidbench.eval.adc import AdcIndex, adc_scan, build_luts, faiss_search, scan_codes, to_faiss_index
from vidbench.models import adc_kernels

pytestmark = pytest.mark.skipif(not adc_kernels.available(), reason="numba is a declared dependency")


@pytest.mark.parametrize(("n", "j", "k"), [(4099, 12, 16), (7, 5, 8), (2 * adc_kernels.BLOCK + 3, 32, 256)])
def test_compiled_scan_is_bitwise_the_torch_scan(n: int, j: int, k: int) -> None:
    gen = torch.Generator().manual_seed(n)
    luts = torch.randn(5, j, k, generator=gen)
    codes = torch.randint(0, k, (n, j), generator=gen, dtype=torch.uint8)
    expected = adc_scan(luts, codes.t().contiguous())
    got = torch.from_numpy(adc_kernels.scan(luts.numpy(), codes.numpy()))
    assert torch.equal(got, expected)
    singles = torch.cat([torch.from_numpy(adc_kernels.scan(luts[i : i + 1].numpy(), codes.numpy())) for i in range(5)])
    assert torch.equal(singles, expected)  # a query's scores do not depend on the batch it is in


def test_thread_count_does_not_change_scores() -> None:
    gen = torch.Generator().manual_seed(1)
    luts = torch.randn(3, 16, 32, generator=gen)
    codes = torch.randint(0, 32, (10_000, 16), generator=gen, dtype=torch.uint8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scan_codes(luts, codes)
        torch.set_num_threads(2)
        two = scan_codes(luts, codes)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_bad_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        adc_kernels.scan(np.zeros((1, 4, 8), np.float32), np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        adc_kernels.scan(np.zeros((1, 4, 8), np.float32), np.zeros((3, 5), np.uint8))


def test_index_top10_matches_faiss_indexpq() -> None:
    gen = torch.Generator().manual_seed(2)
    g, m, k, d = 2, 4, 16, 8
    books = torch.randn(g, m, k, d, generator=gen)
    books = books / books.norm(dim=-1, keepdim=True)
    weights = torch.tensor([0.5, 0.5])
    codes = torch.randint(0, k, (3000, g, m), generator=gen, dtype=torch.uint8)
    queries = torch.randn(6, g, m * d, generator=gen)
    ours = AdcIndex(books, weights, codes)
    scores, ids = ours.search(queries, 10)
    f_scores, f_ids = faiss_search(to_faiss_index(books, codes), queries, m, weights, 10)
    torch.testing.assert_close(scores, f_scores, rtol=1e-5, atol=1e-5)
    assert (ids == f_ids).float().mean() > 0.95  # ties aside, the same ten videos in the same order
    assert torch.equal(
        ours.scores(queries),
        torch.from_numpy(
            adc_kernels.scan(build_luts(queries, books, weights).numpy(), codes.reshape(3000, -1).numpy())
        ),
    )
