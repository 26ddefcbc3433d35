"""Dask arrays through bnfast's public API.

Imported only when a ``dask.array.Array`` reaches a public function (see
:mod:`bnfast._dispatch`); importing bnfast never imports dask.

Three patterns, each on the native kernels one block at a time:

* Statistics (``mean_var``, ``moments``, ``Standardizer.fit``): every block
  gives its :class:`~bnfast.Moments` (one native call), packed as float64
  ``(count, mean, m2)`` on a trailing axis of size 3; ``dask.array.reduction``
  merges them in a tree with Chan's exact merge (:meth:`Moments.merge`, the
  one home of the formula). Only the small packed moments travel.
* Normalization with global statistics (training ``batch_norm`` =
  synchronized batch norm, ``Standardizer.transform``): the global statistics
  are reduced first, then applied block by block with the same native affine
  kernel as the NumPy path, the per-channel parameters sliced per block.
* Row-wise ops (layer, RMS, group and instance norm and their backwards):
  the axes a row's statistics span are rechunked to be whole (the other axes
  are rechunked to ``"auto"`` so that blocks stay near dask's chunk size),
  then the NumPy function runs per block.

Inside a task, native calls use :func:`task_threads` threads, so that a
worker's dask threads do not oversubscribe its cores.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional, TypeVar

import dask
import dask.array as da
import numpy as np

from . import _layout, _runtime, _scan
from ._batch_norm import check_args, check_running_pair, update_running_pair
from ._config import get_num_threads, threads
from ._diagnose import DataReport, _integer_valued, _scan_chunk, _Totals, report_from
from ._group_norm import (
    group_norm as _np_group_norm,
)
from ._group_norm import (
    group_norm_backward as _np_group_norm_backward,
)
from ._group_norm import (
    instance_norm as _np_instance_norm,
)
from ._group_norm import (
    instance_norm_backward as _np_instance_norm_backward,
)
from ._layer_norm import _norm_axes
from ._layer_norm import layer_norm as _np_layer_norm
from ._layer_norm import layer_norm_backward as _np_layer_norm_backward
from ._layer_norm import rms_norm as _np_rms_norm
from ._layer_norm import rms_norm_backward as _np_rms_norm_backward
from ._layout import as_float64, as_param
from ._moments import Moments, _work_dtype
from ._moments import moments as _np_moments
from ._standardize import _converts_exactly
from ._standardize_rules import check_output_dtype, derived_attributes, result_dtype
from ._validate import (
    as_flag,
    channel_axis,
    channel_vector,
    check_axis,
    check_batched,
    check_ddof,
    check_float_dtype,
    check_momentum,
    check_real_dtype,
    compute_dtype,
    normalize_axes,
)

_T = TypeVar("_T")
# dask.array.Array (dask's annotations are partial: checked at run time instead).
DaskArray = Any

# ---------------------------------------------------------------------------
# Threads inside tasks


def _concurrent_tasks() -> int:
    """How many dask tasks may run at once in this process: the worker's
    thread count on a distributed worker, the local pool's size on a
    thread of the threaded scheduler, 1 on the main thread (synchronous)."""
    distributed = sys.modules.get("distributed")  # a worker has imported it
    if distributed is not None:
        try:
            return max(1, int(distributed.get_worker().state.nthreads))
        except (ValueError, AttributeError):  # not on a worker
            pass
    if threading.current_thread() is threading.main_thread():
        return 1
    from dask.system import CPU_COUNT

    return max(1, int(dask.config.get("num_workers", None) or CPU_COUNT))


def task_threads() -> int:
    """The thread count of bnfast's native calls inside one dask task.

    The process setting (:func:`bnfast.get_num_threads`: ``BNFAST_NUM_THREADS``
    > ``OMP_NUM_THREADS`` > the usable cores; distributed's nanny sets
    ``OMP_NUM_THREADS=1`` in its worker processes) divided among the tasks
    that may run at once in this process, at least 1."""
    return max(1, get_num_threads() // _concurrent_tasks())


def _in_task(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Run a block function under ``threads(task_threads())``."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> _T:
        with threads(task_threads()):
            return fn(*args, **kwargs)

    return run


# ---------------------------------------------------------------------------
# Computing the small results (moments, fit, diagnose, running statistics)

_COMPUTE: contextvars.ContextVar[Optional[Callable[..., Sequence[Any]]]] = contextvars.ContextVar(
    "bnfast_dask_compute", default=None
)


def _compute(*collections: Any) -> list[Any]:
    """``dask.compute`` (or the function of an enclosing :func:`compute_with`)."""
    fn = _COMPUTE.get()
    return list((fn or dask.compute)(*collections))


@contextlib.contextmanager
def compute_with(fn: Callable[..., Sequence[Any]]) -> Iterator[None]:
    """Compute the small results inside the block with ``fn`` instead of
    ``dask.compute`` (the command line: a distributed client, a progress
    display)."""
    token = _COMPUTE.set(fn)
    try:
        yield
    finally:
        _COMPUTE.reset(token)


# ---------------------------------------------------------------------------
# Checks shared by the entry points


def _check_known(x: DaskArray, name: str = "x") -> None:
    if any(math.isnan(n) for n in x.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {x.shape}); call "
            f"{name}.compute_chunk_sizes() first"
        )


def _no_out(out: object, func: str) -> None:
    if out is not None:
        raise TypeError(
            f"{func}: out= is not supported for dask arrays (the result is a lazy dask "
            f"array); store the result with dask.array.store or da.to_zarr instead"
        )


def _meta(ndim: int, dtype: Any) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dtype)


# ---------------------------------------------------------------------------
# Moments: per block, then a tree of Chan merges


def _pack(m: Moments) -> np.ndarray:
    """Moments as one float64 array with a trailing (count, mean, m2) axis
    (counts are exact in float64 up to 2**53)."""
    return np.stack([m.count.astype(np.float64), m.mean, m.m2], axis=-1)


def _unpack(p: np.ndarray) -> Moments:
    return Moments(p[..., 0], p[..., 1], p[..., 2])


def _keepdims_shape(shape: Sequence[int], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


@_in_task
def _moments_block(block: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return _pack(_np_moments(block, axis=axes, keepdims=True))


@_in_task
def _fit_block(
    block: np.ndarray,
    weights: Optional[np.ndarray] = None,
    *,
    axes: tuple[int, ...],
    nan_policy: str,
) -> np.ndarray:
    w = None if weights is None else _scan.check_weights(weights, block.shape[axes[0]])
    m = _scan.chunk_moments(block, axes, w, nan_policy)
    return _pack(m).reshape(_keepdims_shape(block.shape, axes) + (3,))


def _identity(a: np.ndarray, axis: Any = None, keepdims: bool = True, **_: Any) -> np.ndarray:
    return a


def _merge_packed(
    a: np.ndarray, axis: tuple[int, ...], keepdims: bool = False, computing_meta: bool = False
) -> np.ndarray:
    """Merge the packed moments of ``a`` along ``axis`` (left to right in C
    order of those axes) with :meth:`Moments.merge`."""
    if computing_meta or a.size == 0:
        shape = tuple(1 if i in axis else n for i, n in enumerate(a.shape))
        out = np.zeros(shape)
        return (
            out if keepdims else out.reshape(tuple(n for i, n in enumerate(shape) if i not in axis))
        )
    k = len(axis)
    moved = np.moveaxis(a, axis, tuple(range(k)))
    parts = moved.reshape((-1,) + moved.shape[k:])
    total = _pack(Moments.combine(_unpack(p) for p in parts))
    return np.expand_dims(total, axis) if keepdims else total


def _tree_moments(
    x: DaskArray,
    axes: tuple[int, ...],
    keepdims: bool,
    block_fn: Callable[..., np.ndarray] = _moments_block,
    weights: Optional[DaskArray] = None,
    split_every: Optional[int] = None,
    **kwargs: Any,
) -> DaskArray:
    """The merged moments of ``x`` along ``axes``, packed: a float64 dask
    array of the kept shape (size 1 on ``axes`` with ``keepdims``) plus a
    trailing axis (count, mean, m2)."""
    nd = x.ndim
    ind = tuple(range(nd))
    args: list[Any] = [x, ind]
    if weights is not None:
        args += [weights, (axes[0],)]
    packed = da.blockwise(
        block_fn,
        ind + (nd,),
        *args,
        new_axes={nd: 3},
        adjust_chunks={a: 1 for a in axes},
        dtype=np.float64,
        meta=_meta(nd + 1, np.float64),
        axes=axes,
        **kwargs,
    )
    out_nd = nd + 1 - (0 if keepdims else len(axes))
    return da.reduction(
        packed,
        chunk=_identity,
        combine=_merge_packed,
        aggregate=_merge_packed,
        axis=axes,
        keepdims=keepdims,
        dtype=np.float64,
        split_every=split_every,
        concatenate=True,
        meta=_meta(out_nd, np.float64),
        name="bnfast-moments",
    )


def lazy_moments(x: DaskArray, axes: tuple[int, ...]) -> DaskArray:
    """The packed (count, mean, m2) of ``x`` along ``axes``, lazy (for the
    xarray accessor)."""
    _check_known(x)
    check_real_dtype(x, "x")
    return _tree_moments(x, axes, False)


def _packed_mean(p: np.ndarray, dtype: Any) -> np.ndarray:
    return p[..., 1].astype(dtype)


def _packed_var(p: np.ndarray, dof: float, dtype: Any) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p[..., 2] / dof).astype(dtype)


def mean_var(
    x: DaskArray, axis: Any = None, *, ddof: float = 0, keepdims: bool = False
) -> tuple[DaskArray, DaskArray]:
    ddof = check_ddof(ddof)
    check_real_dtype(x, "x")
    _check_known(x)
    axes = normalize_axes(axis, x.ndim)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    count = math.prod(x.shape[i] for i in axes)
    result_dtype = _work_dtype(x.dtype)[1]
    if count == 0:
        raise ValueError(
            f"mean_var: cannot compute a mean or variance over zero elements "
            f"(array of shape {x.shape}, axis={axis!r})"
        )
    shape = _keepdims_shape(x.shape, axes) if keepdims else tuple(x.shape[i] for i in kept)
    if math.prod(x.shape[i] for i in kept) == 0:
        empty = da.empty(shape, dtype=result_dtype)
        return empty, empty.copy()
    dof = count - ddof
    if dof <= 0:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=3)
        dof = 0
    packed = _tree_moments(x, axes, keepdims)
    nd = packed.ndim - 1
    mean = packed.map_blocks(
        _packed_mean, result_dtype, drop_axis=nd, dtype=result_dtype, meta=_meta(nd, result_dtype)
    )
    var = packed.map_blocks(
        _packed_var,
        dof,
        result_dtype,
        drop_axis=nd,
        dtype=result_dtype,
        meta=_meta(nd, result_dtype),
    )
    return mean, var


def moments(x: DaskArray, axis: Any = None, *, keepdims: bool = False) -> Moments:
    check_real_dtype(x, "x")
    _check_known(x)
    axes = normalize_axes(axis, x.ndim)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    count = math.prod(x.shape[i] for i in axes)
    shape = _keepdims_shape(x.shape, axes) if keepdims else tuple(x.shape[i] for i in kept)
    counts = np.full(shape, count, dtype=np.int64)
    if count == 0 or math.prod(shape) == 0:
        zeros = np.zeros(shape)
        return Moments(counts, zeros, zeros)
    packed = np.asarray(_compute(_tree_moments(x, axes, keepdims))[0])
    return Moments(counts, packed[..., 1], packed[..., 2])


# ---------------------------------------------------------------------------
# Standardizer


def _weights_for(sample_weight: Any, x: DaskArray, axes: tuple[int, ...]) -> Optional[DaskArray]:
    if sample_weight is None:
        return None
    n = x.shape[axes[0]]
    if isinstance(sample_weight, da.Array):
        if sample_weight.ndim != 1 or sample_weight.shape[0] != n:
            raise ValueError(
                f"sample_weight should have shape ({n},) (one weight per sample), "
                f"got {sample_weight.shape}"
            )
        # Values (finite, non-negative) are checked block by block.
        return sample_weight.rechunk((x.chunks[axes[0]],))
    w = _scan.check_weights(sample_weight, n)
    return da.from_array(w, chunks=(x.chunks[axes[0]],))


def standardizer_fit(st: Any, X: DaskArray, sample_weight: Any, reset: bool) -> Any:
    """``Standardizer.fit`` (``reset``) or ``partial_fit`` of a dask array:
    the moments of every block merged in a tree, computed, then merged into
    the estimator as one chunk."""
    return fit_with(st, X, sample_weight, reset)[0]


def fit_with(
    st: Any, X: DaskArray, sample_weight: Any, reset: bool, extra: Sequence[Any] = ()
) -> tuple[Any, list[Any]]:
    """:func:`standardizer_fit`, computing the dask collections ``extra`` in
    the same pass over ``X`` (the command line's min/max/NaN counts);
    returns ``(st, their values)``."""
    axis = st._checked_params()
    check_real_dtype(X, "X")
    _check_known(X, "X")
    if X.ndim == 0:
        raise ValueError("Standardizer needs an array with at least one dimension, got a scalar")
    if reset:
        with st._fit_lock():
            st._reset()
        if X.size == 0:
            raise ValueError(f"Standardizer.fit: X of shape {X.shape} holds no values")
    with st._fit_lock():
        fitted = not reset and hasattr(st, "moments_")
        axes = st._axes_for(X, "partial_fit") if fitted else normalize_axes(axis, X.ndim)
    if not axes:
        raise ValueError("axis=() reduces over nothing; name the sample axes to reduce")
    feature_shape = tuple(X.shape[i] for i in _scan.kept_axes(X.ndim, axes))
    if fitted and feature_shape != st.feature_shape_:
        raise ValueError(
            f"X has features of shape {feature_shape}, but this Standardizer was "
            f"fitted on features of shape {st.feature_shape_}"
        )
    weights = _weights_for(sample_weight, X, axes)
    packed = _tree_moments(X, axes, False, _fit_block, weights=weights, nan_policy=st.nan_policy)
    p, *extra_values = _compute(packed, *extra)
    p = np.asarray(p)
    count = p[..., 0] if weights is not None else p[..., 0].astype(np.int64)
    if not fitted and not np.any(count > 0):
        raise ValueError(
            f"Standardizer: the first chunk has zero weight for every sample (X of shape "
            f"{X.shape}); nothing to compute statistics from"
        )
    chunk = Moments(count, p[..., 1], p[..., 2])
    with st._fit_lock():
        if not reset and hasattr(st, "moments_"):
            chunk = st.moments_.merge(chunk)
        derived, undefined = derived_attributes(chunk, st.ddof, st.with_mean, st.with_std)
        st._set_fitted(chunk, X.ndim, axes, feature_shape, derived)
    if undefined:
        warnings.warn(
            f"Standardizer: {undefined} feature(s) have no more values than "
            f"ddof={st.ddof}; their variance is NaN and their scale 1",
            RuntimeWarning,
            stacklevel=4,
        )
    return st, extra_values


@_in_task
def _affine_block(
    block: np.ndarray,
    hi: Optional[np.ndarray],
    lo: Optional[np.ndarray],
    scale: np.ndarray,
    shift: np.ndarray,
    *,
    kept: tuple[int, ...],
    result: Any,
) -> np.ndarray:
    """``y = ((x - hi) - lo) * scale + shift`` per kept-axes slot, in a new
    array of dtype ``result`` (a block is never written: it may be a
    persisted input)."""
    x = block if block.dtype == result else block.astype(result)
    y = np.empty(x.shape, dtype=result)
    if x.size:
        flat = [None if p is None else p.reshape(-1) for p in (hi, lo, scale, shift)]
        groups = _layout.canonical_groups(x, kept)
        _layout.apply_elementwise(_runtime.impl().affine, x, y, groups, *flat)
    return y


def _apply_per_slot(
    x: DaskArray,
    kept: tuple[int, ...],
    dtype: Any,
    hi: Optional[np.ndarray],
    lo: Optional[np.ndarray],
    scale: np.ndarray,
    shift: np.ndarray,
) -> DaskArray:
    """Blockwise affine map with parameters of the kept axes' shape, each
    block getting its slice."""
    ind = tuple(range(x.ndim))
    p_ind = tuple(kept)
    p_chunks = tuple(x.chunks[i] for i in kept)
    args: list[Any] = [x, ind]
    for p in (hi, lo, scale, shift):
        if p is None:
            args += [None, None]
        else:
            args += [
                da.from_array(p.reshape(tuple(x.shape[i] for i in kept)), chunks=p_chunks),
                p_ind,
            ]
    return da.blockwise(
        _affine_block, ind, *args, kept=kept, result=dtype, dtype=dtype, meta=_meta(x.ndim, dtype)
    )


def _check_transform_input(
    st: Any, X: DaskArray, method: str
) -> tuple[tuple[int, ...], np.dtype[Any], np.dtype[Any]]:
    """The kept axes, the dtype to compute in and the output dtype
    (``Standardizer(dtype=...)``, as the NumPy path: a conversion that is not
    exact computes in the default dtype and rounds once into the output)."""
    st._check_fitted(method)
    check_real_dtype(X, "X")
    _check_known(X, "X")
    axes = st._axes_for(X, method)
    kept = _scan.kept_axes(X.ndim, axes)
    feature_shape = tuple(X.shape[i] for i in kept)
    if feature_shape != st.feature_shape_:
        raise ValueError(
            f"X has {math.prod(feature_shape)} features (shape {feature_shape}), but "
            f"{type(st).__name__} was fitted with {st.n_features_in_} features "
            f"(shape {st.feature_shape_})"
        )
    requested = check_output_dtype(st.dtype)
    work = result_dtype(X.dtype)
    dtype = work if requested is None else requested
    if dtype != work and not _converts_exactly(np.dtype(X.dtype), dtype):
        return kept, compute_dtype(work), dtype
    return kept, dtype, dtype


def _transform_params(
    mean_: Any, scale_: Any, with_mean: bool, with_std: bool, dtype: Any
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], np.ndarray, np.ndarray]:
    """``(hi, lo, scale, shift)`` of ``transform`` (as ``Standardizer.transform``
    builds them): ``((x - hi) - lo) * (1 / scale_) + 0``, flat."""
    inv = 1.0 / np.asarray(scale_) if with_std else np.ones(np.shape(mean_))
    hi = lo = None
    if with_mean:
        hi, lo = _runtime.impl().split_center(
            np.asarray(mean_, dtype=np.float64).reshape(-1), dtype
        )
    zero = np.zeros(inv.size, dtype=dtype)
    return hi, lo, as_param(inv.reshape(-1), dtype), zero


def standardizer_transform(st: Any, X: DaskArray, out: Any) -> DaskArray:
    _no_out(out, "Standardizer.transform")
    kept, work, dtype = _check_transform_input(st, X, "transform")
    if not (st.with_mean or st.with_std):
        return X.astype(dtype)
    mean_, scale_ = st._fitted_pair()
    # Parameters in the compute dtype: float32 for half-precision blocks.
    params = _transform_params(mean_, scale_, st.with_mean, st.with_std, compute_dtype(work))
    return _apply_per_slot(X, kept, work, *params).astype(dtype)


@_in_task
def _standardize_block(
    block: np.ndarray,
    packed: np.ndarray,
    *,
    kept: tuple[int, ...],
    ddof: float,
    with_mean: bool,
    with_std: bool,
    result: Any,
) -> np.ndarray:
    derived, _ = derived_attributes(_unpack(packed), int(ddof), with_mean, with_std)
    params = _transform_params(derived["mean_"], derived["scale_"], with_mean, with_std, result)
    return _affine_block(block, *params, kept=kept, result=result)


def standardize(
    x: DaskArray,
    axes: tuple[int, ...],
    *,
    ddof: int = 0,
    nan_policy: str = "omit",
    with_mean: bool = True,
    with_std: bool = True,
) -> DaskArray:
    """``Standardizer(axis=axes, ...).fit_transform(x)`` with nothing
    computed: the statistics are a lazy tree reduction that each output
    block reads its slice of (used by the xarray accessor)."""
    _check_known(x)
    check_real_dtype(x, "x")
    dtype = result_dtype(x.dtype)
    if not (with_mean or with_std):
        return x.astype(dtype)
    packed = _tree_moments(x, axes, False, _fit_block, nan_policy=nan_policy)
    kept = _scan.kept_axes(x.ndim, axes)
    ind = tuple(range(x.ndim))
    return da.blockwise(
        _standardize_block,
        ind,
        x,
        ind,
        packed,
        kept + (x.ndim,),
        kept=kept,
        ddof=ddof,
        with_mean=with_mean,
        with_std=with_std,
        result=dtype,
        concatenate=True,
        dtype=dtype,
        meta=_meta(x.ndim, dtype),
    )


def standardizer_inverse_transform(st: Any, X: DaskArray, out: Any) -> DaskArray:
    _no_out(out, "Standardizer.inverse_transform")
    kept, work, dtype = _check_transform_input(st, X, "inverse_transform")
    if not (st.with_mean or st.with_std):
        return X.astype(dtype)
    mean_, scale_ = st._fitted_pair()
    c = st.n_features_in_
    scale = np.asarray(scale_).reshape(-1) if st.with_std else np.ones(c)
    shift = np.asarray(mean_).reshape(-1) if st.with_mean else np.zeros(c)
    pdtype = compute_dtype(work)  # float32 for half-precision blocks
    return _apply_per_slot(
        X, kept, work, None, None, as_param(scale, pdtype), as_param(shift, pdtype)
    ).astype(dtype)


# ---------------------------------------------------------------------------
# diagnose: per-block totals, merged in a tree of delayed merges


@_in_task
def _diagnose_block(block: np.ndarray, axes: tuple[int, ...]) -> tuple[_Totals, bool, int]:
    integer = block.dtype.kind != "f" or _integer_valued(block, axes)
    return _scan_chunk(block, axes), integer, math.prod(block.shape[i] for i in axes)


def _merge_diagnose(parts: list[tuple[_Totals, bool, int]]) -> tuple[_Totals, bool, int]:
    total, integer, n = parts[0]
    for t, i, k in parts[1:]:
        total, integer, n = total.merge(t), integer and i, n + k
    return total, integer, n


def _whole(x: DaskArray, axes: Sequence[int]) -> DaskArray:
    """``x`` rechunked so that ``axes`` are whole in every block (the other
    axes ``"auto"``, to keep blocks near dask's chunk size); unchanged when
    they already are."""
    if all(len(x.chunks[i]) == 1 for i in axes):
        return x
    spec = {i: (-1 if i in axes else "auto") for i in range(x.ndim)}
    return x.rechunk(spec)


def diagnose(X: DaskArray, axis: Any = 0, split_every: int = 8) -> DataReport:
    check_real_dtype(X, "X")
    _check_known(X, "X")
    if X.ndim == 0:
        raise ValueError("diagnose needs an array with at least one dimension, got a scalar")
    axes = normalize_axes(axis, X.ndim)
    if not axes:
        raise ValueError("axis=() reduces over nothing; name the sample axes")
    kept = _scan.kept_axes(X.ndim, axes)
    xw = _whole(X, kept)
    level = [dask.delayed(_diagnose_block)(b, axes) for b in xw.to_delayed().ravel()]
    while len(level) > 1:
        level = [
            dask.delayed(_merge_diagnose)(level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    totals, integer, n_samples = _compute(level[0])[0]
    return report_from(totals, n_samples, X.dtype, integer)


# ---------------------------------------------------------------------------
# Batch norm: synchronized (global statistics, per-block output)


def _channel_params(v: Any, name: str, c: int) -> Optional[np.ndarray]:
    return None if v is None else as_float64(channel_vector(v, name, c))


def batch_norm(
    x: DaskArray,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    *,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Any = None,
    return_stats: bool = False,
) -> Any:
    _no_out(out, "batch_norm")
    _check_known(x)
    axis, eps, training, momentum, count, rm, rv, w, b = check_args(
        x, running_mean, running_var, weight, bias, training, momentum, eps, axis
    )
    dtype = x.dtype
    pdtype = compute_dtype(dtype)  # parameters and statistics: float32 for half x
    c = x.shape[axis]
    impl = _runtime.impl()
    kept = (axis,)
    reduced = tuple(i for i in range(x.ndim) if i != axis)
    if training:
        # The global statistics, computed now (small): the running
        # statistics are updated once, in place, and every block is
        # normalized with them.
        p = np.asarray(_compute(_tree_moments(x, reduced, False))[0])
        mean, m2 = np.ascontiguousarray(p[..., 1]), np.ascontiguousarray(p[..., 2])
        invstd = impl.invstd(m2, count, eps)
        scale = invstd * (1.0 if w is None else w)
        shift = np.zeros(c) if b is None else b
        hi, lo = impl.split_center(mean, pdtype)
        y = _apply_per_slot(
            x, kept, dtype, hi, lo, as_param(scale, pdtype), as_param(shift, pdtype)
        )
        if rm is not None and rv is not None:
            update_running_pair(rm, rv, mean, m2 / (count - 1), momentum)
    else:
        assert rm is not None and rv is not None
        mean = as_float64(rm)
        invstd = impl.invstd(as_float64(rv), 1.0, eps)
        scale, shift = impl.eval_fold(mean, invstd, w, b)
        y = _apply_per_slot(
            x, kept, dtype, None, None, as_param(scale, pdtype), as_param(shift, pdtype)
        )
    if return_stats:
        return y, mean.astype(pdtype), invstd.astype(pdtype)
    return y


@_in_task
def _bn_sums_block(x: np.ndarray, dy: np.ndarray, center: np.ndarray, *, axis: int) -> np.ndarray:
    """Per-channel float64 ``(sum(x - center), sum(dy), sum(dy * (x - center)))``
    of one block, shaped (1, .., C_block, .., 1, 3)."""
    groups = _layout.canonical_groups(x, (axis,))
    x3 = _layout.view_or_copy(x, groups)
    dy3 = _layout.view_or_copy(dy, groups)
    sums = _runtime.impl().batch_norm_backward_reduce(x3, dy3, np.ascontiguousarray(center))
    shape = tuple(n if i == axis else 1 for i, n in enumerate(x.shape)) + (3,)
    return np.stack(sums, axis=-1).reshape(shape)


@_in_task
def _bn_apply_block(
    x: np.ndarray,
    dy: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    s: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    r: np.ndarray,
    *,
    axis: int,
) -> np.ndarray:
    dx = np.empty_like(x)
    if x.size:
        groups = _layout.canonical_groups(x, (axis,))
        x3 = _layout.view_or_copy(x, groups)
        dy3 = _layout.view_or_copy(dy, groups)
        with (
            np.errstate(invalid="ignore", over="ignore"),
            _layout.output_view(dx, groups, x3.shape, False) as dx3,
        ):
            _runtime.impl().batch_norm_backward_apply(x3, dy3, dx3, hi, lo, s, p, q, r)
    return dx


def _grad_pair(dy: Any, x: Any, func: str) -> tuple[DaskArray, DaskArray]:
    dy = dy if isinstance(dy, da.Array) else da.from_array(np.asarray(dy), chunks=x.chunks)
    x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x), chunks=dy.chunks)
    _check_known(x)
    _check_known(dy, "dy")
    check_float_dtype(x, "x", func)
    check_float_dtype(dy, "dy", func)
    if dy.dtype != x.dtype:
        raise TypeError(f"{func}: dy has dtype {dy.dtype} but x has {x.dtype}; they must match")
    if dy.shape != x.shape:
        raise ValueError(f"{func}: dy has shape {dy.shape} but x has shape {x.shape}")
    return dy.rechunk(x.chunks), x


def batch_norm_backward(
    dy: Any,
    x: Any,
    mean: Any,
    invstd: Any,
    weight: Any = None,
    *,
    axis: int = 1,
    training: bool = True,
    out: Any = None,
) -> tuple[DaskArray, Optional[DaskArray], DaskArray]:
    _no_out(out, "batch_norm_backward")
    dy, x = _grad_pair(dy, x, "batch_norm_backward")
    check_batched(x, "batch_norm_backward")
    axis = check_axis(axis, x.ndim)
    c = x.shape[axis]
    dtype = x.dtype
    pdtype = compute_dtype(dtype)  # parameters and their gradients: float32 for half x
    mu = np.asarray(mean, dtype=np.float64).reshape(c)
    inv = np.asarray(invstd, dtype=np.float64).reshape(c)
    w = _channel_params(weight, "weight", c)
    impl = _runtime.impl()
    nd = x.ndim
    ind = tuple(range(nd))
    reduced = tuple(i for i in range(nd) if i != axis)
    mu_d = da.from_array(mu, chunks=(x.chunks[axis],))
    sums = da.blockwise(
        _bn_sums_block,
        ind + (nd,),
        x,
        ind,
        dy,
        ind,
        mu_d,
        (axis,),
        new_axes={nd: 3},
        adjust_chunks={i: 1 for i in reduced},
        dtype=np.float64,
        meta=_meta(nd + 1, np.float64),
        axis=axis,
    )
    # The sums are needed by every block of dx: computed now (3 x C values).
    total = np.asarray(_compute(sums.sum(axis=reduced))[0])
    sum_d, sum_dy, sum_dy_d = (np.ascontiguousarray(total[:, k]) for k in range(3))
    n = math.prod(x.shape[i] for i in reduced)
    if training:
        from ._twin.formulas import batch_norm_backward_params

        sum_dy_xc, center, s, p, q, r = batch_norm_backward_params(
            sum_d, sum_dy, sum_dy_d, n, mu, inv, w
        )
        hi, lo = impl.split_center(center, pdtype)
        params = [hi, lo] + [as_param(a, pdtype) for a in (s, p, q, r)]
        dx = da.blockwise(
            _bn_apply_block,
            ind,
            x,
            ind,
            dy,
            ind,
            *[a for prm in params for a in (da.from_array(prm, chunks=(x.chunks[axis],)), (axis,))],
            dtype=dtype,
            meta=_meta(nd, dtype),
            axis=axis,
        )
    else:
        sum_dy_xc = sum_dy_d
        gamma = np.ones(c) if w is None else w
        dx = _apply_per_slot(
            dy, (axis,), dtype, None, None, as_param(inv * gamma, pdtype), np.zeros(c, pdtype)
        )
    dweight = None if w is None else da.from_array((sum_dy_xc * inv).astype(pdtype))
    return dx, dweight, da.from_array(sum_dy.astype(pdtype))


# ---------------------------------------------------------------------------
# Row-wise ops: rechunk the normalized axes whole, then the NumPy function
# per block. Multiple outputs travel as one tuple per block, picked apart by
# map_blocks (the tuple blocks are never concatenated).


def _pick(t: tuple[Any, ...], i: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(t[i], dtype=np.float64).reshape(shape)


def _tuple_blocks(
    block_fn: Callable[..., Any], ind: tuple[int, ...], *args: Any, **kwargs: Any
) -> DaskArray:
    return da.blockwise(
        block_fn, ind, *args, dtype=object, meta=_meta(len(ind), object), concatenate=True, **kwargs
    )


def _unwrap(t: Any) -> Any:
    while isinstance(t, list):  # one block along each contracted axis
        t = t[0]
    return t


def _pick_block(t: Any, i: int) -> Any:
    return _unwrap(t)[i]


def _take(
    tuples: DaskArray,
    i: int,
    dtype: Any,
    keep: tuple[int, ...],
    new_axis: Optional[int] = None,
) -> DaskArray:
    """Output ``i`` of tuple blocks: an array over the axes ``keep`` of the
    tuple array (the others are one block each) and, when ``new_axis`` is
    given, a last axis of that length (one block)."""
    out_ind = keep if new_axis is None else keep + (tuples.ndim,)
    new = {} if new_axis is None else {tuples.ndim: new_axis}
    return da.blockwise(
        _pick_block,
        out_ind,
        tuples,
        tuple(range(tuples.ndim)),
        i=i,
        new_axes=new,
        concatenate=False,
        dtype=dtype,
        meta=_meta(len(out_ind), dtype),
    )


def _sum_partials(
    tuples: DaskArray, i: int, whole: tuple[int, ...], shape: tuple[int, ...], dtype: Any
) -> DaskArray:
    """Sum over all blocks of output ``i`` (float64 partials of ``shape``, the
    shape of the ``whole`` axes), rounded once to ``dtype``."""
    nd = tuples.ndim
    full = tuple(tuples.shape[a] if a in whole else 1 for a in range(nd))
    parts = tuples.map_blocks(
        _pick,
        i,
        full,
        chunks=tuple(c if a in whole else (1,) * len(c) for a, c in enumerate(tuples.chunks)),
        dtype=np.float64,
        meta=_meta(nd, np.float64),
    )
    summed = parts.sum(axis=tuple(a for a in range(nd) if a not in whole), dtype=np.float64)
    return summed.reshape(shape).astype(dtype)


@_in_task
def _rows_forward_block(x: np.ndarray, *, op: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return op(x, **kwargs)


def _row_forward(
    x: DaskArray,
    func: str,
    fn: Callable[..., Any],
    norm_axes: tuple[int, ...],
    kwargs: dict[str, Any],
    return_stats: bool,
    n_stats: int,
) -> Any:
    _check_known(x)
    check_float_dtype(x, "x", func)
    xr = _whole(x, norm_axes)
    ind = tuple(range(x.ndim))
    if not return_stats:
        return xr.map_blocks(
            _rows_forward_block, op=fn, kwargs=kwargs, dtype=x.dtype, meta=_meta(x.ndim, x.dtype)
        )
    tuples = _tuple_blocks(
        _rows_forward_block, ind, xr, ind, op=fn, kwargs=dict(kwargs, return_stats=True)
    )
    y = _take(tuples, 0, x.dtype, ind)
    kept = tuple(a for a in ind if a not in norm_axes)
    stats = [_take(tuples, k, x.dtype, kept) for k in range(1, 1 + n_stats)]
    return (y, *stats)


def _row_probe(x: DaskArray, norm_axes: tuple[int, ...]) -> np.ndarray:
    """A small array of x's dtype and normalized shape: the NumPy function
    on it checks the parameters now rather than inside a task."""
    check_float_dtype(x, "x", "layer_norm")
    return np.zeros(tuple(n if i in norm_axes else 1 for i, n in enumerate(x.shape)), x.dtype)


def layer_norm(
    x: DaskArray,
    weight: Any = None,
    bias: Any = None,
    *,
    axis: Any = -1,
    eps: float = 1e-5,
    out: Any = None,
    return_stats: bool = False,
) -> Any:
    _no_out(out, "layer_norm")
    norm_axes = _norm_axes(axis, x.ndim)
    kwargs = {"weight": weight, "bias": bias, "axis": norm_axes, "eps": eps}
    _np_layer_norm(_row_probe(x, norm_axes), weight, bias, eps=eps, axis=norm_axes)  # checks
    return _row_forward(x, "layer_norm", _np_layer_norm, norm_axes, kwargs, return_stats, 2)


def rms_norm(
    x: DaskArray,
    weight: Any = None,
    *,
    axis: Any = -1,
    eps: Optional[float] = None,
    out: Any = None,
    return_stats: bool = False,
) -> Any:
    _no_out(out, "rms_norm")
    norm_axes = _norm_axes(axis, x.ndim)
    kwargs = {"weight": weight, "axis": norm_axes, "eps": eps}
    _np_rms_norm(_row_probe(x, norm_axes), weight, eps=eps, axis=norm_axes)  # checks
    return _row_forward(x, "rms_norm", _np_rms_norm, norm_axes, kwargs, return_stats, 1)


def _sample_whole_axes(x: DaskArray, func: str, axis: int) -> tuple[int, tuple[int, ...]]:
    """Channel axis and the axes a sample's statistics span (all but 0)."""
    _check_known(x)
    check_float_dtype(x, "x", func)
    check_batched(x, func)
    axis = channel_axis(axis, x.ndim, func)
    return axis, tuple(range(1, x.ndim))


def _group_stats_forward(
    x: DaskArray,
    func: str,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    n_cols: int,
    return_stats: bool,
) -> Any:
    xr = _whole(x, tuple(range(1, x.ndim)))
    ind = tuple(range(x.ndim))
    if not return_stats:
        return xr.map_blocks(
            _rows_forward_block, op=fn, kwargs=kwargs, dtype=x.dtype, meta=_meta(x.ndim, x.dtype)
        )
    tuples = _tuple_blocks(
        _rows_forward_block, ind, xr, ind, op=fn, kwargs=dict(kwargs, return_stats=True)
    )
    y = _take(tuples, 0, x.dtype, ind)
    stats = tuple(_take(tuples, k, x.dtype, (0,), new_axis=n_cols) for k in (1, 2))
    return (y, *stats)


def group_norm(
    x: DaskArray,
    num_groups: int,
    weight: Any = None,
    bias: Any = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Any = None,
    return_stats: bool = False,
) -> Any:
    _no_out(out, "group_norm")
    axis, _ = _sample_whole_axes(x, "group_norm", axis)
    # Parameter checks on a tiny stand-in of x's dtype and channel count.
    probe = np.zeros(tuple(x.shape[i] if i == axis else 2 for i in range(x.ndim)), x.dtype)
    _np_group_norm(probe, num_groups, weight, bias, eps=eps, axis=axis)
    kwargs = {"num_groups": num_groups, "weight": weight, "bias": bias, "eps": eps, "axis": axis}
    return _group_stats_forward(
        x, "group_norm", _np_group_norm, kwargs, int(num_groups), return_stats
    )


def _instance_running_update(
    x: DaskArray, axis: int, rm: np.ndarray, rv: np.ndarray, momentum: float
) -> None:
    """Running statistics of instance norm: the batch averages of the
    per-(sample, channel) float64 mean and unbiased variance, updated once."""
    spatial = tuple(i for i in range(1, x.ndim) if i != axis)
    p = _tree_moments(x, spatial, False)  # (N, C, 3)
    n_spatial = math.prod(x.shape[i] for i in spatial)
    mean_avg, m2_avg = _compute(p[..., 1].mean(axis=0), p[..., 2].mean(axis=0))
    update_running_pair(
        rm, rv, np.asarray(mean_avg), np.asarray(m2_avg) / (n_spatial - 1), momentum
    )


def instance_norm(
    x: DaskArray,
    weight: Any = None,
    bias: Any = None,
    *,
    running_mean: Any = None,
    running_var: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Any = None,
    return_stats: bool = False,
) -> Any:
    _no_out(out, "instance_norm")
    axis, _ = _sample_whole_axes(x, "instance_norm", axis)
    momentum = check_momentum(momentum)
    c = x.shape[axis]
    use_input_stats = as_flag(use_input_stats, "use_input_stats")
    rm, rv = check_running_pair(
        running_mean,
        running_var,
        c,
        x.dtype,
        use_input_stats,
        required=not use_input_stats,
        why="when use_input_stats=False",
        func="instance_norm",
    )
    if not use_input_stats:  # batch norm's eval path, as on NumPy
        return batch_norm(
            x, rm, rv, weight, bias, training=False, eps=eps, axis=axis, return_stats=return_stats
        )
    probe = np.zeros(tuple(x.shape[i] if i == axis else 2 for i in range(x.ndim)), x.dtype)
    _np_instance_norm(probe, weight, bias, eps=eps, axis=axis)
    if math.prod(x.shape[i] for i in range(1, x.ndim) if i != axis) == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {x.shape}"
        )
    if rm is not None and rv is not None:
        _instance_running_update(x, axis, rm, rv, momentum)
    kwargs = {"weight": weight, "bias": bias, "eps": eps, "axis": axis}
    return _group_stats_forward(x, "instance_norm", _np_instance_norm, kwargs, c, return_stats)


# -- backwards of the row-wise ops -------------------------------------------


@_in_task
def _rows_backward_block(
    dy: np.ndarray,
    x: np.ndarray,
    *stats: np.ndarray,
    op: Callable[..., Any],
    stat_shape: Callable[[tuple[int, ...]], tuple[int, ...]],
    kwargs: dict[str, Any],
) -> tuple[Any, ...]:
    """The NumPy backward on one block: dx, and this block's share of the
    weight and bias gradients (summed over the blocks by the caller)."""
    shaped = [s.reshape(stat_shape(x.shape)) for s in stats]
    return tuple(op(dy, x, *shaped, **kwargs))


def _row_stat_shape_layer(
    norm_axes: tuple[int, ...],
) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    return functools.partial(_kept_shape, norm_axes)


def _kept_shape(norm_axes: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for i, n in enumerate(shape) if i not in norm_axes)


def _sample_stat_shape(cols: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], cols)


