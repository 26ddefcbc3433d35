"""Small helpers shared by the normalization functions."""

from __future__ import annotations

import numpy as np

from ._validate import check_out


def split_center(mean64: np.ndarray, dtype: np.dtype) -> tuple:
    """mean = hi + lo in ``dtype``: ``x - hi`` is exact for x near the mean, so
    float32 data is centred on the float64 mean to float32 precision."""
    hi = np.ascontiguousarray(mean64, dtype=dtype)
    lo = np.ascontiguousarray(mean64 - hi, dtype=dtype)
    return hi, lo


def as_param(values, dtype: np.dtype) -> np.ndarray:
    """A contiguous 1-D parameter vector of ``dtype`` for the kernels."""
    return np.ascontiguousarray(np.ravel(values), dtype=dtype)


def output_for(x: np.ndarray, out, func: str) -> np.ndarray:
    """``out`` after validation, or a fresh array laid out like ``x``."""
    if out is None:
        return np.empty_like(x, order="K")
    return check_out(out, x.shape, x.dtype, func)
