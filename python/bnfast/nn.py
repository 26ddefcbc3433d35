"""Stateful normalization layers with PyTorch's semantics and state dicts.

Each layer is called on a NumPy array (``y = layer(x)``), keeps a private
copy of what its backward needs (so changing ``x`` afterwards cannot corrupt
the gradients), and ``dx = layer.backward(dy)`` returns the input gradient
and fills ``grad_weight``/``grad_bias``. ``state_dict()`` and
``load_state_dict()`` use PyTorch's key names and shapes, so the state of a
``torch.nn.BatchNorm2d`` (converted with ``.numpy()``) loads into
:class:`BatchNorm` and back.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ._batch_norm import batch_norm, batch_norm_backward
from ._group_norm import group_norm, group_norm_backward, instance_norm, instance_norm_backward
from ._layer_norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from ._nn_base import (
    Layer,
    RunningStatsLayer,
    check_batched,
    check_channels,
    check_trailing,
    positive_int,
    shape_tuple,
)
from ._validate import FloatArray, check_eps

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]

_FORWARD_DOC = """Compute the layer's output for ``x`` (also ``layer(x)``).

        A copy of what :meth:`backward` needs is kept.

        Parameters
        ----------
        x : array_like
            Input of the layer's dtype{shape}.

        Returns
        -------
        ndarray
            Same shape and dtype as x.

        Raises
        ------
        TypeError
            If x's dtype is not the layer's.
        ValueError
            If x's shape does not fit the layer{extra}.
        """

_BACKWARD_DOC = """Compute the gradient with respect to the last forward input.

        Fills ``grad_weight``{bias} (None without {params}).

        Parameters
        ----------
        dy : array_like
            Gradient of the loss with respect to the output; the output's
            shape and dtype.

        Returns
        -------
        ndarray
            The input gradient dx: same shape and dtype as the input.

        Raises
        ------
        RuntimeError
            If :meth:`forward` was not called first.
        TypeError, ValueError
            If dy does not match the output.
        """


def _doc(template: str, **fields: str) -> str:
    return template.format(**fields)


class BatchNorm(RunningStatsLayer):
    """Batch normalization layer, as ``torch.nn.BatchNorm1d/2d/3d``.

    Channels on ``axis``; see :func:`bnfast.batch_norm`.

    In training mode the batch statistics normalize and, when tracked, update
    the running statistics; in eval mode the running statistics normalize
    (the batch statistics without tracking).

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, optional
        Added to the variance; positive (training normalizes with the batch
        variance, which is 0 for a constant channel).
    momentum : float or None, optional
        Weight of a batch in the running statistics; None for a cumulative
        average (``1 / num_batches_tracked``).
    affine : bool, optional
        Learnable ``weight`` (ones) and ``bias`` (zeros), shape (C,).
    track_running_stats : bool, optional
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked``.
    axis : int, optional
        The channel axis: 1 for (N, C, ...), -1 for channels last.
    dtype : dtype, optional
        Float32 (the default), float64, float16 or bfloat16, of the
        parameters and the input; a float32 layer also takes float16 and
        bfloat16 input (mixed precision, as PyTorch).

    Raises
    ------
    TypeError, ValueError
        For a non-positive ``num_features`` or ``eps``, a ``momentum`` out
        of range or a dtype other than float32/float64/float16/bfloat16.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast.nn import BatchNorm
    >>> layer = BatchNorm(2, dtype=np.float64)
    >>> y = layer(np.array([[1.0, 2.0], [3.0, 6.0]]))
    >>> layer.running_mean
    array([0.2, 0.4])
    >>> dx = layer.backward(np.ones((2, 2)))
    >>> layer.grad_bias
    array([2., 2.])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        axis: int = 1,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, axis, dtype)
        if self.eps == 0:  # (refused here, not by every training forward)
            raise ValueError(
                "BatchNorm eps must be positive: training normalizes with the batch "
                "variance, which is 0 for a constant channel (batch_norm refuses eps=0 "
                "when training)"
            )

    def forward(self, x: ArrayLike) -> FloatArray:
        xa = self._input(x)
        check_channels(self, xa, self.axis, self.num_features)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked += 1
            factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        use_batch_stats = self.training or not self.track_running_stats
        y, mean, invstd = batch_norm(
            xa,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=factor,
            eps=self.eps,
            axis=self.axis,
            return_stats=True,
        )
        self._saved = (xa.copy(), mean, invstd, use_batch_stats)
        return y

    forward.__doc__ = _doc(
        _FORWARD_DOC,
        shape=", (N, C, ...) with C on ``axis``",
        extra=", or a training batch has one value per channel",
    )

    def backward(self, dy: ArrayLike) -> FloatArray:
        x, mean, invstd, use_batch_stats = self._saved_or_raise()
        dx, dweight, dbias = batch_norm_backward(
            dy, x, mean, invstd, self.weight, axis=self.axis, training=use_batch_stats
        )
        self.grad_weight, self.grad_bias = (
            (self._grad(dweight), self._grad(dbias)) if self.affine else (None, None)
        )
        return dx

    backward.__doc__ = _doc(_BACKWARD_DOC, bias="/``grad_bias``", params="``affine``")


