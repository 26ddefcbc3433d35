"""pytest-benchmark cases: each bnfast case sits in a group beside its
baselines (np.copyto of the same bytes = the memory floor, and the plain
NumPy expression). Run with ``pytest bench/ --benchmark-only``; CI only
smoke-runs them with ``--benchmark-disable``.
"""

import numpy as np
import pytest

import bnfast

BN_SHAPES = [(32, 64, 56, 56), (8, 256, 14, 14)]
TWO_D = [(262_144, 64), (16_384, 1024)]


def _np_bn_train(x, axis):
    axes = tuple(i for i in range(x.ndim) if i != axis)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5)


@pytest.fixture(params=BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
def nchw(request, rng):
    return rng.standard_normal(request.param, dtype=np.float32)


@pytest.fixture(params=TWO_D, ids=lambda s: "x".join(map(str, s)))
def two_d(request, rng):
    return rng.standard_normal(request.param, dtype=np.float32)


@pytest.mark.parametrize("impl", ["bnfast", "copy", "numpy"])
def test_batch_norm_train_nchw(benchmark, nchw, impl):
    benchmark.group = f"batch_norm train NCHW {nchw.shape}"
    y = np.empty_like(nchw)
    fn = {
        "bnfast": lambda: bnfast.batch_norm(nchw, training=True, out=y),
        "copy": lambda: np.copyto(y, nchw),
        "numpy": lambda: _np_bn_train(nchw, 1),
    }[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["bnfast", "copy", "numpy"])
def test_batch_norm_eval_nchw(benchmark, nchw, impl):
    benchmark.group = f"batch_norm eval NCHW {nchw.shape}"
    c = nchw.shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    y = np.empty_like(nchw)
    fn = {
        "bnfast": lambda: bnfast.batch_norm(nchw, rm, rv, out=y),
        "copy": lambda: np.copyto(y, nchw),
        "numpy": lambda: (nchw - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5),
    }[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["bnfast", "copy", "numpy"])
def test_batch_norm_train_2d(benchmark, two_d, impl):
    benchmark.group = f"batch_norm train 2-D {two_d.shape}"
    y = np.empty_like(two_d)
    fn = {
        "bnfast": lambda: bnfast.batch_norm(two_d, training=True, out=y),
        "copy": lambda: np.copyto(y, two_d),
        "numpy": lambda: _np_bn_train(two_d, 1),
    }[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["bnfast", "copy", "numpy"])
def test_mean_var_axis0(benchmark, two_d, impl):
    benchmark.group = f"mean_var axis=0 {two_d.shape}"
    y = np.empty_like(two_d)
    fn = {
        "bnfast": lambda: bnfast.mean_var(two_d, axis=0),
        "copy": lambda: np.copyto(y, two_d),
        "numpy": lambda: (two_d.mean(axis=0), two_d.var(axis=0)),
    }[impl]
    benchmark(fn)
