"""Group and instance normalization, forward and backward, with
torch.nn.functional semantics: statistics per (sample, group), computed by
the (sample, group) machinery of ``_layout``: channels first on the moments,
affine and batch-norm backward kernels, channels last on the group-norm
kernels (every sample in one call) and the affine kernel. Instance norm
with running statistics is batch norm's eval path.
"""

from __future__ import annotations

from typing import Literal, Optional, Union, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _layout, _runtime
from ._batch_norm import backward as batch_norm_backward_as
from ._batch_norm import batch_norm, check_running_pair, update_running_pair
from ._dispatch import dask_ops, is_dask
from ._layout import as_float64
from ._validate import (
    F64Array,
    FloatArray,
    as_array,
    as_flag,
    channel_axis,
    channel_vector,
    check_axis,
    check_batched,
    check_eps,
    check_float_dtype,
    check_grad_pair,
    check_momentum,
    check_num_groups,
    compute_dtype,
    empty_grads,
    grad_weight,
    output_for,
    saved_stat,
)

Stats3 = tuple[FloatArray, FloatArray, FloatArray]
Grads = tuple[FloatArray, Optional[FloatArray], FloatArray]


def _affine_params(
    weight: Optional[ArrayLike], bias: Optional[ArrayLike], c: int
) -> tuple[Optional[F64Array], Optional[F64Array]]:
    """weight and bias per channel, as float64 (or None)."""
    w = None if weight is None else as_float64(channel_vector(weight, "weight", c))
    return w, None if bias is None else as_float64(channel_vector(bias, "bias", c))


@overload
def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: Literal[False] = False,
) -> FloatArray: ...
@overload
def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: Literal[True],
) -> Stats3: ...
@overload
def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, Stats3]: ...


def group_norm(
    x: ArrayLike,
    num_groups: int,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, Stats3]:
    """Group normalization, as ``torch.nn.functional.group_norm``.

    Each (sample, group of ``C // num_groups`` consecutive channels) is
    normalized over its channels and the spatial axes, then scaled and
    shifted per channel. Statistics are exact (float64 two-pass).

    Parameters
    ----------
    x : array_like
        Input of shape (N, C, ...) -- at least 2-D -- with the channels on
        ``axis``; float32, float64, float16 or bfloat16.
    num_groups : int
        Number of groups; must divide C.
    weight, bias : array_like, optional
        Affine parameters per channel, shape (C,), real numbers.
    eps : float, optional
        Added to the variance; non-negative.
    axis : int, optional
        The channel axis (not the batch axis 0): 1, or -1 for channels last.
    out : ndarray, optional
        Array of x's shape and dtype for the result; may be ``x``.
    return_stats : bool, optional
        Also return the statistics (what :func:`group_norm_backward` needs).

    Returns
    -------
    y : ndarray
        Same shape and dtype as x (``out`` if given).
    mean, rstd : ndarray
        Only with ``return_stats=True``: shape (N, num_groups), x's dtype
        (float32 for half-precision x);
        ``rstd = 1 / sqrt(var + eps)``. NaN for an empty input.

    Raises
    ------
    TypeError
        If ``x`` is not float32/float64/float16/bfloat16 or ``num_groups`` not an integer.
    ValueError
        For fewer than 2 dimensions, ``axis`` 0, ``num_groups`` not dividing
        C, mismatched shapes, a negative ``eps`` or a single value in all.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[[1.0, 3.0], [5.0, 7.0]]])  # N=1, C=2, L=2
    >>> bnfast.group_norm(x, 1, eps=0.0).round(4)
    array([[[-1.3416, -0.4472],
            [ 0.4472,  1.3416]]])
    >>> bnfast.group_norm(x, 2, eps=0.0)
    array([[[-1.,  1.],
            [-1.,  1.]]])
    """
    if is_dask(x):
        return dask_ops().group_norm(
            x, num_groups, weight, bias, eps=eps, axis=axis, out=out, return_stats=return_stats
        )
    xa = as_array(x)
    check_float_dtype(xa, "x", "group_norm")
    check_batched(xa, "group_norm")
    axis = channel_axis(axis, xa.ndim, "group_norm")
    eps = check_eps(eps)
    return_stats = as_flag(return_stats, "return_stats")
    c = xa.shape[axis]
    groups = check_num_groups(num_groups, xa.shape, c)
    if xa.shape[0] * (c // groups) * _layout.spatial_size(xa, axis) == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {xa.shape}"
        )
    w, b = _affine_params(weight, bias, c)
    y, mean, rstd, _, _ = _layout.group_forward(
        _runtime.impl(), xa, output_for(xa, out, "group_norm"), groups, w, b, eps, axis, False
    )
    return (y, mean, rstd) if return_stats else y


