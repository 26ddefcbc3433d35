"""Argument checks shared by the public functions (one place, both backends)."""

from __future__ import annotations

import importlib
import math
import numbers
import sys
from typing import Any, Optional, Union, cast

import numpy as np
from numpy.typing import NDArray

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError  # type: ignore[attr-defined,no-redef]

FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Half precision: float16, and bfloat16 -- a dtype NumPy itself does not
# have (ml_dtypes, the package JAX uses, adds it). bfloat16 is recognised by
# its dtype's name, so bnfast never imports ml_dtypes to look at an array:
# whoever made a bfloat16 array has imported it already. Half-precision data
# is stored as it comes and computed in float32 (its compute dtype):
# parameters, returned statistics and parameter gradients are float32.
HALF_NAMES = ("float16", "bfloat16")
ACCEPTED_FLOATS = "float32, float64, float16 or bfloat16"


def is_bfloat16(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (a 2-byte non-structured type)."""
    return (
        dtype.kind == "V"
        and dtype.itemsize == 2
        and dtype.names is None
        and (dtype.name == "bfloat16")
    )


def is_half(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (stored in 16 bits, computed in float32)."""
    return dtype == np.float16 or is_bfloat16(dtype)


def is_float_dtype(dtype: np.dtype[Any]) -> bool:
    """float32, float64, float16 or bfloat16: what the kernels take."""
    return dtype in FLOAT_TYPES or is_half(dtype)


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the kernels compute in (and of parameters, returned
    statistics and parameter gradients): float32 for the half types, else
    ``dtype`` itself."""
    return np.dtype(np.float32) if is_half(dtype) else dtype


def machine_eps(dtype: np.dtype[Any]) -> float:
    """``finfo(dtype).eps``, also for bfloat16 (2**-7; NumPy's finfo may not know it)."""
    if is_bfloat16(dtype):
        return 2.0**-7
    return float(np.finfo(dtype).eps)


def resolve_dtype(dtype: object, name: str = "dtype") -> np.dtype[Any]:
    """``dtype`` as a NumPy dtype; the name ``"bfloat16"`` imports ml_dtypes
    (lazily, only then), with a clear error if it is not installed."""
    if isinstance(dtype, str) and dtype.strip().lower() == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError(
                f"{name}='bfloat16' needs the ml_dtypes package (pip install ml_dtypes)"
            ) from None
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise TypeError(f"{name} must be a NumPy dtype, got {dtype!r} ({exc})") from None


# The array types of the public signatures.
FloatArray = NDArray[np.floating[Any]]  # x's dtype (float16/32/64; bfloat16 is typed as this too)
F64Array = NDArray[np.float64]
FloatScalar = np.floating[Any]


# -- containers: PyTorch tensors, DLPack objects, pandas ----------------------
# The one conversion of the public boundary, before any other check (the
# in-place checks of out= and running statistics see its ndarray). The
# optional packages are looked up in sys.modules, never imported: an object
# of a package that was never imported cannot be passed in.


def from_container(obj: object, name: str = "x", *, writable: bool = False) -> object:
    """``obj`` as an ndarray when it is a container NumPy would read wrongly,
    slowly or not at all; anything else unchanged (for ``np.asarray``).

    - a CPU ``torch.Tensor``: an ndarray sharing its memory (bfloat16 through
      ``ml_dtypes``); a tensor that requires grad is read through
      ``detach()`` but refused when ``writable``;
    - another object with ``__dlpack__`` (not an ndarray): ``np.from_dlpack``,
      sharing memory;
    - a pandas DataFrame or Series: its values, nullable columns (``Float64``,
      ``Int64``, ``boolean``) with ``pd.NA`` as NaN; never ``writable``.

    ``writable`` marks arrays bnfast writes in place (``out``, running
    statistics): those must share memory with ``obj`` or are refused with a
    TypeError/ValueError naming ``name`` and the fix."""
    if type(obj) is np.ndarray:
        return obj
    if is_sparse(obj):
        raise TypeError(
            f"{name} is a scipy.sparse matrix, but this needs dense data: pass {name}.toarray() "
            f"(bnfast.Standardizer(with_mean=False) takes CSR/CSC matrices as they are)"
        )
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return _from_torch(torch, obj, name, writable)
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        if writable:
            raise TypeError(
                f"{name} must be a NumPy array (bnfast writes it in place), got a pandas "
                f"{type(obj).__name__}; pass a NumPy array and wrap the result afterwards"
            )
        return _from_pandas(pd, obj, name)
    if not isinstance(obj, np.ndarray) and hasattr(obj, "__dlpack__"):
        return _from_dlpack(obj, name, writable)
    return obj


def is_sparse(x: object) -> bool:
    """Whether ``x`` is a scipy.sparse matrix or array (any format)."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and bool(sp.issparse(x))


def _from_torch(torch: Any, t: Any, name: str, writable: bool) -> np.ndarray:
    if t.device.type != "cpu":
        raise TypeError(
            f"{name} is a torch tensor on {t.device}; bnfast computes on the CPU with NumPy: "
            f"pass {name}.cpu()" + (" and copy the result back" if writable else "")
        )
    if t.layout != torch.strided:
        raise TypeError(f"{name} is a {t.layout} torch tensor; pass {name}.to_dense()")
    if t.requires_grad:
        if writable:
            raise ValueError(
                f"{name} is a torch tensor that requires grad; bnfast cannot update it in "
                f"place behind autograd: pass {name}.detach() (it shares the memory)"
            )
        t = t.detach()  # read only; the NumPy result is outside autograd anyway
    if t.is_conj() or t.is_neg():
        if writable:
            raise ValueError(
                f"{name} is a lazily conjugated/negated torch view; pass a materialized "
                f"tensor ({name}.resolve_conj().resolve_neg())"
            )
        t = t.resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:
        bfloat16 = _ml_dtypes_bfloat16()
        if bfloat16 is None:
            raise TypeError(
                f"{name} is a torch.bfloat16 tensor; reading it needs ml_dtypes "
                f"(pip install ml_dtypes), or pass {name}.float()"
            )
        # Same bits, same memory: int16 in torch, then ml_dtypes' bfloat16.
        return cast(np.ndarray, t.view(torch.int16).numpy().view(bfloat16))
    try:
        return cast(np.ndarray, t.numpy())
    except (TypeError, RuntimeError) as exc:
        raise TypeError(
            f"{name}: a torch tensor of dtype {t.dtype} has no NumPy equivalent ({exc}); "
            f"convert it first, e.g. {name}.float()"
        ) from None


def _ml_dtypes_bfloat16() -> Optional[np.dtype[Any]]:
    try:
        ml_dtypes = importlib.import_module("ml_dtypes")
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _from_dlpack(obj: object, name: str, writable: bool) -> object:
    try:
        arr: np.ndarray = np.from_dlpack(obj)  # type: ignore[arg-type]
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        if not writable and hasattr(obj, "__array__"):
            return obj  # np.asarray reads it (a copy)
        raise TypeError(
            f"{name} ({type(obj).__name__}) could not be read through DLPack ({exc}); "
            f"pass a NumPy array, or an array on the CPU"
        ) from None
    return arr


def _from_pandas(pd: Any, obj: Any, name: str) -> np.ndarray:
    """Values of a DataFrame/Series of numeric or boolean columns; nullable
    extension columns read with NaN for ``pd.NA`` (float32 when every column
    is float32, else float64)."""
    dtypes = list(obj.dtypes) if isinstance(obj, pd.DataFrame) else [obj.dtype]
    types = pd.api.types
    bad = [
        i for i, d in enumerate(dtypes) if not (types.is_numeric_dtype(d) or types.is_bool_dtype(d))
    ]
    if bad:
        what = (
            f"columns {[obj.columns[i] for i in bad[:5]]}"
            if isinstance(obj, pd.DataFrame)
            else f"dtype {obj.dtype}"
        )
        raise TypeError(
            f"{name} must hold real numbers, but the pandas {type(obj).__name__} has "
            f"non-numeric {what}; select or encode the numeric data first "
            f"(e.g. {name}.select_dtypes('number'))"
        )
    if all(isinstance(d, np.dtype) for d in dtypes):
        return cast(np.ndarray, obj.to_numpy())
    # Nullable (extension) dtypes: pd.NA becomes NaN.
    numpy_dtypes = [
        d if isinstance(d, np.dtype) else getattr(d, "numpy_dtype", None) for d in dtypes
    ]
    target = np.float32 if all(d == np.float32 for d in numpy_dtypes) else np.float64
    return cast(np.ndarray, obj.to_numpy(dtype=target, na_value=np.nan))


def normal_in(values: np.ndarray, dtype: np.dtype[Any]) -> bool:
    """Whether every value is 0 or a normal number of ``dtype`` (neither
    overflowing nor subnormal), so that a product with it keeps its digits:
    a per-channel factor that is not (subnormal float32 data make ``1 / std``
    overflow float32) must be applied in float64 instead."""
    info = np.finfo(dtype)
    mag = np.abs(values)
    return bool(np.all((mag <= info.max) & ((mag >= info.tiny) | (mag == 0))))


def as_array(x: object, name: str = "x") -> np.ndarray:
    """A plain ndarray in native byte order (no copy when ``x`` already is one).

    Masked arrays are refused (their mask would be silently ignored); other
    subclasses are viewed as ndarray; big-endian data is converted; torch
    tensors, DLPack objects and pandas data go through
    :func:`from_container`."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array; bnfast would ignore its mask. Pass "
            f"{name}.filled(np.nan) (and handle NaN) or {name}.compressed() instead"
        )
    x = from_container(x, name)
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
    if kind not in "biuf" and not is_bfloat16(arr.dtype):
        what = DTYPE_KIND_NAMES.get(kind, str(arr.dtype))
        raise TypeError(
            f"{name} must hold real numbers (bool, integer or floating), got a {what} "
            f"array (dtype {arr.dtype})"
        )


def is_real_dtype(dtype: np.dtype[Any]) -> bool:
    """bool, integer or floating (bfloat16 included)."""
    return dtype.kind in "biuf" or is_bfloat16(dtype)


def check_float_dtype(arr: np.ndarray, name: str, func: str) -> None:
    if not is_float_dtype(arr.dtype):
        raise TypeError(
            f"{func} expects {name} to be {ACCEPTED_FLOATS}, got {arr.dtype}; "
            f"convert it first, e.g. {name}.astype(np.float32)"
        )


def real_float(value: numbers.Real, name: str) -> float:
    """``float(value)`` of a real number, or ValueError naming ``name`` when
    it is beyond float64's range (a huge Python int, Fraction or Decimal)."""
    try:
        return float(value)
    except (OverflowError, ValueError, ZeroDivisionError):
        raise ValueError(f"{name} is beyond the range of float64, got {value!r:.40}") from None


def check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = real_float(eps, "eps")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a non-negative finite number, got {eps}")
    return eps


def check_momentum(momentum: object) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a real number in [0, 1], got {type(momentum).__name__}")
    momentum = real_float(momentum, "momentum")
    if not (0.0 <= momentum <= 1.0):  # also rejects NaN
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return momentum


def as_flag(value: object, name: str) -> bool:
    """A flag argument as a bool, checked before anything is written (an
    array of several truth values is refused naming the argument)."""
    try:
        return bool(value)
    except Exception as exc:  # e.g. "truth value of an array ... is ambiguous"
        raise TypeError(
            f"{name} must be True or False, got {type(value).__name__} ({exc})"
        ) from None


def check_axis(axis: object, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise AxisError(axis, ndim)
    return axis % ndim


def normalize_axes(axis: object, ndim: int) -> tuple[int, ...]:
    """NumPy's rules: None = all axes; an int or a tuple of ints, negative
    counting from the end; repeats are an error. Returns sorted axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = tuple(check_axis(a, ndim) for a in items)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {axis!r}")
    return tuple(sorted(axes))


def check_out(out: object, shape: tuple[int, ...], dtype: np.dtype[Any], func: str) -> np.ndarray:
    out = from_container(out, "out", writable=True)  # a torch tensor: its memory
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{func}: out must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{func}: out has shape {out.shape}, expected {shape}")
    check_in_place(out, "out", dtype, func)
    return out


def check_in_place(
    arr: np.ndarray,
    name: str,
    dtype: Union[np.dtype[Any], tuple[np.dtype[Any], ...]],
    func: str,
    context: str = "",
) -> None:
    """An ndarray the call writes in place (``out``, running statistics):
    exactly ``dtype`` (or one of a tuple of dtypes, the first the one to
    suggest) in native byte order and writeable. Anything else would need a
    converted copy, and the caller's array would silently keep its old
    values: refused, naming ``name``, the allowed dtypes (``context`` says
    why they are allowed) and the fix."""
    allowed = dtype if isinstance(dtype, tuple) else (dtype,)
    if arr.dtype not in allowed:
        if arr.dtype.newbyteorder("=") in allowed:
            raise ValueError(
                f"{func}: {name} has non-native byte order (dtype {arr.dtype.str}) and is "
                f"written in place, which would go into a converted copy; pass a "
                f"native-order array, e.g. {name} = {name}.astype({name}.dtype.newbyteorder('=')), "
                f"and keep that one"
            )
        expected = " or ".join(str(d) for d in allowed)
        raise TypeError(
            f"{func}: {name} has dtype {arr.dtype}, expected {expected}{context} (it is "
            f"written in place, so it cannot be converted); pass "
            f"{name}.astype(np.{allowed[0].name}) and keep that array"
        )
    if not arr.flags.writeable:
        raise ValueError(
            f"{func}: {name} is read-only, but it is written in place; pass a writeable "
            f"copy ({name}.copy()) and keep that one"
        )


def channel_vector(v: object, name: str, c: int) -> np.ndarray:
    """A per-channel parameter: 1-D, length c, real numbers."""
    arr = as_array(v, name)
    check_real_dtype(arr, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} should be 1-D with {c} elements, got shape {arr.shape}")
    if arr.shape[0] != c:
        raise ValueError(f"{name} should contain {c} elements not {arr.shape[0]}")
    return arr


def check_ddof(ddof: object) -> float:
    """``ddof`` after checking it is a real number (not a bool): an int of
    int64's range as given (exact, like NumPy), any other real (Fraction,
    Decimal, NumPy scalars, larger ints) as a float -- +-inf beyond
    float64's range, which leaves no degrees of freedom (or all of them)."""
    if isinstance(ddof, bool) or not isinstance(ddof, numbers.Real):
        raise TypeError(f"ddof must be a real number, got {type(ddof).__name__}")
    if isinstance(ddof, numbers.Integral) and -(2**63) < int(ddof) < 2**63:
        return cast(float, int(ddof))  # exact: count - ddof in integers
    try:
        return float(ddof)
    except OverflowError:
        return math.inf if cast(Any, ddof) > 0 else -math.inf  # (a huge int or Fraction)


def check_batched(x: np.ndarray, func: str) -> None:
    """Batched input (N, C, ...): at least two dimensions."""
    if x.ndim < 2:
        raise ValueError(
            f"{func} expects x with at least 2 dimensions (N, C, ...), got {x.ndim}-D "
            f"input of shape {x.shape}"
        )


def channel_axis(axis: object, ndim: int, func: str) -> int:
    """The channel axis of batched input: any axis but the batch axis 0."""
    axis = check_axis(axis, ndim)
    if axis == 0:
        raise ValueError(f"{func}: axis 0 is the batch axis; the channel axis must be another one")
    return axis


def check_num_groups(num_groups: object, shape: tuple[int, ...], c: int) -> int:
    """``num_groups`` as an int dividing the channel count ``c``."""
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"num_groups must be an integer, got {type(num_groups).__name__}")
    num_groups = int(num_groups)
    if num_groups < 1 or c % num_groups:
        raise ValueError(
            f"Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {shape} and num_groups={num_groups}"
        )
    return num_groups