class InstanceNorm(RunningStatsLayer):
    """Instance normalization layer, as ``torch.nn.InstanceNorm1d/2d/3d``.

    Batched input, channels on ``axis``; see :func:`bnfast.instance_norm`.

    Parameters
    ----------
    num_features : int
        C, the number of channels.
    eps : float, optional
        Added to the variance.
    momentum : float or None, optional
        Weight of a batch in the running statistics (None: 0).
    affine : bool, optional
        Learnable ``weight`` (ones) and ``bias`` (zeros), shape (C,); off by
        default, as in PyTorch.
    track_running_stats : bool, optional
        Keep running statistics, updated in training mode and used in eval
        mode; off by default.
    axis : int, optional
        The channel axis (not 0): 1, or -1 for channels last.
    dtype : dtype, optional
        Float32 (the default), float64, float16 or bfloat16; a float32
        layer also takes float16 and bfloat16 input (mixed precision).

    Raises
    ------
    TypeError, ValueError
        For a non-positive ``num_features``, ``eps``/``momentum`` out of
        range or a dtype other than float32/float64/float16/bfloat16.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast.nn import InstanceNorm
    >>> layer = InstanceNorm(2, dtype=np.float64)
    >>> layer(np.array([[[1.0, 3.0], [2.0, 8.0]]])).round(4)
    array([[[-1.,  1.],
            [-1.,  1.]]])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        axis: int = 1,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, axis, dtype)

    def forward(self, x: ArrayLike) -> FloatArray:
        xa = self._input(x)
        check_batched(self, xa)
        if self.affine or self.track_running_stats:  # per-channel state must fit
            check_channels(self, xa, self.axis, self.num_features)
        use_input_stats = self.training or not self.track_running_stats
        y, mean, rstd = instance_norm(
            xa,
            self.weight,
            self.bias,
            running_mean=self.running_mean,
            running_var=self.running_var,
            use_input_stats=use_input_stats,
            momentum=0.0 if self.momentum is None else self.momentum,
            eps=self.eps,
            axis=self.axis,
            return_stats=True,
        )
        self._saved = (xa.copy(), mean, rstd, use_input_stats)
        return y

    forward.__doc__ = _doc(
        _FORWARD_DOC,
        shape=", (N, C, ...) with C on ``axis``",
        extra=", or has one spatial element in training mode",
    )

    def backward(self, dy: ArrayLike) -> FloatArray:
        x, mean, rstd, use_input_stats = self._saved_or_raise()
        dx, dweight, dbias = instance_norm_backward(
            dy, x, mean, rstd, self.weight, axis=self.axis, use_input_stats=use_input_stats
        )
        self.grad_weight, self.grad_bias = (
            (self._grad(dweight), self._grad(dbias)) if self.affine else (None, None)
        )
        return dx

    backward.__doc__ = _doc(_BACKWARD_DOC, bias="/``grad_bias``", params="``affine``")


class GroupNorm(Layer):
    """Group normalization layer, as ``torch.nn.GroupNorm``.

    Channels on ``axis``; see :func:`bnfast.group_norm`.

    Parameters
    ----------
    num_groups : int
        Number of groups; must divide ``num_channels``.
    num_channels : int
        C, the number of channels.
    eps : float, optional
        Added to the variance.
    affine : bool, optional
        Learnable ``weight`` (ones) and ``bias`` (zeros), shape (C,).
    axis : int, optional
        The channel axis (not 0): 1, or -1 for channels last.
    dtype : dtype, optional
        Float32 (the default), float64, float16 or bfloat16; a float32
        layer also takes float16 and bfloat16 input (mixed precision).

    Raises
    ------
    TypeError, ValueError
        For non-positive counts, ``num_groups`` not dividing
        ``num_channels``, a negative ``eps`` or a dtype other than
        float32/float64/float16/bfloat16.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast.nn import GroupNorm
    >>> layer = GroupNorm(1, 2, eps=0.0, dtype=np.float64)
    >>> layer(np.array([[[1.0, 3.0], [5.0, 7.0]]])).round(4)
    array([[[-1.3416, -0.4472],
            [ 0.4472,  1.3416]]])
    """

    _state_keys = ("weight", "bias")

    num_groups: int
    """The number of groups."""
    num_channels: int
    """C, the number of channels."""
    eps: float
    """Added to the variance."""
    affine: bool
    """Whether the layer has ``weight`` and ``bias``."""
    axis: int
    """The channel axis of the input."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        axis: int = 1,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(dtype)
        self.num_groups = positive_int(num_groups, "num_groups")
        self.num_channels = positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(
                f"num_channels must be divisible by num_groups (got num_channels="
                f"{self.num_channels}, num_groups={self.num_groups})"
            )
        self.eps = check_eps(eps)
        self.affine = bool(affine)
        self.axis = axis
        if self.affine:
            self.weight = np.ones(self.num_channels, dtype=self.dtype)
            self.bias = np.zeros(self.num_channels, dtype=self.dtype)

    def forward(self, x: ArrayLike) -> FloatArray:
        xa = self._input(x)
        check_channels(self, xa, self.axis, self.num_channels)
        y, mean, rstd = group_norm(
            xa,
            self.num_groups,
            self.weight,
            self.bias,
            eps=self.eps,
            axis=self.axis,
            return_stats=True,
        )
        self._saved = (xa.copy(), mean, rstd)
        return y

    forward.__doc__ = _doc(_FORWARD_DOC, shape=", (N, C, ...) with C on ``axis``", extra="")

    def backward(self, dy: ArrayLike) -> FloatArray:
        x, mean, rstd = self._saved_or_raise()
        dx, dweight, dbias = group_norm_backward(
            dy, x, mean, rstd, self.num_groups, self.weight, axis=self.axis
        )
        self.grad_weight, self.grad_bias = (
            (self._grad(dweight), self._grad(dbias)) if self.affine else (None, None)
        )
        return dx

    backward.__doc__ = _doc(_BACKWARD_DOC, bias="/``grad_bias``", params="``affine``")

    def __repr__(self) -> str:
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}, axis={self.axis})"
        )