@overload
def instance_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: Literal[False] = False,
) -> FloatArray: ...
@overload
def instance_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: Literal[True],
) -> Stats3: ...
@overload
def instance_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, Stats3]: ...


def instance_norm(
    x: ArrayLike,
    weight: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    running_mean: Optional[ArrayLike] = None,
    running_var: Optional[ArrayLike] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
    out: Optional[FloatArray] = None,
    return_stats: bool = False,
) -> Union[FloatArray, Stats3]:
    """Instance normalization, as ``torch.nn.functional.instance_norm``.

    Statistics per sample and channel over the spatial axes. Running
    statistics, when given, are updated in place with the batch average of
    the instance statistics (unbiased variance), in float64 and rounded once;
    with ``use_input_stats=False`` they normalize, as batch norm's eval mode.

    Parameters
    ----------
    x : array_like
        Input of shape (N, C, ...) -- at least 2-D -- with the channels on
        ``axis``; float32, float64, float16 or bfloat16.
    weight, bias : array_like, optional
        Affine parameters per channel, shape (C,), real numbers.
    running_mean, running_var : ndarray, optional
        Shape (C,), x's dtype (or float32 beside half-precision x); both
        or neither; required when
        ``use_input_stats=False``, else writeable (updated in place). Threads
        training at once may share them: each update is applied once.
    use_input_stats : bool, optional
        Normalize with the instance statistics (True) or the running ones.
    momentum : float, optional
        Weight of the batch in the running update, in [0, 1].
    eps : float, optional
        Added to the variance; non-negative.
    axis : int, optional
        The channel axis (not the batch axis 0): 1, or -1 for channels last.
    out : ndarray, optional
        Array of x's shape and dtype for the result; may be ``x``.
    return_stats : bool, optional
        Also return the statistics (for :func:`instance_norm_backward`).

    Returns
    -------
    y : ndarray
        Same shape and dtype as x (``out`` if given).
    mean, rstd : ndarray
        Only with ``return_stats=True``, x's dtype (float32 for half-precision
        x): shape (N, C), or (C,)
        with running statistics (``1 / sqrt(running_var + eps)``). ``rstd``
        is 0 where the variance and ``eps`` are both 0, as PyTorch.

    Raises
    ------
    TypeError
        If ``x`` is not float32/float64/float16/bfloat16 or a running statistic is not of
        x's dtype (or not an ndarray when updated).
    ValueError
        For fewer than 2 dimensions, ``axis`` 0, mismatched shapes, a
        missing running statistic, a single spatial element with input
        statistics, or ``eps``/``momentum`` out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[[1.0, 3.0], [2.0, 8.0]]])  # N=1, C=2, L=2
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> bnfast.instance_norm(x, running_mean=rm, running_var=rv, eps=0.0)
    array([[[-1.,  1.],
            [-1.,  1.]]])
    >>> rm, rv
    (array([0.2, 0.5]), array([1.1, 2.7]))
    """
    if is_dask(x):
        return dask_ops().instance_norm(
            x,
            weight,
            bias,
            running_mean=running_mean,
            running_var=running_var,
            use_input_stats=use_input_stats,
            momentum=momentum,
            eps=eps,
            axis=axis,
            out=out,
            return_stats=return_stats,
        )
    xa = as_array(x)
    check_float_dtype(xa, "x", "instance_norm")
    check_batched(xa, "instance_norm")
    axis = channel_axis(axis, xa.ndim, "instance_norm")
    eps = check_eps(eps)
    momentum = check_momentum(momentum)
    return_stats = as_flag(return_stats, "return_stats")
    c = xa.shape[axis]
    use_input_stats = as_flag(use_input_stats, "use_input_stats")
    rm, rv = check_running_pair(
        running_mean,
        running_var,
        c,
        xa.dtype,
        use_input_stats,
        required=not use_input_stats,
        why="when use_input_stats=False",
        func="instance_norm",
    )
    spatial = _layout.spatial_size(xa, axis)
    if use_input_stats and spatial == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {xa.shape}"
        )
    y = output_for(xa, out, "instance_norm")  # checked here, named as the user's call
    if not use_input_stats:
        # Running statistics per channel: exactly batch norm's eval path.
        return batch_norm(
            xa,
            rm,
            rv,
            weight,
            bias,
            training=False,
            eps=eps,
            axis=axis,
            out=y,
            return_stats=return_stats,
        )
    w, b = _affine_params(weight, bias, c)
    if c == 0:  # no channels: nothing to normalize (statistics of shape (N, 0))
        empty = np.empty((xa.shape[0], 0), dtype=xa.dtype)
        return (y, empty, empty.copy()) if return_stats else y
    y, mean, rstd, mean64, m2 = _layout.group_forward(
        _runtime.impl(), xa, y, c, w, b, eps, axis, True
    )
    if rm is not None and rv is not None and mean64 is not None and m2 is not None:
        # Batch averages of the instance statistics, in float64 and rounded
        # once, by the same formula as batch norm's update.
        update_running_pair(
            rm, rv, mean64.mean(axis=0), (m2 / (spatial - 1)).mean(axis=0), momentum
        )
    return (y, mean, rstd) if return_stats else y