def _row_backward(
    dy: Any,
    x: Any,
    stats: list[Any],
    weight: Any,
    func: str,
    fn: Callable[..., Any],
    whole: tuple[int, ...],
    stat_axes: tuple[int, ...],
    stat_shape: Callable[[tuple[int, ...]], tuple[int, ...]],
    grad_shape: tuple[int, ...],
    grad_axes: tuple[int, ...],
    kwargs: dict[str, Any],
    n_param_grads: int,
) -> tuple[Any, ...]:
    dy, x = _grad_pair(dy, x, func)
    xr = _whole(x, whole)
    dyr = dy.rechunk(xr.chunks)
    nd = x.ndim
    ind = tuple(range(nd))
    args: list[Any] = [dyr, ind, xr, ind]
    stat_chunks = tuple(xr.chunks[a] for a in stat_axes if a < nd)
    for s in stats:
        s_d = s if isinstance(s, da.Array) else da.from_array(np.asarray(s))
        s_ind = tuple(a for a in stat_axes)
        if len(stat_chunks) == s_d.ndim:
            s_d = s_d.rechunk(stat_chunks)
        else:  # (N, G): the second index is new; one chunk
            s_d = s_d.rechunk((xr.chunks[0], (s_d.shape[1],)))
        args += [s_d, s_ind]
    tuples = _tuple_blocks(
        _rows_backward_block, ind, *args, op=fn, stat_shape=stat_shape, kwargs=kwargs
    )
    dx = _take(tuples, 0, x.dtype, ind)
    grads: list[Any] = [dx]
    for k in range(1, 1 + n_param_grads):
        if k == 1 and weight is None:  # no weight: no weight gradient
            grads.append(None)
        else:
            grads.append(_sum_partials(tuples, k, grad_axes, grad_shape, x.dtype))
    return tuple(grads)


