"""Argument checks shared by the public functions (one place, both backends)."""

from __future__ import annotations

import math
import numbers

import numpy as np

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(x, name: str = "x") -> np.ndarray:
    """A plain ndarray in native byte order (no copy when ``x`` already is one).

    Masked arrays are refused (their mask would be silently ignored); other
    subclasses are viewed as ndarray; big-endian data is converted."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; bnfast would ignore its mask. Pass "
            f"{name}.filled(np.nan) (and handle NaN) or {name}.compressed() instead"
        )
    if type(x) is not np.ndarray:
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} could not be converted to a NumPy array: {exc}") from None
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return x


# Names of the dtype kinds that are not real numbers, for error messages.
DTYPE_KIND_NAMES = {
    "c": "complex",
    "O": "object",
    "U": "string",
    "S": "bytes",
    "V": "structured/void",
    "M": "datetime",
    "m": "timedelta",
}


def check_real_dtype(arr: np.ndarray, name: str) -> None:
    """Reject dtypes that have no meaningful mean/variance."""
    kind = arr.dtype.kind
    if kind not in "biuf":
        what = DTYPE_KIND_NAMES.get(kind, str(arr.dtype))
        raise TypeError(
            f"{name} must hold real numbers (bool, integer or floating), got a {what} "
            f"array (dtype {arr.dtype})"
        )


def check_float_dtype(arr: np.ndarray, name: str, func: str) -> None:
    if arr.dtype not in FLOAT_TYPES:
        raise TypeError(
            f"{func} expects {name} to be float32 or float64, got {arr.dtype}; "
            f"convert it first, e.g. {name}.astype(np.float32)"
        )


def check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a non-negative finite number, got {eps}")
    return eps


def check_momentum(momentum) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a real number in [0, 1], got {type(momentum).__name__}")
    momentum = float(momentum)
    if not (0.0 <= momentum <= 1.0):  # also rejects NaN
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return momentum


def check_axis(axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise AxisError(axis, ndim)
    return axis % ndim


def normalize_axes(axis, ndim: int) -> tuple:
    """NumPy's rules: None = all axes; an int or a tuple of ints, negative
    counting from the end; repeats are an error. Returns sorted axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = tuple(check_axis(a, ndim) for a in items)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(axes))


def check_out(out, shape: tuple, dtype: np.dtype, func: str) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{func}: out must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{func}: out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"{func}: out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{func}: out is read-only")
    return out


def channel_vector(v, name: str, c: int) -> np.ndarray:
    """A per-channel parameter: 1-D, length c, real numbers."""
    arr = as_array(v, name)
    check_real_dtype(arr, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} should be 1-D with {c} elements, got shape {arr.shape}")
    if arr.shape[0] != c:
        raise ValueError(f"{name} should contain {c} elements not {arr.shape[0]}")
    return arr
