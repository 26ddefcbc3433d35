"""Batch normalization, forward and backward, with
torch.nn.functional.batch_norm semantics.

The backward runs on native kernels (a float64 reduction pass and an apply
pass over the canonical (A, C, B) views, fused per channel where the layout
allows); each has a NumPy twin, and results do not depend on the thread
count.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Literal, NamedTuple, Optional, Union, cast, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _layout, _runtime
from ._dispatch import dask_ops, is_dask
from ._layout import as_float64, as_param
from ._validate import (
    F64Array,
    FloatArray,
    as_array,
    as_flag,
    channel_vector,
    check_axis,
    check_batched,
    check_eps,
    check_float_dtype,
    check_grad_pair,
    check_in_place,
    check_momentum,
    compute_dtype,
    empty_grads,
    from_container,
    grad_weight,
    is_half,
    output_for,
    saved_stat,
)


def check_running(
    stat: ArrayLike, name: str, c: int, dtype: np.dtype[Any], updating: bool, func: str
) -> FloatArray:
    """A running statistic (batch and instance norm): 1-D, length c, x's
    dtype (or float32 beside float16/bfloat16 x, PyTorch's mixed precision);
    when ``updating``, an ndarray that can be updated in place (native byte
    order, writeable: :func:`check_in_place`), never a converted copy."""
    stat = cast(ArrayLike, from_container(stat, name, writable=updating))  # torch: shared memory
    if updating and not isinstance(stat, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array (it is updated in place), got {type(stat).__name__}"
        )
    arr = channel_vector(stat, name, c)
    if updating:
        assert isinstance(stat, np.ndarray)
        # x's dtype, or float32 beside half-precision x (as given: the check
        # refuses what would need a copy).
        if is_half(dtype):
            check_in_place(stat, name, (compute_dtype(dtype), dtype), func, f" beside {dtype} x")
        else:
            check_in_place(stat, name, dtype, func)  # (stat, not arr: arr may be a copy)
    elif arr.dtype != dtype and arr.dtype != compute_dtype(dtype):
        also = f" or {compute_dtype(dtype)}" if is_half(dtype) else ""
        raise TypeError(f"{name} must have dtype {dtype}{also} to match x, got {arr.dtype}")
    return arr


def check_running_pair(
    running_mean: Optional[ArrayLike],
    running_var: Optional[ArrayLike],
    c: int,
    dtype: np.dtype[Any],
    updating: bool,
    required: bool,
    why: str,
    func: str,
) -> tuple[Optional[FloatArray], Optional[FloatArray]]:
    """Both running statistics checked by :func:`check_running`, or neither
    (an error when ``required``; ``why`` ends the message)."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if running_mean is None or running_var is None:
        if required:
            raise ValueError(f"running_mean and running_var are required {why}")
        return None, None
    return (
        check_running(running_mean, "running_mean", c, dtype, updating, func),
        check_running(running_var, "running_var", c, dtype, updating, func),
    )


# Held around every running-statistics update of the general path (batch
# and instance norm, both backends), so that threads training on the same
# arrays lose no update: each is a read-modify-write of two short (C,)
# arrays, during which the native update releases the GIL. One lock for all
# arrays: the update takes microseconds. (The C++ fast path of batch_norm
# updates them while holding the GIL, which makes its update atomic too.)
RUNNING_LOCK = threading.Lock()


def update_running(running: FloatArray, value: F64Array, momentum: float) -> None:
    """``impl().running_update`` (float64, rounded once) on a running
    statistic of any layout: a non-contiguous or unaligned one is updated
    through a contiguous copy, with the same bits. A float16/bfloat16 one is
    updated in a float64 copy, then rounded through float32 (the compute
    dtype, as every half-precision result). Callers hold :data:`RUNNING_LOCK`."""
    update = _runtime.impl().running_update
    if is_half(running.dtype):
        work64 = running.astype(np.float64)
        update(work64, value, momentum)
        running[...] = work64.astype(np.float32)
    elif running.flags.c_contiguous and running.flags.aligned:
        update(running, value, momentum)
    else:  # (a fresh copy: ascontiguousarray keeps an unaligned array as is)
        work = running.copy()
        update(work, value, momentum)
        running[...] = work


def update_running_pair(
    running_mean: FloatArray,
    running_var: FloatArray,
    mean: F64Array,
    var: F64Array,
    momentum: float,
) -> None:
    """Both running statistics updated (:func:`update_running`), as one step
    under :data:`RUNNING_LOCK`."""
    with RUNNING_LOCK:
        update_running(running_mean, mean, momentum)
        update_running(running_var, var, momentum)


class BatchNormArgs(NamedTuple):
    """:func:`batch_norm`'s arguments, checked (see :func:`check_args`)."""

    axis: int
    eps: float
    training: bool
    momentum: float
    per_channel: int  # values per channel (the statistics' count)
    running_mean: Optional[FloatArray]
    running_var: Optional[FloatArray]
    weight: Optional[F64Array]
    bias: Optional[F64Array]


def check_args(
    x: Any,
    running_mean: Optional[ArrayLike],
    running_var: Optional[ArrayLike],
    weight: Optional[ArrayLike],
    bias: Optional[ArrayLike],
    training: object,
    momentum: object,
    eps: object,
    axis: object,
) -> BatchNormArgs:
    """The checks of :func:`batch_norm`'s arguments, for both NumPy and dask
    ``x`` (anything with ``dtype``, ``ndim`` and ``shape``): one home for
    their order and their messages."""
    check_float_dtype(x, "x", "batch_norm")
    check_batched(x, "batch_norm")
    axis = check_axis(axis, x.ndim)
    eps = check_eps(eps)
    training = as_flag(training, "training")
    momentum = check_momentum(momentum)
    c = x.shape[axis]
    rm, rv = check_running_pair(
        running_mean,
        running_var,
        c,
        x.dtype,
        training,
        required=not training,
        why="when training=False (eval mode normalizes with the running statistics)",
        func="batch_norm",
    )
    w = None if weight is None else as_float64(channel_vector(weight, "weight", c))
    b = None if bias is None else as_float64(channel_vector(bias, "bias", c))
    if training and eps == 0:
        raise ValueError("batch_norm eps must be positive during training")
    count = math.prod(n for i, n in enumerate(x.shape) if i != axis)
    if training and count <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )
    return BatchNormArgs(axis, eps, training, momentum, count, rm, rv, w, b)