# ---------------------------------------------------------------------------
# Backward


@overload
def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: int,
    weight: None = None,
    *,
    axis: int = 1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, None, FloatArray]: ...
@overload
def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: int,
    weight: ArrayLike,
    *,
    axis: int = 1,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: int,
    weight: Optional[ArrayLike] = None,
    *,
    axis: int = 1,
    out: Optional[FloatArray] = None,
) -> Grads: ...


def group_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: int,
    weight: Optional[ArrayLike] = None,
    *,
    axis: int = 1,
    out: Optional[FloatArray] = None,
) -> Grads:
    """Compute the gradients of :func:`bnfast.group_norm` (x, weight, bias).

    As ``torch.autograd`` computes them.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to y; x's shape and dtype.
    x : array_like
        The forward input, (N, C, ...) with channels on ``axis``; float32 or
        float64.
    mean, rstd : array_like
        What ``group_norm(..., return_stats=True)`` returned, shape
        (N, num_groups).
    num_groups : int
        The forward's number of groups.
    weight : array_like, optional
        The forward's weight, shape (C,).
    axis : int, optional
        The channel axis, as in the forward.
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
        If ``x``/``dy`` are not float32/float64/float16/bfloat16 or differ in dtype.
    ValueError
        For fewer than 2 dimensions, ``axis`` 0, ``num_groups`` not dividing
        C, or mismatched shapes.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[[1.0, 3.0], [5.0, 7.0]]])
    >>> y, mean, rstd = bnfast.group_norm(x, 1, return_stats=True)
    >>> dx, dw, db = bnfast.group_norm_backward(np.ones_like(x), x, mean, rstd, 1)
    >>> np.abs(dx).max() < 1e-12, dw, db
    (np.True_, None, array([2., 2.]))
    """
    if is_dask(dy, x):
        return dask_ops().group_norm_backward(
            dy, x, mean, rstd, num_groups, weight, axis=axis, out=out
        )
    return _group_backward(dy, x, mean, rstd, num_groups, weight, axis, out, "group_norm_backward")


