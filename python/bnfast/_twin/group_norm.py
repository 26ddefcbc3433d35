"""The twins of the group-norm kernels: the forward and the training
backward of a batch in one call. Each works on 4-D (N, A, C, B) views: N
samples, each an (A, C, B) view with the channels on C."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .affine import affine
from .batch_norm import batch_norm_backward_apply
from .formulas import (
    F64,
    FloatArray,
    compute_dtype,
    group_norm_backward_params,
    invstd,
    split_center,
)
from .moments import moments


def _check4(x: FloatArray, name: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D (N, A, C, B) view")


def _group_moments(x: FloatArray, groups: int) -> tuple[F64, F64]:
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
        raise ValueError("group_norm_forward: groups must divide the channels (axis 2)")
    per = c // groups
    rows = np.transpose(x.reshape(n, a, groups, per, b), (0, 2, 1, 3, 4))
    mean, m2 = moments(rows.reshape(1, n * groups, a * per * b))
    return mean.reshape(n, groups), m2.reshape(n, groups)


def _channel_sums(x: FloatArray, dy: FloatArray, center: F64) -> tuple[F64, F64, F64]:
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


def _apply_per_channel(
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


def group_norm_backward_train(
    x: FloatArray,
    dy: FloatArray,
    dx: FloatArray,
    groups: int,
    mean: F64,
    rstd: F64,
    weight: Optional[F64],
) -> tuple[F64, F64]:
    """Training backward of group norm: writes dx, returns per-(sample,
    channel) ``(sum_dy, sum_dy_xc)`` in float64, length N*C, ``sum_dy_xc =
    sum(dy * (x - exact group mean))``.

    ``mean`` and ``rstd`` are the forward's (float64, length N*groups; the
    mean rounded to x's dtype). Per (sample, group): the per-channel sums of
    :func:`_channel_sums` about the stored mean, the parameters
    of :func:`~bnfast._twin.formulas.group_norm_backward_params`, all rounded
    to x's compute dtype (``hi + lo`` the exact mean), then
    :func:`_apply_per_channel`."""
    _check4(x)
    n, a, c, b = x.shape
    if groups < 1 or c % groups:
        raise ValueError("group_norm_backward_train: groups must divide the channels (axis 2)")
    per = c // groups
    mu = np.asarray(mean, dtype=np.float64).reshape(n, groups)
    rs = np.asarray(rstd, dtype=np.float64).reshape(n, groups)
    sum_d, sum_dy, sum_dy_d = _channel_sums(x, dy, np.repeat(mu, per, axis=1).ravel())
    w = None if weight is None else np.asarray(weight, dtype=np.float64).reshape(groups, per)
    shape3 = (n, groups, per)
    t, center, s, q, r = group_norm_backward_params(
        sum_d.reshape(shape3),
        sum_dy.reshape(shape3),
        sum_dy_d.reshape(shape3),
        w,
        float(per * a * b),
        mu,
        rs,
    )
    dtype = compute_dtype(x.dtype)
    hi, lo = split_center(np.repeat(center, per, axis=1).ravel(), dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        p = rs[:, :, None] * (np.ones((groups, per)) if w is None else w)
        params = [np.repeat(v, per, axis=1).ravel().astype(dtype) for v in (s, q, r)]
        _apply_per_channel(
            x, dy, dx, hi, lo, params[0], p.ravel().astype(dtype), params[1], params[2]
        )
    return sum_dy, t.reshape(-1)


def _group_rows(x: FloatArray, per: int) -> bool:
    """Whether each group of an (N, A, C, B) view is one contiguous run of
    at least 16 values (the kernel's row path; its moments are then those
    of the moments kernel over the (N*G, per*B) rows)."""
    n, a, c, b = x.shape
    item = x.itemsize
    return a == 1 and x.strides[3] == item and x.strides[2] == b * item and per * b >= 16


def _normal_scale(scale: F64, dtype: np.dtype) -> np.ndarray:
    """Per value: inf/NaN, 0 or a normal number of dtype."""
    info = np.finfo(dtype)
    mag = np.abs(scale)
    finite = np.isfinite(scale)
    return ~finite | ((mag <= info.max) & ((mag >= info.tiny) | (mag == 0)))


def group_norm_forward(
    x: FloatArray,
    y: FloatArray,
    groups: int,
    weight: Optional[F64],
    bias: Optional[F64],
    eps: float,
    zero_var_rstd: bool,
) -> tuple[F64, F64, np.ndarray]:
    """Group norm of an (N, A, C, B) view into y: returns float64 ``(mean,
    m2)`` and bool ``done``, each (N, groups).

    Per (sample, group): the moments (:func:`~bnfast._twin.moments.moments`
    of the group's run when its channels are one contiguous run of >= 16
    values, else :func:`_group_moments`), ``rstd = invstd(m2, count,
    eps)`` (0 where ``m2 == 0 == eps`` with ``zero_var_rstd``), and
    :func:`~bnfast._twin.affine.affine` with ``hi + lo = mean``, ``scale =
    rstd * weight[c]``, ``shift = bias[c]`` rounded to x's compute dtype. A
    group with a finite scale that is neither 0 nor normal in that dtype is
    not written (``done`` False)."""
    _check4(x)
    n, a, c, b = x.shape
    if groups < 1 or c % groups:
        raise ValueError("group_norm_forward: groups must divide the channels (axis 2)")
    per = c // groups
    if a * b == 0:
        nan = np.full((n, groups), np.nan)
        return nan, nan.copy(), np.ones((n, groups), bool)
    if _group_rows(x, per):
        mean, m2 = moments(x.reshape(1, n * groups, per * b))
        mean, m2 = mean.reshape(n, groups), m2.reshape(n, groups)
    else:
        mean, m2 = _group_moments(x, groups)
    rstd = invstd(m2, per * a * b, eps)
    if zero_var_rstd and eps == 0:
        rstd[m2 == 0] = 0.0
    dtype = compute_dtype(x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.repeat(rstd, per, axis=1)
        if weight is not None:
            scale = scale * weight
        shift = np.broadcast_to(np.zeros(c) if bias is None else bias, (n, c))
        done = np.asarray(_normal_scale(scale, dtype).reshape(n, groups, per).all(axis=2))
        hi, lo = split_center(np.repeat(mean, per, axis=1), dtype)
        scale_t, shift_t = scale.astype(dtype), shift.astype(dtype)
    for i in range(n):
        if done[i].all():  # (the common case: one call per sample)
            affine(x[i], y[i], hi[i], lo[i], scale_t[i], shift_t[i])
            continue
        for g in np.flatnonzero(done[i]):
            ch = slice(g * per, (g + 1) * per)
            affine(x[i][:, ch], y[i][:, ch], hi[i, ch], lo[i, ch], scale_t[i, ch], shift_t[i, ch])
    return mean, m2, done