def layer_norm_backward(
    dy: Any, x: Any, mean: Any, rstd: Any, weight: Any = None, *, axis: Any = -1, out: Any = None
) -> tuple[Any, ...]:
    _no_out(out, "layer_norm_backward")
    nd = x.ndim
    norm_axes = _norm_axes(axis, nd)
    kept = tuple(a for a in range(nd) if a not in norm_axes)
    return _row_backward(
        dy,
        x,
        [mean, rstd],
        weight,
        "layer_norm_backward",
        _np_layer_norm_backward,
        norm_axes,
        kept,
        _row_stat_shape_layer(norm_axes),
        tuple(x.shape[a] for a in norm_axes),
        norm_axes,
        {"weight": weight, "axis": norm_axes},
        2,
    )


def rms_norm_backward(
    dy: Any, x: Any, rstd: Any, weight: Any = None, *, axis: Any = -1, out: Any = None
) -> tuple[Any, ...]:
    _no_out(out, "rms_norm_backward")
    nd = x.ndim
    norm_axes = _norm_axes(axis, nd)
    kept = tuple(a for a in range(nd) if a not in norm_axes)
    return _row_backward(
        dy,
        x,
        [rstd],
        weight,
        "rms_norm_backward",
        _np_rms_norm_backward,
        norm_axes,
        kept,
        _row_stat_shape_layer(norm_axes),
        tuple(x.shape[a] for a in norm_axes),
        norm_axes,
        {"weight": weight, "axis": norm_axes},
        1,
    )


