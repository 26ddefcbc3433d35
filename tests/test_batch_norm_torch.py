"""bnfast.batch_norm (the forward) parity with torch.nn.functional.batch_norm
and torch.native_batch_norm, under every backend."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import LAYOUTS, make_values, needs_torch, torch, with_layout

pytestmark = needs_torch
F = None if torch is None else torch.nn.functional

# (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W) with the edge sizes
# 1, 7, 15, 16, 17, 33, 1023 on the reduced and channel dims, and H*W == 1.
SHAPES = [
    (7, 1023),
    (1023, 7),
    (16, 33),
    (17, 15),
    (2, 1),
    (33, 16),
    (7, 16, 33),
    (1, 17, 15),
    (33, 1, 16),
    (2, 1023, 1),
    (15, 7, 17),
    (2, 3, 1, 1),
    (16, 17, 1, 1),
    (15, 16, 7, 17),
    (1, 7, 33, 16),
    (4, 33, 15, 1),
    (2, 7, 3, 5, 16),
    (1, 15, 1, 1, 17),
    (3, 1, 2, 7, 1),
]


def torch_bn(x, rm, rv, w, b, training, momentum, eps, axis):
    """Run torch with the channel axis moved to position 1; returns numpy."""
    t = lambda a: None if a is None else torch.from_numpy(np.array(a))  # noqa: E731
    xt = torch.from_numpy(np.moveaxis(np.asarray(x), axis, 1).copy(order="C"))
    rmt, rvt = t(rm), t(rv)
    y = F.batch_norm(xt, rmt, rvt, t(w), t(b), training=training, momentum=momentum, eps=eps)
    y = np.moveaxis(y.numpy(), 1, axis)
    return y, (None if rmt is None else rmt.numpy()), (None if rvt is None else rvt.numpy())


def assert_matches_torch(y, yt, x, axis, w, eps=1e-5, training=False):
    """Compare with torch's output element-wise.

    Base tolerance: rtol = atol = 1e-5 for float32 (outputs are O(1)); 1e-10
    for float64 (both libraries compute in double: rounding order only).
    Widened by the rounding of (x - mean) amplified by invstd*|w|
    (16 ulp of |x| + |mean|), which only matters for channels whose variance
    is << eps (e.g. constant channels, where torch's own mean is inexact).
    """
    assert y.dtype == x.dtype and y.shape == x.shape
    x64 = x.astype(np.float64)
    ax = axis % x.ndim
    red = tuple(i for i in range(x.ndim) if i != ax)
    bs = [1] * x.ndim
    bs[ax] = x.shape[ax]
    mean = x64.mean(axis=red, keepdims=True)
    invstd = 1 / np.sqrt(x64.var(axis=red, keepdims=True) + eps)
    aw = 1.0 if w is None else np.abs(w.astype(np.float64)).reshape(bs)
    amp = 16 * np.finfo(x.dtype).eps * (np.abs(x64) + np.abs(mean)) * np.maximum(invstd, 1) * aw
    base = 1e-5 if x.dtype == np.float32 else 1e-10
    err = np.abs(y.astype(np.float64) - yt.astype(np.float64))
    tol = base + base * np.abs(yt) + amp
    # Constant channels: torch's mean of n equal values is off by up to ~n
    # ulps (naive summation), and invstd = 1/sqrt(eps) amplifies that; bnfast
    # is exact there (tested against exact values elsewhere). Compare only
    # that both are finite.
    constant = np.broadcast_to(
        x64.min(axis=red, keepdims=True) == x64.max(axis=red, keepdims=True), x.shape
    )
    tol = np.where(constant & np.isfinite(yt), np.inf, tol)
    bad = ~(err <= tol)
    if bad.any() and training and w is None:
        # Offset data with a small spread (mean -50, std 0.01): torch's own
        # float64 variance is then off by ~1e-9 relative. Where torch and
        # bnfast disagree, bnfast must match the exact (fsum) normalization
        # to the base tolerance: the disagreement is then torch's error.
        exact = _exact_training_output(x64, ax, eps)
        bad &= ~(np.abs(y.astype(np.float64) - exact) <= base + base * np.abs(exact) + amp)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{bad.sum()} of {bad.size} elements differ from torch; max err {np.nanmax(err):.3g}; "
            f"first at {i}: bnfast {y[i]!r} torch {yt[i]!r}"
        )


def _exact_training_output(x64, ax, eps):
    """(x - mean) / sqrt(var + eps) per channel with exactly rounded sums."""
    moved = np.moveaxis(x64, ax, 0)
    out = np.empty_like(moved)
    for c in range(moved.shape[0]):
        v = moved[c].ravel()
        m = math.fsum(v) / v.size
        var = math.fsum((v - m) ** 2) / v.size
        out[c] = (moved[c] - m) / math.sqrt(var + eps)
    return np.moveaxis(out, 0, ax)


def _params(rng, C, dtype, affine=True, running=True):
    w = (rng.standard_normal(C) + 1).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    rm = rng.standard_normal(C).astype(dtype) if running else None
    rv = rng.uniform(0.5, 2.0, C).astype(dtype) if running else None
    return w, b, rm, rv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["train", "train-norunning", "eval"])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch(backend, shape, axis, mode, dtype):
    rng = np.random.default_rng(abs(hash((shape, axis))) % 2**32)
    x = (rng.standard_normal(shape) * 1.5 + 0.3).astype(dtype)
    C = shape[axis]
    training = mode != "eval"
    if training and x.size // C < 2:
        pytest.skip("fewer than 2 values per channel (covered in test_batch_norm.py)")
    w, b, rm, rv = _params(rng, C, dtype, running=(mode != "train-norunning"))
    yt, rmt, rvt = torch_bn(x, rm, rv, w, b, training, 0.1, 1e-5, axis)
    y = bnfast.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5, axis=axis)
    assert_matches_torch(y, yt, x, axis, w)
    if rm is not None:
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(rm, rmt, rtol=tol, atol=tol)
        np.testing.assert_allclose(rv, rvt, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", ["none", "weight", "bias", "both"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_affine_variants_match_torch(backend, dtype, which, training):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 17, 5, 3)).astype(dtype)
    w, b, rm, rv = _params(rng, 17, dtype)
    w = w if which in ("weight", "both") else None
    b = b if which in ("bias", "both") else None
    yt, rmt, rvt = torch_bn(x, rm, rv, w, b, training, 0.3, 1e-3, 1)
    y = bnfast.batch_norm(x, rm, rv, w, b, training=training, momentum=0.3, eps=1e-3)
    assert_matches_torch(y, yt, x, 1, w, eps=1e-3)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(rm, rmt, rtol=tol, atol=tol)
    np.testing.assert_allclose(rv, rvt, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [1, -1])
def test_saved_stats_match_torch(backend, dtype, axis):
    """return_stats=True in training == torch.native_batch_norm's save_mean/save_invstd."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((16, 7, 33)) * 3 + 2).astype(dtype)
    C = x.shape[axis]
    xt = torch.from_numpy(np.moveaxis(x, axis, 1).copy(order="C"))
    _, smean, sinv = torch.native_batch_norm(xt, None, None, None, None, True, 0.1, 1e-5)
    y, mean, invstd = bnfast.batch_norm(x, training=True, axis=axis, return_stats=True)
    assert mean.shape == invstd.shape == (C,)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(mean, smean.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(invstd, sinv.numpy(), rtol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_nan_inf_propagate_like_torch(backend, dtype, training):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 4, 5)).astype(dtype)
    x[2, 1, 3] = np.nan
    x[4, 2, 0] = np.inf
    x[1, 3, 1] = -np.inf
    w, b, rm, rv = _params(rng, 4, dtype)
    yt, rmt, rvt = torch_bn(x, rm, rv, w, b, training, 0.1, 1e-5, 1)
    with np.errstate(all="ignore"):
        y = bnfast.batch_norm(x, rm, rv, w, b, training=training)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(yt))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(yt))
    fin = np.isfinite(yt)
    np.testing.assert_allclose(y[fin], yt[fin], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.isnan(rm), np.isnan(rmt))
    np.testing.assert_array_equal(np.isnan(rv), np.isnan(rvt))


