"""Layer and RMS normalization, forward and backward, with
torch.nn.functional semantics.

Both run on the row kernels over the (1, rows, D) view of the input: the
kept axes are the rows, the normalized axes the columns.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _layout, _runtime
from ._dispatch import dask_ops, is_dask
from ._layout import as_param
from ._validate import (
    FloatArray,
    as_array,
    check_eps,
    check_float_dtype,
    check_grad_pair,
    compute_dtype,
    empty_grads,
    grad_weight,
    is_real_dtype,
    machine_eps,
    normalize_axes,
    output_for,
    saved_stat,
)

Axes = Union[int, tuple[int, ...]]


def _shaped_param(
    p: Optional[ArrayLike], name: str, shape: tuple[int, ...]
) -> Optional[np.ndarray]:
    """weight/bias of layer/RMS norm: exactly the normalized shape."""
    if p is None:
        return None
    arr = as_array(p, name)
    if not is_real_dtype(arr.dtype):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(
            f"{name} should have shape {shape} (the normalized axes of x), got {arr.shape}"
        )
    return arr


def _row_groups(x: np.ndarray, norm_axes: tuple[int, ...]) -> _layout.Groups:
    """(A, C, B) groups with the kept axes as rows (C) and the normalized axes
    as columns (B), both in their original order (weight is indexed by B)."""
    kept = tuple(i for i in range(x.ndim) if i not in norm_axes and x.shape[i] != 1)
    cols = tuple(i for i in norm_axes if x.shape[i] != 1)
    return (), kept, cols


def _rows_forward(
    x: np.ndarray,
    norm_axes: tuple[int, ...],
    weight: Optional[ArrayLike],
    bias: Optional[ArrayLike],
    eps: float,
    out: Optional[FloatArray],
    func: str,
    rms: bool,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    norm_shape = tuple(x.shape[i] for i in norm_axes)
    kept_shape = tuple(n for i, n in enumerate(x.shape) if i not in norm_axes)
    d = math.prod(norm_shape)
    w = _shaped_param(weight, "weight", norm_shape)
    b = _shaped_param(bias, "bias", norm_shape)
    y = output_for(x, out, func)
    impl = _runtime.impl()
    dtype = compute_dtype(x.dtype)  # parameters and statistics: float32 for half x
    if x.size == 0:  # as PyTorch: an empty result (statistics undefined: NaN)
        undefined = np.full(kept_shape, np.nan, dtype=dtype)
        return y, undefined, undefined.copy()
    groups = _row_groups(x, norm_axes)
    w_t = as_param(np.ones(d) if w is None else w, dtype)
    b_t = as_param(np.zeros(d) if b is None else b, dtype)
    # eps = 0 on a constant row gives rstd = inf, as in PyTorch; no warnings
    # for that or for an rstd beyond the float32 range.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        mean, _, rstd = _layout.apply_elementwise(
            impl.layer_norm_forward, x, y, groups, w_t, b_t, eps, rms
        )
        return y, mean.reshape(kept_shape).astype(dtype), rstd.reshape(kept_shape).astype(dtype)


def _norm_axes(axis: object, ndim: int) -> tuple[int, ...]:
    """The normalized axes of layer/RMS norm: an int or a non-empty tuple."""
    if axis is None:
        raise TypeError("axis must be an int or a tuple of ints, not None")
    axes = normalize_axes(axis, ndim)
    if not axes:
        raise ValueError("axis must name at least one axis to normalize over")
    return axes


@overload
def layer_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: float = 1e-5,
    out: Optional[FloatArray] = None,
    return_stats: Literal[False] = False,
) -> FloatArray: ...
@overload
def layer_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: float = 1e-5,
    out: Optional[FloatArray] = None,
    return_stats: Literal[True],
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def layer_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: float = 1e-5,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, tuple[FloatArray, FloatArray, FloatArray]]: ...


def layer_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: float = 1e-5,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, tuple[FloatArray, FloatArray, FloatArray]]:
    """Layer normalization, as ``torch.nn.functional.layer_norm``.

    Each row -- the elements sharing the indices of the axes not normalized
    -- is normalized to mean 0 and variance 1 (biased), then scaled by
    ``weight`` and shifted by ``bias``. Statistics are exact (float64
    two-pass), a constant row maps to exactly ``bias``, and results do not
    depend on the thread count.

    Parameters
    ----------
    x : array_like
        Input of any shape and layout; float32, float64, float16 or
        bfloat16 (half precision is computed in float32).
    weight, bias : array_like, optional
        Affine parameters with the shape of the normalized axes (PyTorch's
        ``normalized_shape``), real numbers.
    axis : int or tuple of ints, optional
        The normalized axes (not empty); ``-1`` (the default) for the last,
        ``(-2, -1)`` for a 2-D ``normalized_shape``, etc.
    eps : float, optional
        Added to the variance; non-negative.
    out : ndarray, optional
        Array of x's shape and dtype for the result; may be ``x``.
    return_stats : bool, optional
        Also return the statistics (what :func:`layer_norm_backward` needs).

    Returns
    -------
    y : ndarray
        Same shape and dtype as x (``out`` if given).
    mean, rstd : ndarray
        Only with ``return_stats=True``: the shape of the axes not
        normalized, x's dtype (float32 for half-precision x);
        ``rstd = 1 / sqrt(var + eps)`` (inf for a
        constant row with ``eps = 0``). NaN for an empty input.

    Raises
    ------
    TypeError
        If ``x`` is not float32/float64/float16/bfloat16, ``axis`` is None or a parameter is
        not real.
    ValueError
        For a bad, repeated or empty ``axis``, parameters of the wrong
        shape, or a negative ``eps``.

    See Also
    --------
    layer_norm_backward : The gradients.
    bnfast.nn.LayerNorm : The layer.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    >>> bnfast.layer_norm(x).round(4)
    array([[-1.2247,  0.    ,  1.2247],
           [ 0.    ,  0.    ,  0.    ]])
    >>> y, mean, rstd = bnfast.layer_norm(x, return_stats=True)
    >>> mean
    array([2., 2.])
    """
    if is_dask(x):
        return dask_ops().layer_norm(
            x, weight, bias, axis=axis, eps=eps, out=out, return_stats=return_stats
        )
    if not return_stats and _runtime.native_active():
        y = _runtime.core().layer_norm_fast(x, weight, bias, axis, eps, False, out)
        if y is not None:  # the common case (last axis, contiguous), done in C++
            fast: FloatArray = y
            return fast
    xa = as_array(x)
    check_float_dtype(xa, "x", "layer_norm")
    eps = check_eps(eps)
    norm_axes = _norm_axes(axis, xa.ndim)
    y, mean, rstd = _rows_forward(xa, norm_axes, weight, bias, eps, out, "layer_norm", rms=False)
    return (y, mean, rstd) if return_stats else y


@overload
def rms_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: Optional[float] = None,
    out: Optional[FloatArray] = None,
    return_stats: Literal[False] = False,
) -> FloatArray: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: Optional[float] = None,
    out: Optional[FloatArray] = None,
    return_stats: Literal[True],
) -> tuple[FloatArray, FloatArray]: ...
@overload
def rms_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: Optional[float] = None,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, tuple[FloatArray, FloatArray]]: ...


def rms_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    eps: Optional[float] = None,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, tuple[FloatArray, FloatArray]]:
    """RMS normalization, as ``torch.nn.functional.rms_norm``.

    ``y = x / sqrt(mean(x**2) + eps) * weight`` over ``axis``.

    Parameters
    ----------
    x : array_like
        Input of any shape and layout; float32, float64, float16 or
        bfloat16 (half precision is computed in float32).
    weight : array_like, optional
        Scale with the shape of the normalized axes, real numbers.
    axis : int or tuple of ints, optional
        The normalized axes (not empty); ``-1`` by default.
    eps : float, optional
        Added to the mean of the squares; None (the default) uses
        ``np.finfo(x.dtype).eps``, as PyTorch.
    out : ndarray, optional
        Array of x's shape and dtype for the result; may be ``x``.
    return_stats : bool, optional
        Also return ``rstd`` (what :func:`rms_norm_backward` needs).

    Returns
    -------
    y : ndarray
        Same shape and dtype as x (``out`` if given).
    rstd : ndarray
        Only with ``return_stats=True``: ``1 / sqrt(mean(x**2) + eps)``, the
        shape of the axes not normalized, x's dtype (float32 for half-precision
        x; 0 for a row holding
        +-inf and no NaN).

    Raises
    ------
    TypeError
        If ``x`` is not float32/float64/float16/bfloat16, ``axis`` is None or ``weight`` is
        not real.
    ValueError
        For a bad, repeated or empty ``axis``, a weight of the wrong shape,
        or a negative ``eps``.

    See Also
    --------
    rms_norm_backward : The gradients.
    bnfast.nn.RMSNorm : The layer.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[3.0, 4.0], [1.0, -1.0]])
    >>> bnfast.rms_norm(x).round(4)
    array([[ 0.8485,  1.1314],
           [ 1.    , -1.    ]])
    """
    if is_dask(x):
        return dask_ops().rms_norm(
            x, weight, axis=axis, eps=eps, out=out, return_stats=return_stats
        )
    if not return_stats and _runtime.native_active():
        y = _runtime.core().layer_norm_fast(x, weight, None, axis, eps, True, out)
        if y is not None:
            fast: FloatArray = y
            return fast
    xa = as_array(x)
    check_float_dtype(xa, "x", "rms_norm")
    eps_ = machine_eps(xa.dtype) if eps is None else check_eps(eps)
    norm_axes = _norm_axes(axis, xa.ndim)
    y, _, rstd = _rows_forward(xa, norm_axes, weight, None, eps_, out, "rms_norm", rms=True)
    return (y, rstd) if return_stats else y


# ---------------------------------------------------------------------------
# Backward


def _row_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: Optional[ArrayLike],
    rstd: ArrayLike,
    weight: Optional[ArrayLike],
    axis: Axes,
    func: str,
    rms: bool,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]:
    """Shared by layer and RMS norm backward: the native row kernel on the
    (1, rows, D) views, whatever the layout."""
    dya, xa = check_grad_pair(dy, x, func)
    return _row_backward_arrays(dya, xa, mean, rstd, weight, axis, func, rms, out)


def _row_backward_arrays(
    dy: np.ndarray,
    x: np.ndarray,
    mean: Optional[ArrayLike],
    rstd: ArrayLike,
    weight: Optional[ArrayLike],
    axis: Axes,
    func: str,
    rms: bool,
    out: Optional[FloatArray],
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]:
    norm_axes = _norm_axes(axis, x.ndim)
    norm_shape = tuple(x.shape[i] for i in norm_axes)
    kept_shape = tuple(n for i, n in enumerate(x.shape) if i not in norm_axes)
    mu = None if rms else saved_stat(mean, "mean", kept_shape, func).ravel()
    rs = saved_stat(rstd, "rstd", kept_shape, func).ravel()
    w = grad_weight(weight, norm_shape, func)
    dx = output_for(x, out, func)
    if x.size == 0:
        _, dw0, db0 = empty_grads(x, norm_shape, w)
        return dx, dw0, db0
    dtype = compute_dtype(x.dtype)  # of the parameters and their gradients
    groups = _row_groups(x, norm_axes)
    x3 = _layout.view_or_copy(x, groups)
    dy3 = _layout.view_or_copy(dy, groups)
    d = math.prod(norm_shape)
    w_t = as_param(np.ones(d) if w is None else w, dtype)
    # Each element of dy is read before dx is written at the same place, so
    # out=dy works in place; any other overlap goes through a temporary.
    private = np.may_share_memory(dx, x) or (dx is not dy and np.may_share_memory(dx, dy))
    with (
        np.errstate(invalid="ignore", over="ignore"),
        _layout.output_view(dx, groups, x3.shape, private) as dx3,
    ):
        dweight, dbias = _runtime.impl().layer_norm_backward(
            x3, dy3, dx3, np.zeros_like(rs) if mu is None else mu, rs, w_t, rms
        )
    dw = None if w is None else dweight.reshape(norm_shape).astype(dtype)
    return dx, dw, dbias.reshape(norm_shape).astype(dtype)


@overload
def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: None = None,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, None, FloatArray]: ...
@overload
def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]: ...


def layer_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray], FloatArray]:
    """Compute the gradients of :func:`bnfast.layer_norm` (x, weight, bias).

    As ``torch.autograd`` computes them; results do not depend on the
    thread count.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to y; x's shape and dtype.
    x : array_like
        The forward input; float32, float64, float16 or bfloat16.
    mean, rstd : array_like
        What ``layer_norm(..., return_stats=True)`` returned: the shape of
        the axes not normalized (squeezed shapes such as PyTorch's (N, 1)
        are accepted).
    weight : array_like, optional
        The forward's weight, the shape of the normalized axes.
    axis : int or tuple of ints, optional
        The normalized axes, as in the forward.
    out : ndarray, optional
        Array of x's shape and dtype for dx (it may be ``dy``), which saves
        allocating one.

    Returns
    -------
    dx : ndarray
        Same shape and dtype as x (``out`` if given).
    dweight : ndarray or None
        The shape of the normalized axes, x's dtype (float32 for
        half-precision x); None when ``weight``
        is None.
    dbias : ndarray
        The shape of the normalized axes, x's dtype (float32 for
        half-precision x).

    Raises
    ------
    TypeError
        If ``x``/``dy`` are not float32/float64/float16/bfloat16 or differ in dtype, or a
        statistic or the weight is not real.
    ValueError
        For mismatched shapes or a bad ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0, 3.0], [2.0, 0.0, 4.0]])
    >>> y, mean, rstd = bnfast.layer_norm(x, return_stats=True)
    >>> dx, dw, db = bnfast.layer_norm_backward(np.ones_like(x), x, mean, rstd)
    >>> np.abs(dx).max() < 1e-12, dw, db
    (np.True_, None, array([2., 2., 2.]))
    """
    if is_dask(dy, x):
        return dask_ops().layer_norm_backward(dy, x, mean, rstd, weight, axis=axis, out=out)
    return _row_backward(dy, x, mean, rstd, weight, axis, "layer_norm_backward", rms=False, out=out)


@overload
def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    rstd: ArrayLike,
    weight: None = None,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, None]: ...
@overload
def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, FloatArray]: ...
@overload
def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    rstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray]]: ...


def rms_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    rstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: Axes = -1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, Optional[FloatArray]]:
    """Compute the gradients of :func:`bnfast.rms_norm` (x, weight).

    As ``torch.autograd`` computes them; results do not depend on the
    thread count.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to y; x's shape and dtype.
    x : array_like
        The forward input; float32, float64, float16 or bfloat16.
    rstd : array_like
        What ``rms_norm(..., return_stats=True)`` returned
        (``1 / sqrt(mean(x**2) + eps)``), the shape of the axes not
        normalized.
    weight : array_like, optional
        The forward's weight, the shape of the normalized axes.
    axis : int or tuple of ints, optional
        The normalized axes, as in the forward.
    out : ndarray, optional
        Array of x's shape and dtype for dx (it may be ``dy``).

    Returns
    -------
    dx : ndarray
        Same shape and dtype as x (``out`` if given).
    dweight : ndarray or None
        The shape of the normalized axes, x's dtype (float32 for
        half-precision x); None when ``weight``
        is None.

    Raises
    ------
    TypeError
        If ``x``/``dy`` are not float32/float64/float16/bfloat16 or differ in dtype, or
        ``rstd`` or the weight is not real.
    ValueError
        For mismatched shapes or a bad ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[3.0, 4.0]])
    >>> y, rstd = bnfast.rms_norm(x, np.ones(2), return_stats=True)
    >>> dx, dw = bnfast.rms_norm_backward(np.ones_like(x), x, rstd, np.ones(2))
    >>> dw.round(4)
    array([0.8485, 1.1314])
    """
    if is_dask(dy, x):
        return dask_ops().rms_norm_backward(dy, x, rstd, weight, axis=axis, out=out)
    dx, dweight, _ = _row_backward(
        dy, x, None, rstd, weight, axis, "rms_norm_backward", rms=True, out=out
    )
    return dx, dweight
