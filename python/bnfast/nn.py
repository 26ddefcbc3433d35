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

import numbers
from collections.abc import Mapping

import numpy as np

from ._batch_norm import batch_norm, batch_norm_backward
from ._group_norm import group_norm, group_norm_backward, instance_norm, instance_norm_backward
from ._layer_norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from ._validate import FLOAT_TYPES, as_array, check_eps, check_momentum

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _float_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_TYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _shape_tuple(shape, name: str) -> tuple:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = tuple(_positive_int(n, name) for n in shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {shape!r}") from None
    if not shape:
        raise ValueError(f"{name} must not be empty")
    return shape


class _Layer:
    """What every layer shares: train/eval, the call, gradients, state."""

    _state_keys: tuple = ()

    def __init__(self, dtype) -> None:
        self.dtype = _float_dtype(dtype)
        self.training = True
        self.weight = None
        self.bias = None
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None

    # -- mode ---------------------------------------------------------------
    def train(self, mode: bool = True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):  # pragma: no cover - overridden
        raise NotImplementedError

    def zero_grad(self) -> None:
        self.grad_weight = None
        self.grad_bias = None

    def parameters(self) -> list:
        """The learnable arrays (weight, bias) that exist."""
        return [p for p in (self.weight, self.bias) if p is not None]

    # -- input checks -------------------------------------------------------
    def _input(self, x) -> np.ndarray:
        x = as_array(x)
        if x.dtype != self.dtype:
            raise TypeError(
                f"{type(self).__name__} has {self.dtype} parameters but x is {x.dtype}; "
                f"create the layer with dtype=np.{x.dtype} or convert x"
            )
        return x

    def _saved_or_raise(self):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._saved

    # -- state --------------------------------------------------------------
    def _present_keys(self) -> list:
        return [k for k in self._state_keys if getattr(self, k) is not None]

    def state_dict(self) -> dict:
        """Copies of the parameters and buffers, under PyTorch's key names."""
        state = {}
        for key in self._present_keys():
            value = getattr(self, key)
            if key == "num_batches_tracked":
                state[key] = np.array(value, dtype=np.int64)
            else:
                state[key] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state: Mapping, strict: bool = True) -> None:
        """Load parameters and buffers saved by :meth:`state_dict` or by the
        matching PyTorch module (values converted with ``.numpy()``)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of names to arrays, got {type(state).__name__}")
        expected = self._present_keys()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing key(s) " + ", ".join(repr(k) for k in missing))
            if unexpected:
                parts.append("unexpected key(s) " + ", ".join(repr(k) for k in unexpected))
            raise ValueError(f"Error loading state_dict for {type(self).__name__}: " + "; ".join(parts))
        values = {}
        for key in expected:
            if key not in state:
                continue
            try:
                value = np.asarray(state[key])
            except Exception as exc:
                raise TypeError(f"state_dict entry {key!r} is not array-like: {exc}") from None
            if value.dtype.kind not in "biuf":
                raise TypeError(f"state_dict entry {key!r} must hold real numbers, got {value.dtype}")
            current_shape = () if key == "num_batches_tracked" else getattr(self, key).shape
            if value.shape != current_shape:
                raise ValueError(
                    f"size mismatch for {key!r}: got shape {value.shape}, the layer has "
                    f"shape {current_shape}"
                )
            values[key] = value
        for key, value in values.items():  # all checked: now assign
            if key == "num_batches_tracked":
                self.num_batches_tracked = int(value)
            else:
                getattr(self, key)[...] = value


class _RunningStatsLayer(_Layer):
    """Shared by BatchNorm and InstanceNorm: per-channel affine parameters
    and optional running statistics (PyTorch's _NormBase)."""

    _state_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, axis, dtype):
        super().__init__(dtype)
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = check_eps(eps)
        self.momentum = None if momentum is None else check_momentum(momentum)
        self.affine = bool(affine)
        self.axis = axis
        if self.affine:
            self.weight = np.ones(self.num_features, dtype=self.dtype)
            self.bias = np.zeros(self.num_features, dtype=self.dtype)
        self.track_running_stats = bool(track_running_stats)
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, dtype=self.dtype)
            self.running_var = np.ones(self.num_features, dtype=self.dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = None
            self.running_var = None
            self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked = 0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}, axis={self.axis})")


class BatchNorm(_RunningStatsLayer):
    """Batch normalization over the channel ``axis`` (1 for (N, C, ...), -1
    for channels last), as ``torch.nn.BatchNorm1d/2d/3d``."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, axis=1, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, axis, dtype)

    def forward(self, x):
        x = self._input(x)
        _check_channels(self, x, self.axis, self.num_features)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        use_batch_stats = self.training or not self.track_running_stats
        y, mean, invstd = batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=use_batch_stats, momentum=factor, eps=self.eps, axis=self.axis,
            return_stats=True,
        )
        self._saved = (x.copy(), mean, invstd, use_batch_stats)
        return y

    def backward(self, dy):
        x, mean, invstd, use_batch_stats = self._saved_or_raise()
        dx, dweight, dbias = batch_norm_backward(
            dy, x, mean, invstd, self.weight, axis=self.axis, training=use_batch_stats
        )
        self.grad_weight, self.grad_bias = (dweight, dbias) if self.affine else (None, None)
        return dx


class InstanceNorm(_RunningStatsLayer):
    """Instance normalization, as ``torch.nn.InstanceNorm1d/2d/3d`` (batched
    input, channels on ``axis``)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, axis=1, dtype=np.float32):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, axis, dtype)

    def forward(self, x):
        x = self._input(x)
        _check_batched(self, x)
        if self.affine or self.track_running_stats:  # per-channel state must fit
            _check_channels(self, x, self.axis, self.num_features)
        use_input_stats = self.training or not self.track_running_stats
        y, mean, rstd = instance_norm(
            x, self.weight, self.bias, running_mean=self.running_mean,
            running_var=self.running_var, use_input_stats=use_input_stats,
            momentum=0.0 if self.momentum is None else self.momentum, eps=self.eps,
            axis=self.axis, return_stats=True,
        )
        self._saved = (x.copy(), mean, rstd, use_input_stats)
        return y

    def backward(self, dy):
        x, mean, rstd, use_input_stats = self._saved_or_raise()
        dx, dweight, dbias = instance_norm_backward(
            dy, x, mean, rstd, self.weight, axis=self.axis, use_input_stats=use_input_stats
        )
        self.grad_weight, self.grad_bias = (dweight, dbias) if self.affine else (None, None)
        return dx