class LayerNorm(Layer):
    """Layer normalization layer, as ``torch.nn.LayerNorm``.

    Over the trailing ``normalized_shape``; see :func:`bnfast.layer_norm`.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        The shape of the trailing axes normalized over.
    eps : float, optional
        Added to the variance.
    elementwise_affine : bool, optional
        Learnable ``weight`` (ones) of ``normalized_shape``.
    bias : bool, optional
        With ``elementwise_affine``: also a learnable ``bias`` (zeros).
    dtype : dtype, optional
        Float32 (the default), float64, float16 or bfloat16; a float32
        layer also takes float16 and bfloat16 input (mixed precision).

    Raises
    ------
    TypeError, ValueError
        For an empty or non-positive ``normalized_shape``, a negative
        ``eps`` or a dtype other than float32/float64/float16/bfloat16.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast.nn import LayerNorm
    >>> layer = LayerNorm(3, dtype=np.float64)
    >>> layer(np.array([[1.0, 2.0, 3.0]])).round(4)
    array([[-1.2247,  0.    ,  1.2247]])
    """

    _state_keys = ("weight", "bias")

    normalized_shape: tuple[int, ...]
    """The shape of the trailing axes normalized over."""
    eps: float
    """Added to the variance."""
    elementwise_affine: bool
    """Whether the layer has a ``weight`` (and, unless ``bias=False``, a ``bias``)."""

    def __init__(
        self,
        normalized_shape: Union[int, tuple[int, ...]],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(dtype)
        self.normalized_shape = shape_tuple(normalized_shape, "normalized_shape")
        self.eps = check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = np.ones(self.normalized_shape, dtype=self.dtype)
            if bias:
                self.bias = np.zeros(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: ArrayLike) -> FloatArray:
        xa = self._input(x)
        axes = check_trailing(self, xa, self.normalized_shape)
        y, mean, rstd = layer_norm(
            xa, self.weight, self.bias, axis=axes, eps=self.eps, return_stats=True
        )
        self._saved = (xa.copy(), mean, rstd, axes)
        return y

    forward.__doc__ = _doc(_FORWARD_DOC, shape=" ending with ``normalized_shape``", extra="")

    def backward(self, dy: ArrayLike) -> FloatArray:
        x, mean, rstd, axes = self._saved_or_raise()
        dx, dweight, dbias = layer_norm_backward(dy, x, mean, rstd, self.weight, axis=axes)
        self.grad_weight = self._grad(dweight) if self.weight is not None else None
        self.grad_bias = self._grad(dbias) if self.bias is not None else None
        return dx

    backward.__doc__ = _doc(_BACKWARD_DOC, bias="/``grad_bias``", params="the parameter")

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None})"
        )


