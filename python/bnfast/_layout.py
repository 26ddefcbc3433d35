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
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Callable, Optional

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import ArrayLike, NDArray

from ._validate import compute_dtype

F64Array = NDArray[np.float64]

# (a_axes, c_axes, b_axes), each a tuple of axis numbers
Groups = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
# (batch axis, a_axes, c_axes, b_axes): the (N, A, C, B) views of group norm
Groups4 = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
# Either: the view helpers below fold any number of groups into dimensions.
AxisGroups = tuple[tuple[int, ...], ...]


def _collapses(shape: tuple[int, ...], strides: tuple[int, ...], axes: tuple[int, ...]) -> bool:
    """Whether ``axes`` (outer to inner) collapse into one strided dimension."""
    for outer, inner in zip(axes, axes[1:]):
        if strides[outer] != strides[inner] * shape[inner]:
            return False
    return True


def plan_groups(x: np.ndarray, kept: tuple[int, ...]) -> Optional[Groups]:
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


def fold(arr: np.ndarray, groups: AxisGroups) -> Optional[np.ndarray]:
    """The (A, C, B) view of ``arr`` for ``groups`` (one dimension per group:
    (N, A, C, B) for four), or None if it would copy (or if ``arr`` is not
    aligned: the kernels need aligned elements)."""
    if not arr.flags.aligned:
        return None
    shape, strides = arr.shape, arr.strides
    order = tuple(i for g in groups for i in g)
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


def full_order(ndim: int, groups: AxisGroups) -> tuple[int, ...]:
    """An axis permutation putting the groups first (unit axes last)."""
    order = tuple(i for g in groups for i in g)
    return order + tuple(i for i in range(ndim) if i not in order)


def copy_to_groups(arr: np.ndarray, groups: AxisGroups) -> np.ndarray:
    """A contiguous (A, C, B) (or (N, A, C, B)) copy of ``arr`` laid out by ``groups``."""
    perm = full_order(arr.ndim, groups)
    shape3 = tuple(math.prod(arr.shape[i] for i in g) for g in groups)
    contiguous = np.require(np.transpose(arr, perm), requirements=("C", "A"))
    return contiguous.reshape(shape3)


def copy_from_groups(y3: np.ndarray, y: np.ndarray, groups: AxisGroups) -> None:
    """Write a contiguous (A, C, B) array back into ``y`` (inverse of copy_to_groups)."""
    perm = full_order(y.ndim, groups)
    np.copyto(np.transpose(y, perm), y3.reshape([y.shape[i] for i in perm]))


def canonical(x: np.ndarray, kept: tuple[int, ...]) -> tuple[np.ndarray, Groups]:
    """``(x3, groups)``: a no-copy (A, C, B) view of ``x`` when one exists,
    else a contiguous copy (reduced axes first, kept axes last)."""
    groups = plan_groups(x, kept)
    if groups is not None:
        x3 = fold(x, groups)
        if x3 is not None:
            return x3, groups
    groups = _copy_groups(x, kept)
    return copy_to_groups(x, groups), groups


def canonical_groups(x: np.ndarray, kept: tuple[int, ...]) -> Groups:
    """The groups :func:`canonical` would use for ``x``."""
    groups = plan_groups(x, kept)
    if groups is not None and fold(x, groups) is not None:
        return groups
    return _copy_groups(x, kept)


def _copy_groups(x: np.ndarray, kept: tuple[int, ...]) -> Groups:
    reduced = tuple(i for i in range(x.ndim) if i not in kept and x.shape[i] != 1)
    return reduced, tuple(i for i in kept if x.shape[i] != 1), ()


def view_or_copy(arr: np.ndarray, groups: AxisGroups) -> np.ndarray:
    """The (A, C, B) view of an input for ``groups``, or a contiguous copy."""
    arr3 = fold(arr, groups)
    return copy_to_groups(arr, groups) if arr3 is None else arr3


@contextlib.contextmanager
def output_view(
    y: np.ndarray, groups: Groups, shape3: tuple[int, ...], private: bool = False
) -> Iterator[np.ndarray]:
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


def apply_elementwise(
    kernel: Callable[..., Any], x: np.ndarray, y: np.ndarray, groups: Groups, *args: Any
) -> Any:
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


def as_param(values: ArrayLike, dtype: np.dtype[Any]) -> np.ndarray:
    """A contiguous 1-D parameter vector of ``dtype`` for the kernels."""
    return np.ascontiguousarray(np.ravel(values), dtype=dtype)


def as_float64(values: ArrayLike) -> F64Array:
    """A contiguous float64 copy of ``values`` (for the formula kernels)."""
    return np.array(values, dtype=np.float64, order="C")


# -- group and instance norm: statistics per (sample, group) ------------------


def sample_groups(x: np.ndarray, axis: int) -> Optional[Groups4]:
    """The groups of ``x``'s (N, A, C, B) view -- batch axis, reduced axes A,
    the channel axis, reduced axes B -- or None when one sample's spatial
    axes do not fold into two strided runs around the channels."""
    plan = plan_groups(x[0], (axis - 1,))
    if plan is None:
        return None
    a, c, b = (tuple(i + 1 for i in g) for g in plan)
    if not c:  # a unit channel axis (C == 1) still gets its dimension
        c = (axis,)
    return (0,), a, c, b