class GroupNorm(_Layer):
    """Group normalization, as ``torch.nn.GroupNorm`` (channels on ``axis``)."""

    _state_keys = ("weight", "bias")

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, axis=1,
                 dtype=np.float32):
        super().__init__(dtype)
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = _positive_int(num_channels, "num_channels")
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

    def forward(self, x):
        x = self._input(x)
        _check_channels(self, x, self.axis, self.num_channels)
        y, mean, rstd = group_norm(x, self.num_groups, self.weight, self.bias, eps=self.eps,
                                   axis=self.axis, return_stats=True)
        self._saved = (x.copy(), mean, rstd)
        return y

    def backward(self, dy):
        x, mean, rstd = self._saved_or_raise()
        dx, dweight, dbias = group_norm_backward(dy, x, mean, rstd, self.num_groups,
                                                 self.weight, axis=self.axis)
        self.grad_weight, self.grad_bias = (dweight, dbias) if self.affine else (None, None)
        return dx

    def __repr__(self) -> str:
        return (f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, axis={self.axis})")


class LayerNorm(_Layer):
    """Layer normalization over the trailing ``normalized_shape``, as
    ``torch.nn.LayerNorm``."""

    _state_keys = ("weight", "bias")

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        super().__init__(dtype)
        self.normalized_shape = _shape_tuple(normalized_shape, "normalized_shape")
        self.eps = check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = np.ones(self.normalized_shape, dtype=self.dtype)
            if bias:
                self.bias = np.zeros(self.normalized_shape, dtype=self.dtype)

    def forward(self, x):
        x = self._input(x)
        axes = _check_trailing(self, x, self.normalized_shape)
        y, mean, rstd = layer_norm(x, self.weight, self.bias, axis=axes, eps=self.eps,
                                   return_stats=True)
        self._saved = (x.copy(), mean, rstd, axes)
        return y

    def backward(self, dy):
        x, mean, rstd, axes = self._saved_or_raise()
        dx, dweight, dbias = layer_norm_backward(dy, x, mean, rstd, self.weight, axis=axes)
        self.grad_weight = dweight if self.weight is not None else None
        self.grad_bias = dbias if self.bias is not None else None
        return dx

    def __repr__(self) -> str:
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None})")


class RMSNorm(_Layer):
    """RMS normalization over the trailing ``normalized_shape``, as
    ``torch.nn.RMSNorm`` (``eps=None`` -> ``finfo(dtype).eps``)."""

    _state_keys = ("weight",)

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        super().__init__(dtype)
        self.normalized_shape = _shape_tuple(normalized_shape, "normalized_shape")
        self.eps = None if eps is None else check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        if self.elementwise_affine:
            self.weight = np.ones(self.normalized_shape, dtype=self.dtype)

    def forward(self, x):
        x = self._input(x)
        axes = _check_trailing(self, x, self.normalized_shape)
        y, rstd = rms_norm(x, self.weight, axis=axes, eps=self.eps, return_stats=True)
        self._saved = (x.copy(), rstd, axes)
        return y

    def backward(self, dy):
        x, rstd, axes = self._saved_or_raise()
        dx, dweight = rms_norm_backward(dy, x, rstd, self.weight, axis=axes)
        self.grad_weight = dweight if self.weight is not None else None
        self.grad_bias = None
        return dx

    def __repr__(self) -> str:
        return (f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


def _check_batched(layer, x: np.ndarray) -> None:
    if x.ndim < 2:
        raise ValueError(
            f"{type(layer).__name__} expects batched input (N, C, ...) with at least 2 "
            f"dimensions, got shape {x.shape}"
        )


def _check_channels(layer, x: np.ndarray, axis, expected: int) -> None:
    _check_batched(layer, x)
    try:
        c = x.shape[axis]
    except (IndexError, TypeError):
        raise ValueError(f"{type(layer).__name__}: axis {axis} is out of range for input of shape {x.shape}") from None
    if c != expected:
        raise ValueError(
            f"{type(layer).__name__} expected {expected} channels on axis {axis}, got input "
            f"of shape {x.shape}"
        )


def _check_trailing(layer, x: np.ndarray, shape: tuple) -> tuple:
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(
            f"{type(layer).__name__} normalizes over trailing shape {shape}, got input of "
            f"shape {x.shape}"
        )
    return tuple(range(x.ndim - k, x.ndim))
