"""The whole-device rule shared by the engine and the device plugin."""

from __future__ import annotations

import pytest

from kubenpu.engine.device_choice import choose_whole


@pytest.mark.parametrize(
    ("groups", "k", "spanned", "want"),
    [
        ([0, 0, 1, 1], 2, (), [0, 1]),  # both groups fit: the lowest of the tightest
        ([0, 1, 1], 2, (), [1, 2]),  # only group 1 holds 2
        ([0, 1, 1], 1, (), [0]),  # best fit keeps group 1 whole
        ([0, 0, 0, 0, 1, 1, 1, 2], 5, (), [0, 1, 2, 3, 4]),  # largest groups first
        ([0, 0, 1, 1, 1], 2, (1,), [2, 3]),  # the spanned group first
        ([0, 0, 1, 1], 3, (1,), [2, 3, 0]),  # then the rest by the same rule
        ([0, 1], 3, (), [0, 1]),  # fewer free than asked: all of them
        ([], 1, (), []),
    ],
)
def test_choose_whole(groups: list[int], k: int, spanned: tuple[int, ...], want: list[int]) -> None:
    assert choose_whole(groups, k, spanned=spanned) == want
