"""The twin of the affine kernel."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .formulas import FloatArray, store, widen


def affine(
    x: FloatArray,
    y: FloatArray,
    center_hi: Optional[FloatArray],
    center_lo: Optional[FloatArray],
    scale: FloatArray,
    shift: FloatArray,
    param_stride_a: int = 0,
) -> None:
    """``y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p]`` with
    ``p = a * param_stride_a + c``, or ``y = x * scale[p] + shift[p]`` when
    ``center_hi`` is None; written into the (A, C, B) view y. Parameters are
    of x's compute dtype (float32 for float16/bfloat16 x)."""
    check_xy(x, y)
    a, c = x.shape[0], x.shape[1]

    def per_ac(p: Any) -> Any:
        if param_stride_a == 0:
            return p[None, :, None]
        idx = np.arange(a)[:, None] * param_stride_a + np.arange(c)[None, :]
        return p[idx][:, :, None]

    xc = widen(x)  # half precision: computed in float32, rounded once into y
    with np.errstate(invalid="ignore", over="ignore"):
        if center_hi is None:
            store(y, xc * per_ac(scale) + per_ac(shift))
        else:
            store(y, ((xc - per_ac(center_hi)) - per_ac(center_lo)) * per_ac(scale) + per_ac(shift))


def check_xy(x: FloatArray, y: FloatArray) -> None:
    """An output of x's shape that can be written."""
    if y.shape != x.shape:
        raise ValueError("x and y must have the same shape")
    if not y.flags.writeable:
        raise ValueError("y is read-only")
