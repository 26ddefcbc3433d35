"""The canonical (A, C, B) view: common layouts are folded without a copy,
and the view addresses exactly the elements of the input."""

import numpy as np
import pytest

from helpers import runtime, views


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


# -- group and instance norm: the (N, A, C, B) views of the group-norm kernels


def _check_sample_view(x, axis):
    x4, groups = views.sample_views(x, axis)
    assert x4.ndim == 4 and x4.shape[0] == x.shape[0] and x4.shape[2] == x.shape[axis]
    n, c = x.shape[0], x.shape[axis]
    ref = np.moveaxis(x, axis, -1).reshape(n, -1, c)
    got = np.moveaxis(x4, 2, -1).reshape(n, -1, c)
    # Same multiset of values per (sample, channel).
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(ref, axis=1))
    return x4, groups


@pytest.mark.parametrize(
    "x, axis",
    [
        (_arange((4, 5, 6, 3)), 3),  # NHWC
        (np.moveaxis(_arange((4, 5, 6, 3)), 3, 1), 1),  # NCHW shape, channels-last memory
        (_arange((8, 3, 5, 6))[::2], 1),  # NCHW, batch sliced
        (_arange((4, 5, 3, 6)), 2),  # channels in the middle: A and B
        (_arange((4, 5, 6, 3))[:, :, ::2], 3),  # a strided spatial axis
        (_arange((4, 5, 6, 3))[:, ::2, ::3], 3),  # spatial axes in two runs (A and B)
        (_arange((4, 1, 1, 3)), 3),  # unit spatial axes
        (_arange((4, 5, 6, 1)), 3),  # one channel
        (_arange((1, 5, 6, 3)), 3),  # one sample
    ],
)
def test_sample_views_fold_without_copy(x, axis):
    x4, _ = _check_sample_view(x, axis)
    assert np.shares_memory(x4, x), "expected a view, got a copy"


@pytest.mark.parametrize(
    "x, axis",
    [
        (_arange((2, 6, 8, 6, 3))[:, ::2, ::2, ::2], 4),  # three separate spatial runs
        (np.transpose(_arange((2, 6, 8, 6, 3))[:, ::2, ::2, ::2], (0, 4, 1, 2, 3)), 1),
    ],
)
def test_sample_views_copy_awkward_layouts(x, axis):
    x4, groups = _check_sample_view(x, axis)
    assert not np.shares_memory(x4, x)
    y = np.zeros_like(x)
    views.copy_from_groups(x4, y, groups)  # the copy's groups write it back
    np.testing.assert_array_equal(y, x)


class _CountingImpl:
    """A kernel module that counts the calls made through it."""

    def __init__(self, impl):
        self.impl, self.calls = impl, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.impl, name)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_group_forward_is_one_kernel_call(backend, n):
    """No per-sample loop: one call of the fused group-norm kernel for any
    batch size, channels last or first (and the invstd of the returned
    statistics)."""
    x = np.random.default_rng(0).standard_normal((n, 4, 5, 6))
    for arr, axis in ((np.ascontiguousarray(np.moveaxis(x, 1, -1)), 3), (x, 1)):
        counting = _CountingImpl(runtime.impl())
        y = np.empty_like(arr)
        _, mean, _, _, _ = views.group_forward(counting, arr, y, 2, None, None, 1e-5, axis, False)
        assert counting.calls == ["group_norm_forward", "invstd"] and mean.shape == (n, 2)