@overload
def batch_norm(
    x: ArrayLike,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: Literal[False] = False,
) -> FloatArray: ...
@overload
def batch_norm(
    x: ArrayLike,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: Literal[True],
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def batch_norm(
    x: ArrayLike,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, tuple[FloatArray, FloatArray, FloatArray]]: ...


def batch_norm(
    x: ArrayLike,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, tuple[FloatArray, FloatArray, FloatArray]]:
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    With ``training=True`` the batch statistics (biased variance) normalize
    ``x`` and, when given, ``running_mean``/``running_var`` are updated in
    place with ``momentum`` (unbiased variance), in float64 and rounded once.
    With ``training=False`` the running statistics are used, folded into one
    scale and shift per channel. Statistics are exact (float64 two-pass) and
    results do not depend on the thread count. A dask array gives a lazy
    result; training then uses the global statistics of the whole batch
    (synchronized batch norm).

    Parameters
    ----------
    x : array_like
        Input of shape (N, C, ...) -- at least 2-D -- with the channels on
        ``axis``; float32, float64, float16 or bfloat16, any
        layout (half precision is computed in float32).
    running_mean, running_var : ndarray, optional
        Running statistics, shape (C,), of x's dtype (or float32 beside
        float16/bfloat16 x); both or neither.
        Required when ``training=False``; with ``training=True`` they must
        be writeable ndarrays (updated in place). Threads training at once
        may share them: each update is applied once (README, "Threads").
    weight, bias : array_like, optional
        Affine parameters, shape (C,), real numbers (applied in float64).
    training : bool, optional
        Normalize with the batch statistics (and update the running ones)
        instead of the running statistics.
    momentum : float, optional
        Weight of the batch statistics in the running update, in [0, 1]:
        ``running = (1 - momentum) * running + momentum * batch``.
    eps : float, optional
        Added to the variance; non-negative, positive when training.
    axis : int, optional
        The channel axis: 1 for (N, C, ...), -1 for channels last.
    out : ndarray, optional
        Array of x's shape and dtype for the result; may be ``x`` itself.
    return_stats : bool, optional
        Also return the statistics used (what :func:`batch_norm_backward`
        needs).

    Returns
    -------
    y : ndarray
        The normalized input, x's shape and dtype (``out`` if given).
    mean, invstd : ndarray
        Only with ``return_stats=True``: shape (C,), x's dtype (float32 for
        half-precision x); the batch
        mean and ``1 / sqrt(var + eps)`` when training, else the running
        mean and ``1 / sqrt(running_var + eps)``.

    Raises
    ------
    TypeError
        If ``x`` is not float32/float64/float16/bfloat16, a parameter is not real, or a
        running statistic has another dtype than ``x`` (or is not an ndarray
        while training).
    ValueError
        For fewer than 2 dimensions, a shape mismatch, only one running
        statistic, none in eval mode, a read-only one while training,
        ``eps`` or ``momentum`` out of range, or a single value per channel
        while training.

    See Also
    --------
    batch_norm_backward : The gradients.
    bnfast.nn.BatchNorm : The layer, with PyTorch's state dict.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> y = bnfast.batch_norm(x, rm, rv, training=True)
    >>> y.round(4)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> rm, rv
    (array([0.2, 0.4]), array([1.1, 1.7]))
    >>> bnfast.batch_norm(x, np.array([2.0, 4.0]), np.array([1.0, 4.0]), eps=0.0)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    if is_dask(x):
        return dask_ops().batch_norm(
            x,
            running_mean,
            running_var,
            weight,
            bias,
            training=training,
            momentum=momentum,
            eps=eps,
            axis=axis,
            out=out,
            return_stats=return_stats,
        )
    return_stats = as_flag(return_stats, "return_stats")
    if not return_stats and _runtime.native_active():
        y = _runtime.core().batch_norm_fast(
            x, running_mean, running_var, weight, bias, training, momentum, eps, axis, out
        )
        if y is not None:  # the common case, done in C++ exactly as below
            return y
    x = as_array(x)
    axis, eps, training, momentum, count, rm, rv, w, b = check_args(
        x, running_mean, running_var, weight, bias, training, momentum, eps, axis
    )
    pdtype = compute_dtype(x.dtype)  # parameters and statistics: float32 for half x
    y = output_for(x, out, "batch_norm")

    impl = _runtime.impl()
    kept = (axis,)
    if training:
        groups = _layout.canonical_groups(x, kept)
        mean, m2 = _layout.apply_elementwise(impl.batch_norm_train, x, y, groups, w, b, eps)
        invstd = impl.invstd(m2, count, eps)
    else:
        assert rm is not None and rv is not None
        mean = as_float64(rm)
        invstd = impl.invstd(as_float64(rv), 1.0, eps)  # 1 / sqrt(var + eps)
        scale, shift = impl.eval_fold(mean, invstd, w, b)
        if x.size:
            groups = _layout.canonical_groups(x, kept)
            _layout.apply_elementwise(
                impl.affine,
                x,
                y,
                groups,
                None,
                None,
                as_param(scale, pdtype),
                as_param(shift, pdtype),
            )

    if training and rm is not None and rv is not None:
        # In float64, rounded once (the C++ fast path does the same).
        update_running_pair(rm, rv, mean, m2 / (count - 1), momentum)

    if return_stats:
        return y, mean.astype(pdtype), invstd.astype(pdtype)
    return y