def group_norm_backward(
    dy: Any,
    x: Any,
    mean: Any,
    rstd: Any,
    num_groups: int,
    weight: Any = None,
    *,
    axis: int = 1,
    out: Any = None,
) -> tuple[Any, ...]:
    _no_out(out, "group_norm_backward")
    xd = x if isinstance(x, da.Array) else dy
    axis, whole = _sample_whole_axes(xd, "group_norm_backward", axis)
    c = xd.shape[axis]
    return _row_backward(
        dy,
        x,
        [mean, rstd],
        weight,
        "group_norm_backward",
        functools.partial(_group_backward_call, num_groups=num_groups),
        whole,
        (0, xd.ndim),
        functools.partial(_sample_stat_shape, int(num_groups)),
        (c,),
        (axis,),
        {"weight": weight, "axis": axis},
        2,
    )


def _group_backward_call(
    dy: np.ndarray, x: np.ndarray, mean: np.ndarray, rstd: np.ndarray, *, num_groups: int, **kw: Any
) -> Any:
    return _np_group_norm_backward(dy, x, mean, rstd, num_groups, **kw)


def instance_norm_backward(
    dy: Any,
    x: Any,
    mean: Any,
    rstd: Any,
    weight: Any = None,
    *,
    axis: int = 1,
    use_input_stats: bool = True,
    out: Any = None,
) -> tuple[Any, ...]:
    _no_out(out, "instance_norm_backward")
    xd = x if isinstance(x, da.Array) else dy
    axis, whole = _sample_whole_axes(xd, "instance_norm_backward", axis)
    c = xd.shape[axis]
    if not use_input_stats:  # running statistics: batch norm's eval backward
        return batch_norm_backward(dy, x, mean, rstd, weight, axis=axis, training=False)
    return _row_backward(
        dy,
        x,
        [mean, rstd],
        weight,
        "instance_norm_backward",
        _np_instance_norm_backward,
        whole,
        (0, xd.ndim),
        functools.partial(_sample_stat_shape, c),
        (c,),
        (axis,),
        {"weight": weight, "axis": axis},
        2,
    )
