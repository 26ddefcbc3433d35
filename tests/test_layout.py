"""The canonical (A, C, B) view: common layouts are folded without a copy,
and the view addresses exactly the elements of the input."""

import numpy as np
import pytest

from helpers import views


def _check_view(x, kept):
    x3, groups = views.canonical(x, kept)
    assert x3.ndim == 3
    # Reference: move kept axes last, flatten reduced and kept groups.
    reduced = [i for i in range(x.ndim) if i not in kept]
    ref = np.transpose(x, reduced + list(kept)).reshape(
        -1, int(np.prod([x.shape[i] for i in kept]))
    )
    got = np.moveaxis(x3, 1, -1).reshape(-1, x3.shape[1])
    # Same multiset of values per kept slot (the reduced order may differ).
    np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(ref, axis=0))
    return x3


def _arange(shape, order="C"):
    return np.arange(np.prod(shape), dtype=np.float64).reshape(shape, order=order)


@pytest.mark.parametrize(
    "x, kept",
    [
        (_arange((4, 3, 5, 6)), (1,)),  # NCHW batch norm
        (_arange((4, 5, 6, 3)), (3,)),  # NHWC
        (_arange((40, 7)), (1,)),  # 2-D (N, C)
        (_arange((40, 7), order="F"), (1,)),  # Fortran 2-D
        (_arange((40, 7), order="F"), (0,)),
        (_arange((4, 3, 5, 6), order="F"), (1,)),  # Fortran 4-D
        (_arange((8, 6, 10))[::2, :, ::-1], (1,)),  # sliced, reversed
        (_arange((9, 4))[1:, 1:3], (0,)),  # offset view
        (np.broadcast_to(_arange((1, 5)), (7, 5)), (1,)),  # zero stride
        (_arange((4, 3, 5, 6)), ()),  # full reduction
        (_arange((4, 3, 5, 6)), (2, 3)),  # trailing kept axes
    ],
)
def test_common_layouts_fold_without_copy(x, kept):
    x3 = _check_view(x, kept)
    assert np.shares_memory(x3, x), "expected a view, got a copy"


@pytest.mark.parametrize(
    "x, kept",
    [
        (_arange((4, 3, 5, 6), order="F"), (1, 2)),  # kept axes do not collapse in C order
        (_arange((4, 3, 5, 6))[:, :, ::2, :], (1,)),  # three separate reduced runs
        (_arange((6, 4, 5)), (0, 2)),  # kept axes separated by a reduced one
    ],
)
def test_awkward_layouts_are_copied_correctly(x, kept):
    x3 = _check_view(x, kept)
    assert not np.shares_memory(x3, x)


def test_output_written_back_through_groups():
    x = _arange((3, 4, 5), order="F")
    groups = ((0,), (1,), (2,))
    y3 = views.copy_to_groups(x, groups)
    y = np.zeros_like(x)
    views.copy_from_groups(y3, y, groups)
    np.testing.assert_array_equal(y, x)
