"""The canonical (A, C, B) view.

Every op reduces over some axes and keeps others. ``plan_groups`` sorts an
array's non-unit axes into three groups -- reduced axes A, kept axes C,
reduced axes B -- such that each group collapses into one strided dimension
without copying. The kernels then see a 3-D strided view and pick a fast
path from its strides (rows along B when B is unit-stride, rows along C when
C is, plain loops otherwise). Only when no such grouping exists (kept axes
that do not collapse, or reduced axes in more than two separate runs) is
the input copied once into a contiguous (R, K, 1) layout.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

Groups = tuple  # (a_axes, c_axes, b_axes), each a tuple of axis numbers


def _collapses(shape, strides, axes) -> bool:
    """Whether ``axes`` (outer to inner) collapse into one strided dimension."""
    for outer, inner in zip(axes, axes[1:]):
        if strides[outer] != strides[inner] * shape[inner]:
            return False
    return True


def plan_groups(x: np.ndarray, kept: tuple) -> Groups | None:
    """Group ``x``'s non-unit axes into (A, C, B) without a copy, or None."""
    shape, strides = x.shape, x.strides
    c_axes = tuple(i for i in kept if shape[i] != 1)
    if not _collapses(shape, strides, c_axes):
        return None
    reduced = [i for i in range(x.ndim) if i not in kept and shape[i] != 1]
    # The order of reduced axes is free: sort by stride (largest first) and
    # cut into runs that collapse.
    reduced.sort(key=lambda i: -abs(strides[i]))
    runs: list = []
    for i in reduced:
        if runs and strides[runs[-1][-1]] == strides[i] * shape[i]:
            runs[-1].append(i)
        else:
            runs.append([i])
    if len(runs) > 2:
        return None
    if len(runs) == 2:
        return tuple(runs[0]), c_axes, tuple(runs[1])
    if len(runs) == 1:
        run = tuple(runs[0])
        c_stride = abs(strides[c_axes[-1]]) if c_axes else 0
        # A unit-stride reduced run goes to B (rows along B); otherwise A.
        if abs(strides[run[-1]]) < c_stride or not c_axes:
            return (), c_axes, run
        return run, c_axes, ()
    return (), c_axes, ()


def fold(arr: np.ndarray, groups: Groups) -> np.ndarray | None:
    """The (A, C, B) view of ``arr`` for ``groups``, or None if it would copy
    (or if ``arr`` is not aligned: the kernels need aligned elements)."""
    if not arr.flags.aligned:
        return None
    shape, strides = arr.shape, arr.strides
    order = groups[0] + groups[1] + groups[2]
    dims = []
    for axes in groups:
        if not axes:
            dims.append((1, 0))
            continue
        if not _collapses(shape, strides, axes):
            return None
        dims.append((math.prod(shape[i] for i in axes), strides[axes[-1]]))
    shape3 = tuple(d[0] for d in dims)
    if arr.flags.c_contiguous and list(order) == sorted(order):
        return arr.reshape(shape3)  # fast path: no view gymnastics
    strides3 = tuple(d[1] for d in dims)
    if any(s % arr.itemsize for s in strides3):
        return None
    return as_strided(arr, shape3, strides3, writeable=arr.flags.writeable)


def full_order(ndim: int, groups: Groups) -> tuple:
    """An axis permutation putting the groups first (unit axes last)."""
    order = groups[0] + groups[1] + groups[2]
    return order + tuple(i for i in range(ndim) if i not in order)


def copy_to_groups(arr: np.ndarray, groups: Groups) -> np.ndarray:
    """A contiguous (A, C, B) copy of ``arr`` laid out by ``groups``."""
    perm = full_order(arr.ndim, groups)
    shape3 = tuple(math.prod(arr.shape[i] for i in g) for g in groups)
    contiguous = np.require(np.transpose(arr, perm), requirements=("C", "A"))
    return contiguous.reshape(shape3)


def copy_from_groups(y3: np.ndarray, y: np.ndarray, groups: Groups) -> None:
    """Write a contiguous (A, C, B) array back into ``y`` (inverse of copy_to_groups)."""
    perm = full_order(y.ndim, groups)
    np.copyto(np.transpose(y, perm), y3.reshape([y.shape[i] for i in perm]))


def canonical(x: np.ndarray, kept: tuple) -> tuple:
    """``(x3, groups)``: a no-copy (A, C, B) view of ``x`` when one exists,
    else a contiguous copy (reduced axes first, kept axes last)."""
    groups = plan_groups(x, kept)
    if groups is not None:
        x3 = fold(x, groups)
        if x3 is not None:
            return x3, groups
    groups = _copy_groups(x, kept)
    return copy_to_groups(x, groups), groups


def canonical_groups(x: np.ndarray, kept: tuple) -> Groups:
    """The groups :func:`canonical` would use for ``x``."""
    groups = plan_groups(x, kept)
    if groups is not None and fold(x, groups) is not None:
        return groups
    return _copy_groups(x, kept)


def _copy_groups(x: np.ndarray, kept: tuple) -> Groups:
    reduced = tuple(i for i in range(x.ndim) if i not in kept and x.shape[i] != 1)
    return reduced, tuple(i for i in kept if x.shape[i] != 1), ()


def view_or_copy(arr: np.ndarray, groups: Groups) -> np.ndarray:
    """The (A, C, B) view of an input for ``groups``, or a contiguous copy."""
    arr3 = fold(arr, groups)
    return copy_to_groups(arr, groups) if arr3 is None else arr3


@contextlib.contextmanager
def output_view(y: np.ndarray, groups: Groups, shape3: tuple, private: bool = False):
    """The (A, C, B) view of an output for ``groups``, or (when no view
    exists, or ``private`` because y overlaps an input) a temporary that is
    copied into ``y`` when the block ends."""
    y3 = None if private else fold(y, groups)
    if y3 is not None:
        yield y3
        return
    work = np.empty(shape3, dtype=y.dtype)
    yield work
    copy_from_groups(work, y, groups)


def apply_elementwise(kernel, x: np.ndarray, y: np.ndarray, groups: Groups, *args):
    """Run ``kernel(x3, y3, *args)`` on the (A, C, B) views of ``x`` and ``y``
    for ``groups``, going through contiguous temporaries where a view is
    impossible, and reading a private copy of ``x`` if ``y`` overlaps it
    without being it. Returns what the kernel returns."""
    x3 = fold(x, groups)
    if x3 is None:
        x3 = copy_to_groups(x, groups)
    elif y is not x and np.may_share_memory(x, y):
        x3 = x3.copy()
    with output_view(y, groups, x3.shape) as y3:
        return kernel(x3, y3, *args)


def as_param(values, dtype: np.dtype) -> np.ndarray:
    """A contiguous 1-D parameter vector of ``dtype`` for the kernels."""
    return np.ascontiguousarray(np.ravel(values), dtype=dtype)


def as_float64(values) -> np.ndarray:
    """A contiguous float64 copy of ``values`` (for the formula kernels)."""
    return np.array(values, dtype=np.float64, order="C")

