"""The fast paths of the guided methods give what their plain reference computations give (equivalence, not timing).

Channel DropBlock's peak search (flat shifted adds, boundary columns rewritten, first maximum found with
max-reductions) must pick exactly the position ``argmax`` picks on the zero-padded 3×3 box sums, ties included.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

import dropkit  # noqa: F401  (registers the methods; ``dropkit.methods`` is a function, so read the module here)

_cdb = sys.modules["dropkit.methods.channel_dropblock"]

SHAPES = [(2, 3, 1, 1), (2, 3, 1, 5), (2, 3, 5, 1), (2, 3, 2, 2), (2, 3, 1, 2), (2, 3, 2, 1), (3, 4, 3, 3),
          (2, 5, 7, 9), (1, 2, 16, 3), (2, 4, 8, 8)]


def _reference_peak(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax of the zero-padded box sums, NaN counted as +inf: row and column of the first maximum."""
    box = _cdb._box3_sum(x).nan_to_num(nan=math.inf)  # in the input dtype, as the fast path adds
    flat = box.flatten(2).argmax(dim=2)
    w = x.shape[3]
    return flat // w, flat % w


def _inputs(shape: tuple[int, ...], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=gen),
        torch.randint(0, 2, shape, generator=gen).float(),  # many tied box sums
        torch.zeros(shape),  # every position tied: the first one wins
        -torch.rand(shape, generator=gen),  # all negative: the corners (fewest terms) win
    ]


@pytest.mark.parametrize("shape", SHAPES)
def test_peak_search_matches_argmax_of_padded_box_sums(shape):
    for seed in range(3):
        for x in _inputs(shape, seed):
            row, col = _cdb.peak_positions(x)
            ref_row, ref_col = _reference_peak(x)
            assert torch.equal(row, ref_row) and torch.equal(col, ref_col)


def test_peak_search_counts_nan_as_inf_and_keeps_channels_last_and_bf16():
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    x[0, 0, 4, 5] = float("nan")
    x[1, 2, 0, 0] = float("inf")
    row, col = _cdb.peak_positions(x)
    assert (row[0, 0].item(), col[0, 0].item()) == (3, 4)  # the first box that holds the NaN
    assert (row[1, 2].item(), col[1, 2].item()) == (0, 0)
    for variant in (x.contiguous(memory_format=torch.channels_last), x.bfloat16()):
        got = _cdb.peak_positions(variant)
        ref = _reference_peak(variant)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