def sample_view(arr: np.ndarray, groups: Groups4) -> Optional[np.ndarray]:
    """The (N, A, C, B) view of ``arr`` for ``groups``, or None."""
    return fold(arr, groups)


def contiguous_groups(x: np.ndarray, axis: int) -> Groups4:
    """The groups of the contiguous copy :func:`copy_to_groups` makes: batch,
    then every spatial axis as A, then the channels (channels last)."""
    spatial = tuple(i for i in range(1, x.ndim) if i != axis)
    return (0,), spatial, (axis,), ()


def sample_views(x: np.ndarray, axis: int) -> tuple[np.ndarray, Groups4]:
    """``(x4, groups)``: a no-copy (N, A, C, B) view of ``x`` when one exists,
    else a contiguous channels-last copy (N, S, C, 1)."""
    groups = sample_groups(x, axis)
    if groups is not None:
        x4 = sample_view(x, groups)
        if x4 is not None:
            return x4, groups
    groups = contiguous_groups(x, axis)
    return copy_to_groups(x, groups), groups


def spatial_size(x: np.ndarray, axis: int) -> int:
    return math.prod(n for i, n in enumerate(x.shape) if i not in (0, axis))


def group_forward(
    impl: ModuleType,
    x: np.ndarray,
    y: np.ndarray,
    num_groups: int,
    w: Optional[F64Array],
    b: Optional[F64Array],
    eps: float,
    axis: int,
    zero_var_rstd: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[F64Array], Optional[F64Array]]:
    """Group (or, one channel per group, instance) normalization of x into y
    with the statistics of each (sample, group); returns ``(y, mean, rstd)``
    (statistics in x's compute dtype: float32 for half-precision x) and the
    float64 ``(mean, m2)`` (None for an empty x).

    ``zero_var_rstd``: rstd = 0 where variance and eps are both 0 (instance
    norm, which PyTorch runs through its batch-norm kernel), instead of inf."""
    n, c = x.shape[0], x.shape[axis]
    # Parameters and returned statistics: float32 for float16/bfloat16 x.
    dtype = compute_dtype(x.dtype)
    count = spatial_size(x, axis) * (c // num_groups)
    if x.size == 0:  # as PyTorch: an empty result (statistics undefined: NaN)
        undefined = np.full((n, num_groups), np.nan, dtype=dtype)
        return y, undefined, undefined.copy(), None, None
    x4, groups4 = sample_views(x, axis)
    if y is not x and np.may_share_memory(x4, y):
        x4 = x4.copy()  # y overlaps x without being it: read a private copy
    y4 = fold(y, groups4)
    y_work = np.empty(x4.shape, dtype=y.dtype) if y4 is None else y4
    # One kernel call: per (sample, group) the moments, rstd and the map
    # (fused while a group or sample is in cache).
    mean, m2, done = impl.group_norm_forward(x4, y_work, num_groups, w, b, eps, zero_var_rstd)
    rstd = impl.invstd(m2.ravel(), count, eps).reshape(m2.shape)
    if zero_var_rstd and eps == 0:
        rstd[m2 == 0] = 0.0
    if not done.all():
        # A scale beyond dtype's normal range (eps=0 and subnormal float32
        # data): those groups mapped in float64, from x4 (unwritten there).
        _affine_float64(x4, y_work, done, mean, rstd, w, b)
    if y4 is None:
        copy_from_groups(y_work, y, groups4)
    with np.errstate(over="ignore"):  # (rstd itself may be beyond dtype)
        return y, mean.astype(dtype), rstd.astype(dtype), mean, m2


def _affine_float64(
    x4: np.ndarray,
    y4: np.ndarray,
    done: np.ndarray,
    mean: F64Array,
    rstd: F64Array,
    w: Optional[F64Array],
    b: Optional[F64Array],
) -> None:
    """y = (x - mean) * (rstd * w) + b in float64, rounded once to y's dtype,
    for the (sample, group) blocks of the (N, A, C, B) views not ``done``."""
    per = x4.shape[2] // done.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        for i, g in zip(*np.nonzero(~done)):
            ch = slice(g * per, (g + 1) * per)
            scale = rstd[i, g] * (np.ones(per) if w is None else w[ch])
            shift = np.zeros(per) if b is None else b[ch]
            xi = x4[i, :, ch, :].astype(np.float64)
            y4[i, :, ch, :] = (xi - mean[i, g]) * scale[:, None] + shift[:, None]


# -- group norm's backward: (N, A, C, B) views of x, dy and dx ------------------


def sample_grad_views(
    x: np.ndarray, dy: np.ndarray, dx: np.ndarray, axis: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[], None]]:
    """``(xv, dyv, dxv, finish)``: (N, A, C, B) views of x, dy and dx for the
    group-norm backward kernel, the groups chosen by x. Inputs that cannot
    be viewed so are copied; an output that cannot be viewed, or that
    overlaps x, or dy other than as dy itself, goes through a temporary
    written back by the returned ``finish()``."""
    x4, groups = sample_views(x, axis)
    dy4 = view_or_copy(dy, groups)
    private = np.may_share_memory(dx, x) or (dx is not dy and np.may_share_memory(dx, dy))
    dx4 = None if private else fold(dx, groups)
    work = np.empty(x4.shape, dtype=dx.dtype) if dx4 is None else dx4

    def finish() -> None:
        if dx4 is None:
            copy_from_groups(work, dx, groups)

    return x4, dy4, work, finish
