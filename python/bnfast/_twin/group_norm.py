"""The twins of the group-norm kernels: the batched statistics and backward
passes for layouts whose batch and channel axes do not collapse (channels
last). Each works on 4-D (N, A, C, B) views: N samples, each an (A, C, B)
view with the channels on C."""

from __future__ import annotations

import numpy as np

from .batch_norm import batch_norm_backward_apply
from .formulas import F64, FloatArray
from .moments import moments


def _check4(x: FloatArray, name: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (N, A, C, B) view")


def group_norm_moments(x: FloatArray, groups: int) -> tuple[F64, F64]:
    """Per-(sample, group) ``(mean, m2)`` in float64, shape (N, groups), of an
    (N, A, C, B) view: group g holds channels ``[g*C/groups, (g+1)*C/groups)``,
    reduced over A and B.

    The specification is the moments of each (sample, group) taken whole
    (:func:`~bnfast._twin.moments.moments` of one contiguous row per group);
    the kernel merges per-channel moments instead, which differs in the last
    float64 bits only."""
    _check4(x)
    n, a, c, b = x.shape
    if groups < 1 or c % groups:
        raise ValueError("group_norm_moments: groups must divide the channels (axis 2)")
    per = c // groups
    rows = np.transpose(x.reshape(n, a, groups, per, b), (0, 2, 1, 3, 4))
    mean, m2 = moments(rows.reshape(1, n * groups, a * per * b))
    return mean.reshape(n, groups), m2.reshape(n, groups)


def group_norm_backward_reduce(x: FloatArray, dy: FloatArray, center: F64) -> tuple[F64, F64, F64]:
    """Per-(sample, channel) ``(sum(d), sum(dy), sum(dy * d))`` in float64,
    length N*C, ``d = x - center[n*C + c]``, over axes 1 and 3."""
    _check4(x)
    n, _, c, _ = x.shape
    d = x.astype(np.float64) - center.reshape(n, 1, c, 1)
    g = dy.astype(np.float64)
    return (
        d.sum(axis=(1, 3)).ravel(),
        g.sum(axis=(1, 3)).ravel(),
        np.einsum("nacb,nacb->nc", g, d).ravel(),
    )


def group_norm_backward_apply(
    x: FloatArray,
    dy: FloatArray,
    dx: FloatArray,
    hi: FloatArray,
    lo: FloatArray,
    s: FloatArray,
    p: FloatArray,
    q: FloatArray,
    r: FloatArray,
) -> None:
    """``dx = dy * p[k] + ((((x - hi[k]) - lo[k]) * s[k]) * q[k] + r[k]) * s[k]``,
    ``k = n*C + c``, written into dx: batch norm's apply per sample."""
    _check4(x)
    c = x.shape[2]
    for i in range(x.shape[0]):
        k = slice(i * c, (i + 1) * c)
        batch_norm_backward_apply(x[i], dy[i], dx[i], hi[k], lo[k], s[k], p[k], q[k], r[k])
