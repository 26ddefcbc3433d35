"""Type stubs for the native module (internal; use the bnfast package)."""

from typing import Optional

import numpy as np

compiler: str

def capability() -> str: ...
def set_capability(name: str) -> None: ...
def compiled_capabilities() -> list[str]: ...
def supported_capabilities() -> list[str]: ...
def openmp() -> bool: ...
def default_num_threads() -> int: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
def affine(
    x: np.ndarray,
    y: np.ndarray,
    center_hi: Optional[np.ndarray],
    center_lo: Optional[np.ndarray],
    scale: np.ndarray,
    shift: np.ndarray,
    param_stride_a: int = 0,
) -> None: ...
def batch_norm_train(
    x: np.ndarray,
    y: np.ndarray,
    weight: Optional[np.ndarray],
    bias: Optional[np.ndarray],
    eps: float,
) -> tuple[np.ndarray, np.ndarray]: ...
def bn_backward_reduce(
    x: np.ndarray, dy: np.ndarray, center: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def bn_backward_apply(
    x: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    r: np.ndarray,
) -> None: ...
def bn_backward_train(
    x: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    mean: np.ndarray,
    invstd: np.ndarray,
    weight: Optional[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]: ...
def row_norm_forward(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, rms: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def row_norm_backward(
    x: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray,
    rms: bool,
) -> tuple[np.ndarray, np.ndarray]: ...
def row_affine(
    x: np.ndarray,
    y: np.ndarray,
    center_hi: Optional[np.ndarray],
    center_lo: Optional[np.ndarray],
    scale: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
) -> None: ...
def batch_norm_fast(
    x: object, running_mean: object, running_var: object, weight: object, bias: object,
    training: object, momentum: object, eps: object, axis: object, out: object,
) -> np.ndarray | None: ...
def row_norm_fast(
    x: object, weight: object, bias: object, axis: object, eps: object, rms: bool, out: object,
) -> np.ndarray | None: ...