@settings(max_examples=50)
@given(data=st.data())
def test_property_matches_torch(backend, data):
    nd = data.draw(st.integers(2, 5))
    sizes = [1, 2, 3, 7, 15, 16, 17, 33]
    shape, prod = [], 1
    for _ in range(nd):
        d = data.draw(st.sampled_from([s for s in sizes if prod * s <= 20_000]))
        shape.append(d)
        prod *= d
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    axis = data.draw(st.sampled_from([1, -1]))
    training = data.draw(st.booleans())
    C = shape[axis]
    if training and prod // C < 2:
        training = False
    affine, running = data.draw(st.booleans()), data.draw(st.booleans()) or not training
    momentum = data.draw(st.sampled_from([0.1, 0.0, 0.9, 1.0]))
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    layout = data.draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = with_layout(make_values(rng, tuple(shape), dtype, "normal"), layout, rng)
    w, b, rm, rv = _params(rng, C, dtype, affine, running)
    yt, rmt, rvt = torch_bn(x, rm, rv, w, b, training, momentum, eps, axis)
    y = bnfast.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps, axis=axis)
    assert_matches_torch(y, yt, x, axis, w, eps=eps, training=training)
    if rm is not None:
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(rm, rmt, rtol=tol, atol=tol * max(1.0, float(np.abs(rmt).max())))
        np.testing.assert_allclose(rv, rvt, rtol=tol, atol=tol * max(1.0, float(np.abs(rvt).max())))