def _group_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    num_groups: object,
    weight: Optional[ArrayLike],
    axis: int,
    out: Optional[FloatArray],
    func: str,
) -> Grads:
    """:func:`group_norm_backward`, with ``func`` (the function the user
    called) naming it in error messages."""
    dya, xa = check_grad_pair(dy, x, func)
    check_batched(xa, func)
    axis = channel_axis(axis, xa.ndim, func)
    n, c = xa.shape[0], xa.shape[axis]
    g_count = check_num_groups(num_groups, xa.shape, c)
    mu = saved_stat(mean, "mean", (n, g_count), func)
    rs = saved_stat(rstd, "rstd", (n, g_count), func)
    w = grad_weight(weight, (c,), func)
    dx = output_for(xa, out, func)
    if xa.size == 0:
        _, dweight, dbias = empty_grads(xa, (c,), w)
        return dx, dweight, dbias
    dtype = compute_dtype(xa.dtype)  # of the kernel parameters and the gradients
    xv, dyv, dxv, finish = _layout.sample_grad_views(xa, dya, dx, axis)
    # One kernel call: per (sample, group) the sums about the stored mean,
    # the parameters (formulas.group_norm_backward_params) and dx.
    with np.errstate(invalid="ignore", over="ignore"):
        s_dy, t = (
            a.reshape(n, c)
            for a in _runtime.impl().group_norm_backward_train(
                xv, dyv, dxv, g_count, as_float64(mu).ravel(), as_float64(rs).ravel(), w
            )
        )
        finish()
        rs_c = np.repeat(np.asarray(rs, dtype=np.float64), c // g_count, axis=1)
        dweight = None if w is None else (t * rs_c).sum(axis=0).astype(dtype)
    return dx, dweight, s_dy.sum(axis=0).astype(dtype)


@overload
def instance_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: None = None,
    *,
    axis: int = 1,
    use_input_stats: bool = True,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, None, FloatArray]: ...
@overload
def instance_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike,
    *,
    axis: int = 1,
    use_input_stats: bool = True,
    out: Optional[FloatArray] = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def instance_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: int = 1,
    use_input_stats: bool = True,
    out: Optional[FloatArray] = None,
) -> Grads: ...


def instance_norm_backward(
    dy: ArrayLike,
    x: ArrayLike,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: Optional[ArrayLike] = None,
    *,
    axis: int = 1,
    use_input_stats: bool = True,
    out: Optional[FloatArray] = None,
) -> Grads:
    """Compute the gradients of :func:`bnfast.instance_norm` (x, weight, bias).

    As ``torch.autograd`` computes them.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to y; x's shape and dtype.
    x : array_like
        The forward input, (N, C, ...) with channels on ``axis``; float32 or
        float64.
    mean, rstd : array_like
        What ``instance_norm(..., return_stats=True)`` returned: (N, C), or
        (C,) with running statistics (then the gradient is batch norm's eval
        gradient).
    weight : array_like, optional
        The forward's weight, shape (C,).
    axis : int, optional
        The channel axis, as in the forward.
    use_input_stats : bool, optional
        Whether the forward normalized with the instance statistics.
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
        If ``x``/``dy`` are not float32/float64/float16/bfloat16 or differ in dtype.
    ValueError
        For fewer than 2 dimensions, a bad ``axis`` or mismatched shapes.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[[1.0, 3.0], [2.0, 8.0]]])
    >>> w = np.array([1.0, 2.0])
    >>> y, mean, rstd = bnfast.instance_norm(x, w, return_stats=True)
    >>> dx, dw, db = bnfast.instance_norm_backward(x.copy(), x, mean, rstd, w)
    >>> dw.round(4), db
    (array([2., 6.]), array([ 4., 10.]))
    """
    if is_dask(dy, x):
        return dask_ops().instance_norm_backward(
            dy, x, mean, rstd, weight, axis=axis, use_input_stats=use_input_stats, out=out
        )
    func = "instance_norm_backward"
    dya, xa = check_grad_pair(dy, x, func)
    check_batched(xa, func)
    if not as_flag(use_input_stats, "use_input_stats"):
        axis = check_axis(axis, xa.ndim)  # (batch norm's eval gradient: any axis)
        return batch_norm_backward_as(dya, xa, mean, rstd, weight, axis, False, out, func, "rstd")
    axis = channel_axis(axis, xa.ndim, func)
    c = xa.shape[axis]
    if c == 0:  # no channels: one group per channel means no groups at all
        n = xa.shape[0]
        saved_stat(mean, "mean", (n, 0), func)
        saved_stat(rstd, "rstd", (n, 0), func)
        dx = output_for(xa, out, func)
        _, dweight, dbias = empty_grads(xa, (0,), grad_weight(weight, (0,), func))
        return dx, dweight, dbias
    return _group_backward(dya, xa, mean, rstd, c, weight, axis, out, func)
