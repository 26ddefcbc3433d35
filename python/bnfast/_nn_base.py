"""What the layers of :mod:`bnfast.nn` share: train/eval, the call,
gradients, PyTorch-compatible state dicts, and the input checks."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Optional, TypeVar, Union, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._validate import (
    ACCEPTED_FLOATS,
    FloatArray,
    as_array,
    check_eps,
    check_momentum,
    is_float_dtype,
    is_half,
    is_real_dtype,
    resolve_dtype,
)

StateArray = NDArray[Union[np.floating[Any], np.int64]]
_L = TypeVar("_L", bound="Layer")


def positive_int(value: object, name: str) -> int:
    """``value`` as a positive int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def float_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """``dtype`` as a NumPy dtype: float32, float64, float16 or bfloat16."""
    dt = resolve_dtype(dtype)
    if not is_float_dtype(dt):
        raise TypeError(f"dtype must be {ACCEPTED_FLOATS}, got {dt}")
    return dt


def shape_tuple(shape: Union[int, Iterable[int]], name: str) -> tuple[int, ...]:
    """An int or a non-empty tuple of positive ints, as a tuple."""
    is_int = isinstance(shape, numbers.Integral) and not isinstance(shape, bool)
    items = cast(Iterable[object], (shape,) if is_int else shape)
    try:
        result = tuple(positive_int(n, name) for n in items)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {shape!r}") from None
    if not result:
        raise ValueError(f"{name} must not be empty")
    return result