class RMSNorm(Layer):
    """RMS normalization layer, as ``torch.nn.RMSNorm``.

    Over the trailing ``normalized_shape``; see :func:`bnfast.rms_norm`.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        The shape of the trailing axes normalized over.
    eps : float or None, optional
        Added to the mean of the squares; None for ``finfo(dtype).eps``.
    elementwise_affine : bool, optional
        Learnable ``weight`` (ones) of ``normalized_shape``.
    dtype : dtype, optional
        Float32 (the default), float64, float16 or bfloat16; a float32
        layer also takes float16 and bfloat16 input (mixed precision).

    Raises
    ------
    TypeError, ValueError
        For an empty or non-positive ``normalized_shape``, a negative
        ``eps`` or a dtype other than float32/float64/float16/bfloat16.

    Examples
    --------
    >>> import numpy as np
    >>> from bnfast.nn import RMSNorm
    >>> layer = RMSNorm(2, dtype=np.float64)
    >>> layer(np.array([[3.0, 4.0]])).round(4)
    array([[0.8485, 1.1314]])
    """

    _state_keys = ("weight",)

    normalized_shape: tuple[int, ...]
    """The shape of the trailing axes normalized over."""
    eps: Optional[float]
    """Added to the mean of the squares (None: ``finfo(dtype).eps``)."""
    elementwise_affine: bool
    """Whether the layer has a ``weight``."""

    def __init__(
        self,
        normalized_shape: Union[int, tuple[int, ...]],
        eps: Optional[float] = None,
        elementwise_affine: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(dtype)
        self.normalized_shape = shape_tuple(normalized_shape, "normalized_shape")
        self.eps = None if eps is None else check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = np.ones(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: ArrayLike) -> FloatArray:
        xa = self._input(x)
        axes = check_trailing(self, xa, self.normalized_shape)
        y, rstd = rms_norm(xa, self.weight, axis=axes, eps=self.eps, return_stats=True)
        self._saved = (xa.copy(), rstd, axes)
        return y

    forward.__doc__ = _doc(_FORWARD_DOC, shape=" ending with ``normalized_shape``", extra="")

    def backward(self, dy: ArrayLike) -> FloatArray:
        x, rstd, axes = self._saved_or_raise()
        dx, dweight = rms_norm_backward(dy, x, rstd, self.weight, axis=axes)
        self.grad_weight = self._grad(dweight) if self.weight is not None else None
        self.grad_bias = None
        return dx

    backward.__doc__ = _doc(_BACKWARD_DOC, bias="", params="``weight``")

    def __repr__(self) -> str:
        return (
            f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine})"
        )