@overload
def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    invstd: ArrayLike,
    weight: None = None,
    *,
    axis: int = 1,
    training: bool = True,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, None, FloatArray]: ...
@overload
def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    invstd: ArrayLike,
    weight: ArrayLike,
    *,
    axis: int = 1,
    training: bool = True,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    invstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: int = 1,
    training: bool = True,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]: ...


def batch_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    invstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: int = 1,
    training: bool = True,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]:
    """Compute the gradients of :func:`bnfast.batch_norm` (x, weight, bias).

    With ``training=True`` the gradient flows through the batch statistics
    (as ``torch.autograd``); with ``training=False`` the statistics are
    constants and ``dx = dy * invstd * weight``. One pass reduces sum(dy)
    and sum(dy * (x - mean)) per channel in float64, one pass writes dx
    (fused per channel where the layout allows); results do not depend on
    the thread count.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to y; x's shape and dtype.
    x : array_like
        The forward input, (N, C, ...) with channels on ``axis``; float32 or
        float64.
    mean, invstd : array_like
        What ``batch_norm(..., return_stats=True)`` returned, shape (C,):
        the batch statistics (``training=True``) or the running ones
        (``training=False``).
    weight : array_like, optional
        The forward's weight, shape (C,); None for no affine scale.
    axis : int, optional
        The channel axis, as in the forward.
    training : bool, optional
        Whether the forward used the batch statistics.
    out : ndarray, optional
        Array of x's shape and dtype for dx; may be ``dy`` itself.

    Returns
    -------
    dx : ndarray
        Same shape and dtype as x (``out`` if given).
    dweight : ndarray or None
        Shape (C,), x's dtype (float32 for half-precision x); None when
        ``weight`` is None.
    dbias : ndarray
        Shape (C,), x's dtype (float32 for half-precision x).

    Raises
    ------
    TypeError
        If ``x``/``dy`` are not float32/float64/float16/bfloat16 or differ in dtype, or a
        statistic or the weight is not real.
    ValueError
        For fewer than 2 dimensions or mismatched shapes.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    >>> w = np.array([1.0, 0.5])
    >>> y, mean, invstd = bnfast.batch_norm(x, weight=w, training=True, return_stats=True)
    >>> dx, dw, db = bnfast.batch_norm_backward(np.ones_like(x), x, mean, invstd, w)
    >>> np.abs(dx).max() < 1e-12, db
    (np.True_, array([3., 3.]))
    """
    if is_dask(dy, x):
        return dask_ops().batch_norm_backward(
            dy, x, mean, invstd, weight, axis=axis, training=training, out=out
        )
    if _runtime.native_active():
        grads = _runtime.core().batch_norm_backward_fast(
            dy, x, mean, invstd, weight, axis, training, out
        )
        if grads is not None:  # the common training call, done in C++ exactly as below
            return grads
    return backward(dy, x, mean, invstd, weight, axis, training, out, "batch_norm_backward")


def backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    invstd: ArrayLike,
    weight: Optional[ArrayLike],
    axis: int,
    training: bool,
    out: Optional[FloatArray],
    func: str,
    invstd_name: str = "invstd",
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]:
    """:func:`batch_norm_backward`, with ``func`` (the function the user
    called) and ``invstd_name`` (its name for ``invstd``) in error messages."""
    training = as_flag(training, "training")
    dy, x = check_grad_pair(dy, x, func)
    check_batched(x, func)
    axis = check_axis(axis, x.ndim)
    c = x.shape[axis]
    dtype = compute_dtype(x.dtype)  # of the parameters and their gradients
    mu = saved_stat(mean, "mean", (c,), func)
    inv = saved_stat(invstd, invstd_name, (c,), func)
    w = grad_weight(weight, (c,), func)
    dx = output_for(x, out, func)
    if x.size == 0:
        _, dweight, dbias = empty_grads(x, (c,), w)
        return dx, dweight, dbias
    impl = _runtime.impl()
    groups = _layout.canonical_groups(x, (axis,))
    x3 = _layout.view_or_copy(x, groups)
    dy3 = _layout.view_or_copy(dy, groups)
    # dx overlapping an input it is computed from goes through a temporary.
    private = np.may_share_memory(dx, x) or (dx is not dy and np.may_share_memory(dx, dy))
    with (
        np.errstate(invalid="ignore", divide="ignore", over="ignore"),
        _layout.output_view(dx, groups, x3.shape, private) as dx3_work,
    ):
        if training:
            # One kernel: the sums about the stored mean, the move to the exact
            # batch mean, and dx (fused per channel where the layout allows).
            sum_dy, sum_dy_xc = impl.batch_norm_backward_train(
                x3, dy3, dx3_work, np.ascontiguousarray(mu), np.ascontiguousarray(inv), w
            )
        else:
            # Eval: dx = dy * invstd * weight, independent of x.
            _, sum_dy, sum_dy_xc = impl.batch_norm_backward_reduce(x3, dy3, mu)
            gamma = np.ones(c) if w is None else w
            impl.affine(
                dy3, dx3_work, None, None, as_param(inv * gamma, dtype), np.zeros(c, dtype=dtype)
            )
        dweight = None if w is None else (sum_dy_xc * inv).astype(dtype)
    return dx, dweight, sum_dy.astype(dtype)