class Layer:
    """What every layer shares: train/eval, the call, gradients, state."""

    _state_keys: ClassVar[tuple[str, ...]] = ()

    dtype: np.dtype[Any]
    """The dtype of the parameters and of the accepted input."""
    training: bool
    """Training mode (batch statistics) or eval mode."""
    weight: Optional[FloatArray]
    """The learnable scale, or None without one."""
    bias: Optional[FloatArray]
    """The learnable shift, or None without one."""
    grad_weight: Optional[FloatArray]
    """Gradient of ``weight`` from the last :meth:`backward` (None before)."""
    grad_bias: Optional[FloatArray]
    """Gradient of ``bias`` from the last :meth:`backward` (None before)."""

    def __init__(self, dtype: DTypeLike) -> None:
        self.dtype = float_dtype(dtype)
        self.training = True
        self.weight = None
        self.bias = None
        self.grad_weight = None
        self.grad_bias = None
        self._saved: Any = None

    # -- mode ---------------------------------------------------------------
    def train(self: _L, mode: bool = True) -> _L:
        """Set training mode (or eval mode with ``mode=False``).

        Parameters
        ----------
        mode : bool, optional
            Training (True) or eval (False) mode.

        Returns
        -------
        Layer
            The layer itself.
        """
        self.training = bool(mode)
        return self

    def eval(self: _L) -> _L:
        """Set eval mode (``train(False)``).

        Returns
        -------
        Layer
            The layer itself.
        """
        return self.train(False)

    def __call__(self, x: ArrayLike) -> FloatArray:
        """``layer(x)`` is ``layer.forward(x)``."""
        return self.forward(x)

    def forward(self, x: ArrayLike) -> FloatArray:  # pragma: no cover - overridden
        """The layer's output for ``x``."""
        raise NotImplementedError

    def backward(self, dy: ArrayLike) -> FloatArray:  # pragma: no cover - overridden
        """The input gradient for ``dy``."""
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Forget the parameter gradients (``grad_weight = grad_bias = None``)."""
        self.grad_weight = None
        self.grad_bias = None

    def parameters(self) -> list[FloatArray]:
        """Return the learnable arrays (weight, bias) that exist.

        Returns
        -------
        list of ndarray
            The parameters themselves, to update in place.
        """
        return [p for p in (self.weight, self.bias) if p is not None]

    # -- input checks -------------------------------------------------------
    def _input(self, x: ArrayLike) -> np.ndarray:
        xa = as_array(x)
        # float32 layers also take float16/bfloat16 input (PyTorch's mixed
        # precision: float32 parameters and running statistics).
        mixed = self.dtype == np.float32 and is_half(xa.dtype)
        if xa.dtype != self.dtype and not mixed:
            raise TypeError(
                f"{type(self).__name__} has {self.dtype} parameters but x is {xa.dtype}; "
                f"create the layer with dtype={xa.dtype.name!r} (or float32 for "
                f"float16/bfloat16 input) or convert x"
            )
        return xa

    def _grad(self, grad: Optional[FloatArray]) -> Optional[FloatArray]:
        """A parameter gradient in the parameters' dtype."""
        return None if grad is None else grad.astype(self.dtype, copy=False)

    def _saved_or_raise(self) -> Any:
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._saved

    # -- state --------------------------------------------------------------
    def _present_keys(self) -> list[str]:
        return [k for k in self._state_keys if getattr(self, k) is not None]

    def state_dict(self) -> dict[str, StateArray]:
        """Return copies of the parameters and buffers, under PyTorch's names.

        Returns
        -------
        dict of str to ndarray
            ``weight``/``bias`` and, for layers tracking running statistics,
            ``running_mean``, ``running_var`` and ``num_batches_tracked``
            (0-d int64), for those that exist.
        """
        state: dict[str, StateArray] = {}
        for key in self._present_keys():
            value = getattr(self, key)
            if key == "num_batches_tracked":
                state[key] = np.array(value, dtype=np.int64)
            else:
                state[key] = np.array(value, copy=True)
        return state

    def load_state_dict(self, state: Mapping[str, ArrayLike], strict: bool = True) -> None:
        """Load parameters and buffers from a state dict.

        The dict comes from :meth:`state_dict` or from the matching PyTorch
        module (values converted with ``.numpy()``).

        Parameters
        ----------
        state : mapping of str to array_like
            Values of the keys :meth:`state_dict` has, of the same shapes.
        strict : bool, optional
            Refuse missing and unexpected keys (else load the keys present).

        Raises
        ------
        TypeError
            If ``state`` is not a mapping or a value is not an array of real
            numbers.
        ValueError
            For missing or unexpected keys (``strict``) or a shape mismatch;
            nothing is loaded then.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"state must be a mapping of names to arrays, got {type(state).__name__}"
            )
        expected = self._present_keys()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing key(s) " + ", ".join(repr(k) for k in missing))
            if unexpected:
                parts.append("unexpected key(s) " + ", ".join(repr(k) for k in unexpected))
            raise ValueError(
                f"Error loading state_dict for {type(self).__name__}: " + "; ".join(parts)
            )
        values = {}
        for key in expected:
            if key not in state:
                continue
            try:
                value = np.asarray(state[key])
            except Exception as exc:
                raise TypeError(f"state_dict entry {key!r} is not array-like: {exc}") from None
            if not is_real_dtype(value.dtype):
                raise TypeError(
                    f"state_dict entry {key!r} must hold real numbers, got {value.dtype}"
                )
            current_shape = () if key == "num_batches_tracked" else getattr(self, key).shape
            if value.shape != current_shape:
                raise ValueError(
                    f"size mismatch for {key!r}: got shape {value.shape}, the layer has "
                    f"shape {current_shape}"
                )
            values[key] = value
        for key, value in values.items():  # all checked: now assign
            if key == "num_batches_tracked":
                setattr(self, key, int(value))
            else:
                getattr(self, key)[...] = value


class RunningStatsLayer(Layer):
    """Shared by BatchNorm and InstanceNorm: per-channel affine parameters
    and optional running statistics (PyTorch's _NormBase)."""

    _state_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    num_features: int
    """C, the number of channels."""
    eps: float
    """Added to the variance."""
    momentum: Optional[float]
    """Weight of a batch in the running statistics (None: cumulative average)."""
    affine: bool
    """Whether the layer has ``weight`` and ``bias`` (ones and zeros at first)."""
    axis: int
    """The channel axis of the input."""
    track_running_stats: bool
    """Whether the layer keeps running statistics."""
    running_mean: Optional[FloatArray]
    """Running mean, shape (C,) (zeros at first), or None when not tracked."""
    running_var: Optional[FloatArray]
    """Running variance, shape (C,) (ones at first), or None when not tracked."""
    num_batches_tracked: Optional[int]
    """Training batches seen, or None when not tracked."""

    def __init__(
        self,
        num_features: int,
        eps: float,
        momentum: Optional[float],
        affine: bool,
        track_running_stats: bool,
        axis: int,
        dtype: DTypeLike,
    ) -> None:
        super().__init__(dtype)
        self.num_features = positive_int(num_features, "num_features")
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
        """Running mean 0, running variance 1, no batches tracked (in place)."""
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_features}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, axis={self.axis})"
        )


def check_batched(layer: Layer, x: np.ndarray) -> None:
    """Batched input (N, C, ...) of at least 2 dimensions."""
    if x.ndim < 2:
        raise ValueError(
            f"{type(layer).__name__} expects batched input (N, C, ...) with at least 2 "
            f"dimensions, got shape {x.shape}"
        )


def check_channels(layer: Layer, x: np.ndarray, axis: int, expected: int) -> None:
    """Batched input with ``expected`` channels on ``axis``."""
    check_batched(layer, x)
    try:
        c = x.shape[axis]
    except (IndexError, TypeError):
        raise ValueError(
            f"{type(layer).__name__}: axis {axis} is out of range for input of shape {x.shape}"
        ) from None
    if c != expected:
        raise ValueError(
            f"{type(layer).__name__} expected {expected} channels on axis {axis}, got input "
            f"of shape {x.shape}"
        )


def check_trailing(layer: Layer, x: np.ndarray, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of the trailing ``shape`` of x (an error if x does not end so)."""
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
        raise ValueError(
            f"{type(layer).__name__} normalizes over trailing shape {shape}, got input of "
            f"shape {x.shape}"
        )
    return tuple(range(x.ndim - k, x.ndim))