def output_for(x: np.ndarray, out: object, func: str) -> np.ndarray:
    """``out`` after validation, or a fresh array laid out like ``x``."""
    if out is None:
        return np.empty_like(x, order="K")
    return check_out(out, x.shape, x.dtype, func)


# -- backward passes ---------------------------------------------------------


def check_grad_pair(dy: object, x: object, func: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dy, x)`` as arrays of one float dtype and one shape."""
    dy = as_array(dy, "dy")
    x = as_array(x)
    check_float_dtype(x, "x", func)
    check_float_dtype(dy, "dy", func)
    if dy.shape != x.shape:
        raise ValueError(f"{func}: dy has shape {dy.shape} but x has shape {x.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"{func}: dy has dtype {dy.dtype} but x has dtype {x.dtype}")
    return dy, x


def saved_stat(v: object, name: str, shape: tuple[int, ...], func: str) -> F64Array:
    """A statistic saved by a forward pass, as float64 of ``shape`` (squeezed
    shapes such as PyTorch's (N, 1) are accepted)."""
    arr = as_array(v, name)
    if not is_real_dtype(arr.dtype):
        raise TypeError(f"{func}: {name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        if arr.size == math.prod(shape) and arr.squeeze().shape == tuple(
            n for n in shape if n != 1
        ):
            arr = arr.reshape(shape)  # e.g. PyTorch's (N, 1) statistics
        else:
            raise ValueError(f"{func}: {name} should have shape {shape}, got {arr.shape}")
    return arr.astype(np.float64)


def grad_weight(weight: object, shape: tuple[int, ...], func: str) -> Optional[F64Array]:
    """The weight of a backward pass as float64 of ``shape``, or None."""
    if weight is None:
        return None
    arr = as_array(weight, "weight")
    if not is_real_dtype(arr.dtype):
        raise TypeError(f"{func}: weight must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{func}: weight should have shape {shape}, got {arr.shape}")
    return arr.astype(np.float64)


def empty_grads(
    x: np.ndarray, param_shape: tuple[int, ...], w: Optional[F64Array]
) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Gradients of an empty input: empty dx, zero parameter gradients (of
    the compute dtype)."""
    zeros = np.zeros(param_shape, dtype=compute_dtype(x.dtype))
    return np.zeros_like(x), (None if w is None else zeros.copy()), zeros
