"""Type stubs for the native module (internal; use the bnfast package)."""

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

_F64 = NDArray[np.float64]
_Float = NDArray[np.floating[Any]]

compiler: str

# runtime
def all_capabilities() -> list[str]: ...
def capability() -> str: ...
def set_capability(name: str) -> None: ...
def compiled_capabilities() -> list[str]: ...
def supported_capabilities() -> list[str]: ...
def openmp() -> bool: ...
def default_num_threads() -> int: ...
def usable_cores() -> int: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def get_thread_num_threads() -> int | None: ...
def set_thread_num_threads(n: int | None) -> None: ...
def get_thread_limit() -> int | None: ...
def set_thread_limit(n: int | None) -> None: ...
def get_hard_thread_limit() -> int | None: ...
def set_hard_thread_limit(n: int | None) -> None: ...
def get_interrupt_bytes() -> int: ...
def set_interrupt_bytes(n: int) -> None: ...
def l2_cache_bytes() -> int: ...
def set_l2_cache_bytes(n: int) -> None: ...

# moments
def moments(x: _Float) -> tuple[_F64, _F64]: ...

# affine
def affine(
    x: _Float,
    y: _Float,
    center_hi: _Float | None,
    center_lo: _Float | None,
    scale: _Float,
    shift: _Float,
    param_stride_a: int = 0,
) -> None: ...

# batch_norm
def batch_norm_train(
    x: _Float, y: _Float, weight: _F64 | None, bias: _F64 | None, eps: float
) -> tuple[_F64, _F64]: ...
def batch_norm_backward_reduce(x: _Float, dy: _Float, center: _F64) -> tuple[_F64, _F64, _F64]: ...
def batch_norm_backward_apply(
    x: _Float,
    dy: _Float,
    dx: _Float,
    hi: _Float,
    lo: _Float,
    s: _Float,
    p: _Float,
    q: _Float,
    r: _Float,
) -> None: ...
def batch_norm_backward_train(
    x: _Float, dy: _Float, dx: _Float, mean: _F64, invstd: _F64, weight: _F64 | None
) -> tuple[_F64, _F64]: ...
def batch_norm_fast(
    x: object,
    running_mean: object,
    running_var: object,
    weight: object,
    bias: object,
    training: object,
    momentum: object,
    eps: object,
    axis: object,
    out: object,
    /,
) -> _Float | None: ...
def batch_norm_backward_fast(
    dy: object,
    x: object,
    mean: object,
    invstd: object,
    weight: object,
    axis: object,
    training: object,
    out: object,
    /,
) -> tuple[_Float, _Float | None, _Float] | None: ...

# layer_norm (layer and RMS norm)
def layer_norm_forward(
    x: _Float, y: _Float, weight: _Float, bias: _Float, eps: float, rms: bool
) -> tuple[_F64, _F64, _F64]: ...
def layer_norm_backward(
    x: _Float,
    dy: _Float,
    dx: _Float,
    mean: _F64,
    rstd: _F64,
    weight: _Float,
    rms: bool,
) -> tuple[_F64, _F64]: ...
def layer_norm_fast(
    x: object, weight: object, bias: object, axis: object, eps: object, rms: bool, out: object, /
) -> _Float | None: ...

# group_norm (batched (N, A, C, B) views: group and instance norm of a batch in one call)
def group_norm_forward(
    x: _Float,
    y: _Float,
    groups: int,
    weight: _F64 | None,
    bias: _F64 | None,
    eps: float,
    zero_var_rstd: bool,
) -> tuple[_F64, _F64, NDArray[np.bool_]]: ...
def group_norm_backward_train(
    x: _Float,
    dy: _Float,
    dx: _Float,
    groups: int,
    mean: _F64,
    rstd: _F64,
    weight: _F64 | None,
) -> tuple[_F64, _F64]: ...

# formulas (per channel, float64)
def invstd(m2: _F64, count: float, eps: float) -> _F64: ...
def eval_fold(
    mean: _F64, invstd: _F64, weight: _F64 | None, bias: _F64 | None
) -> tuple[_F64, _F64]: ...
def running_update(running: _Float, value: _F64, momentum: float) -> None: ...
def split_center(mean: _F64, dtype: DTypeLike) -> tuple[_Float, _Float]: ...

# memory_floor (the benchmark's floor pass)
def memory_floor(src: NDArray[Any], dst: NDArray[Any], fill: int = 0) -> int: ...
