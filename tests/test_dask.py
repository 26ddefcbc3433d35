"""Dask arrays through the public API (issue 15), on a real cluster.

The cluster is a ``distributed.LocalCluster`` of two worker processes with
one thread each, started once for the module. Chunkings cut channels, rows
and groups at odd places; every result is compared with the NumPy path of
bnfast on the same data (itself tested against NumPy/PyTorch/scikit-learn
elsewhere), with dask's own reductions and, when installed, dask-ml.

Tolerances: float32 results are float64 statistics rounded once; a merge in
another order changes the float64 value by a few units of 1e-16 relative,
which moves the float32 result by at most one float32 ulp (F32_ULPS). Float64
results may differ by the rounding of the merges themselves: a handful of
float64 ulps of the data's magnitude (F64_RTOL, 64 ulps leaves room for the
log2(blocks) merges of the tree). For a variance that magnitude is
max|x| * std, not the variance: a merged mean rounds at ulp(max|x|), and the
between-block term 2 * delta * (mean error) moves M2 by that times std.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array", reason="dask is not installed")
distributed = pytest.importorskip("distributed", reason="distributed is not installed")
import dask  # noqa: E402

import bnfast  # noqa: E402
from bnfast import _dask  # noqa: E402

F32_ULPS = 1
F64_RTOL = 64 * np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each (startup cost paid once)."""
    cluster = distributed.LocalCluster(
        processes=True,
        n_workers=2,
        threads_per_worker=1,
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def close(actual, expected, dtype=None, scale=None):
    """``actual`` (dask or NumPy) equals ``expected`` within the module's
    tolerance for the dtype; float64 absolute tolerance relative to
    ``scale`` (default: the largest finite expected value)."""
    a = np.asarray(actual.compute() if hasattr(actual, "compute") else actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert a.dtype == e.dtype, (a.dtype, e.dtype)
    if e.dtype == np.float32:
        with np.errstate(invalid="ignore"):
            diff = np.abs(a.astype(np.float64) - e)
            ok = (a == e) | (np.isnan(a) & np.isnan(e)) | (diff <= F32_ULPS * np.spacing(np.abs(e)))
        assert ok.all(), (
            f"{int((~ok).sum())} values differ by more than {F32_ULPS} ulp: {a[~ok]} vs {e[~ok]}"
        )
    else:
        if scale is None:
            finite = np.abs(e[np.isfinite(e)])
            scale = finite.max() if finite.size else 0.0
        np.testing.assert_allclose(a, e, rtol=F64_RTOL, atol=F64_RTOL * scale, equal_nan=True)


# Chunkings of a (37, 10, 6) array that cut rows, channels and spatial axes
# at odd places (single-element blocks, uneven tails, one block).
CHUNKS = [(37, 10, 6), (9, 3, 4), (2, 7, 6), ((30, 7), (1, 9), (2, 3, 1))]


def close_all(actual, expected):
    """:func:`close` for sequences, computed in one go (None matches None)."""
    pairs = [(a, e) for a, e in zip(actual, expected) if e is not None]
    assert len(actual) == len(expected)
    assert all((a is None) == (e is None) for a, e in zip(actual, expected))
    values = dask.compute(*[a for a, _ in pairs])
    for a, (_, e) in zip(values, pairs):
        close(a, e)


def data(shape=(37, 10, 6), dtype=np.float32, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2.0 + offset).astype(dtype)


def test_import_does_not_import_dask():
    code = (
        "import sys, numpy as np, bnfast; bnfast.mean_var(np.ones(3)); "
        "bnfast.Standardizer().fit(np.ones((3, 2))); "
        "assert not [m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed', 'xarray', 'zarr')], 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "chunks, axis, dtype",
    [
        (CHUNKS[0], 0, np.float32),
        (CHUNKS[1], (0, 2), np.float32),
        (CHUNKS[2], None, np.float64),
        (CHUNKS[3], -1, np.float64),
        (CHUNKS[3], 0, np.int16),
        (CHUNKS[1], (1,), np.float64),
        (CHUNKS[2], (0, 1), np.float32),
    ],
)
def test_mean_var_matches_numpy_path(client, chunks, axis, dtype):
    x = data(dtype=np.float64) * 100
    x = x.astype(dtype)
    d = da.from_array(x, chunks=chunks)
    mean, var = bnfast.mean_var(d, axis=axis, ddof=1)
    assert isinstance(mean, da.Array) and isinstance(var, da.Array)  # lazy
    em, ev = bnfast.mean_var(x, axis=axis, ddof=1)
    m, v = dask.compute(mean, var)
    close(m, np.asarray(em))
    close(v, np.asarray(ev))


def test_mean_var_keepdims_and_against_dask(client):
    x = data(dtype=np.float64)
    d = da.from_array(x, chunks=(5, 3, 4))
    mean, var = bnfast.mean_var(d, axis=(0, 2), keepdims=True)
    assert mean.shape == (1, 10, 1)
    dm, dv = dask.compute(d.mean(axis=(0, 2), keepdims=True), d.var(axis=(0, 2), keepdims=True))
    # dask's own reductions (sums of powers in float64) agree to ~1e-15 here.
    np.testing.assert_allclose(mean.compute(), dm, rtol=1e-13)
    np.testing.assert_allclose(var.compute(), dv, rtol=1e-13)


def test_result_does_not_depend_on_chunking(client):
    x = data(shape=(201, 5, 3), offset=1e4)  # large mean: merges must be exact
    results = []
    for chunks in [(201, 5, 3), (1, 5, 3), (13, 2, 3), (100, 1, 1)]:
        results.append(dask.compute(*bnfast.mean_var(da.from_array(x, chunks=chunks), axis=0)))
    for m, v in results[1:]:
        close(m, results[0][0])
        close(v, results[0][1])


@pytest.mark.parametrize("chunks", CHUNKS[1:])
def test_moments_computes_small_result_and_merges(client, chunks):
    x = data(dtype=np.float64)
    m = bnfast.moments(da.from_array(x, chunks=chunks), axis=(0, 2))
    assert isinstance(m, bnfast.Moments)
    e = bnfast.moments(x, axis=(0, 2))
    assert np.array_equal(m.count, e.count) and m.count.dtype == np.int64
    close(m.mean, e.mean)
    close(m.m2, e.m2)


def test_moments_pickle_small_and_cheap():
    m = bnfast.moments(data(dtype=np.float64), axis=0)  # (10, 6) slots
    blob = pickle.dumps(m)
    # Three (10, 6) arrays of 8 bytes plus headers: no hidden payload.
    assert len(blob) < 3 * m.mean.nbytes + 1000, len(blob)
    assert pickle.loads(blob) == m
    t0 = time.perf_counter()
    for _ in range(200):
        pickle.loads(pickle.dumps(m))
    assert (time.perf_counter() - t0) / 200 < 5e-3  # well under a task's overhead


@pytest.mark.parametrize("chunks", [(7, 2), (50, 1), ((1, 99, 100), 3)])
@pytest.mark.parametrize("nan_policy", ["omit", "propagate"])
@pytest.mark.parametrize("weighted", [False, True])
def test_standardizer_fit_nan_weights(client, chunks, nan_policy, weighted):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3)) * [1.0, 10.0, 1e3] + [0.0, -5.0, 1e5]
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 1] = np.where(np.arange(200) < 120, np.nan, x[:, 1])  # NaN-only blocks
    w = rng.random(200) if weighted else None
    st = bnfast.Standardizer(nan_policy=nan_policy).fit(
        da.from_array(x, chunks=chunks), sample_weight=w
    )
    ref = bnfast.Standardizer(nan_policy=nan_policy).fit(x, sample_weight=w)
    close(st.mean_, ref.mean_)
    close(st.var_, ref.var_)
    np.testing.assert_allclose(st.n_samples_seen_, ref.n_samples_seen_, rtol=F64_RTOL)
    # Weights given as a dask array of other chunks give the same.
    if weighted:
        st2 = bnfast.Standardizer(nan_policy=nan_policy).fit(
            da.from_array(x, chunks=chunks), sample_weight=da.from_array(w, chunks=33)
        )
        close(st2.var_, ref.var_)


def test_standardizer_transform_lazy_and_inverse(client):
    x = data(dtype=np.float32, offset=1e3)
    x0 = x.copy()
    d = da.from_array(x, chunks=(5, 3, 4))  # blocks are views of x
    st = bnfast.Standardizer(axis=0).fit(d)
    ref = bnfast.Standardizer(axis=0).fit(x)
    close(st.mean_, ref.mean_)
    y = st.transform(d)
    assert isinstance(y, da.Array) and y.dtype == np.float32
    close(y, ref.transform(x))
    close(st.inverse_transform(y), ref.inverse_transform(ref.transform(x)))
    assert np.array_equal(x, x0)  # input blocks never written
    for params in ({"with_mean": False}, {"with_std": False}):
        st = bnfast.Standardizer(**params).fit(d[:, :, 0])
        ref = bnfast.Standardizer(**params).fit(x[:, :, 0])
        close(st.transform(d[:, :, 0]), ref.transform(x[:, :, 0]))


@pytest.mark.parametrize(
    "in_dtype, out_dtype",
    [
        (np.float64, np.float32),  # rounding: computed in float64, rounded once
        (np.float32, np.float64),  # exact: computed in float64
        (np.uint8, np.float16),  # exact
        (np.int32, np.float16),  # rounding
        (np.float32, np.float32),
    ],
)
@pytest.mark.parametrize("params", [{}, {"with_mean": False, "with_std": False}])
def test_standardizer_output_dtype(in_dtype, out_dtype, params):
    # Standardizer(dtype=...) on a dask array gives the NumPy path's result,
    # bit for bit (the dask path ignored dtype: float64 came out).
    x = (data(dtype=np.float64, offset=50.0) * 10).astype(in_dtype)
    d = da.from_array(x, chunks=(5, 3, 4))
    st = bnfast.Standardizer(axis=0, dtype=out_dtype, **params).fit(x)
    y = st.transform(d)
    assert y.dtype == np.dtype(out_dtype)
    want = st.transform(x)
    got = y.compute(scheduler="synchronous")
    assert got.dtype == want.dtype == np.dtype(out_dtype)
    np.testing.assert_array_equal(got, want)
    back = st.inverse_transform(da.from_array(want, chunks=(5, 3, 4)))
    np.testing.assert_array_equal(back.compute(scheduler="synchronous"), st.inverse_transform(want))


def test_standardizer_partial_fit_merges(client):
    x = data(dtype=np.float64)[:, :, 0]
    st = bnfast.Standardizer()
    st.partial_fit(da.from_array(x[:20], chunks=7))
    st.partial_fit(x[20:])  # a NumPy chunk after a dask one
    ref = bnfast.Standardizer().fit(x)
    close(st.mean_, ref.mean_)
    close(st.var_, ref.var_)
    assert st.n_samples_seen_ == 37


def test_standardizer_errors(client):
    x = data(dtype=np.float64)[:, :, 0]
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bnfast.Standardizer(nan_policy="raise").fit(da.from_array(x, chunks=7))
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        bnfast.Standardizer().fit(da.from_array(x, chunks=7))
    st = bnfast.Standardizer().fit(da.from_array(np.ones((4, 2)), chunks=2))
    with pytest.raises(TypeError, match="out="):
        st.transform(da.ones((4, 2)), out=np.empty((4, 2)))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        d = da.from_array(np.arange(10.0), chunks=3)
        bnfast.mean_var(d[d > 3])
    with pytest.raises(ValueError, match="sample_weight"):
        bnfast.Standardizer().fit(da.ones((4, 2)), sample_weight=np.ones(3))


def test_against_dask_ml_scaler(client):
    dask_ml = pytest.importorskip("dask_ml.preprocessing", reason="dask-ml is not installed")
    x = data(shape=(500, 4), dtype=np.float64, offset=10.0)
    d = da.from_array(x, chunks=(64, 4))
    ours = bnfast.Standardizer().fit(d)
    theirs = dask_ml.StandardScaler().fit(d)
    np.testing.assert_allclose(ours.mean_, np.asarray(theirs.mean_), rtol=1e-12)
    np.testing.assert_allclose(ours.var_, np.asarray(theirs.var_), rtol=1e-10)
    np.testing.assert_allclose(
        ours.transform(d).compute(), theirs.transform(d).compute(), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("chunks, axis", [(CHUNKS[1], 1), (CHUNKS[2], -1), (CHUNKS[3], 1)])
def test_sync_batch_norm(client, chunks, axis):
    x = data(offset=100.0)
    c = x.shape[axis]
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    d = da.from_array(x, chunks=chunks)
    y, mean, invstd = bnfast.batch_norm(
        d, rm, rv, w, b, training=True, axis=axis, return_stats=True
    )
    ref = bnfast.batch_norm(x, rm_ref, rv_ref, w, b, training=True, axis=axis, return_stats=True)
    assert isinstance(y, da.Array)
    close_all((y, mean, invstd), ref)
    close(rm, rm_ref)  # updated once, in place, with the global statistics
    close(rv, rv_ref)
    close(
        bnfast.batch_norm(d, rm, rv, w, b, axis=axis), bnfast.batch_norm(x, rm, rv, w, b, axis=axis)
    )
    dy = data(seed=3, offset=0.0)
    ddy = da.from_array(dy, chunks=CHUNKS[(CHUNKS.index(chunks) + 1) % len(CHUNKS)])
    for training in (True, False):
        got = bnfast.batch_norm_backward(ddy, d, ref[1], ref[2], w, axis=axis, training=training)
        want = bnfast.batch_norm_backward(dy, x, ref[1], ref[2], w, axis=axis, training=training)
        close_all(got, want)


@pytest.mark.parametrize("chunks", CHUNKS[1:])
def test_layer_and_rms_norm_rechunk(client, chunks):
    x = data(dtype=np.float64)
    dy = data(dtype=np.float64, seed=4, offset=0.0)
    d, ddy = da.from_array(x, chunks=chunks), da.from_array(dy, chunks=chunks)
    rng = np.random.default_rng(5)
    w, b = rng.standard_normal((10, 6)), rng.standard_normal((10, 6))
    got = bnfast.layer_norm(d, w, b, axis=(1, 2), return_stats=True)
    want = bnfast.layer_norm(x, w, b, axis=(1, 2), return_stats=True)
    close_all(got, want)
    close_all(
        bnfast.layer_norm_backward(ddy, d, want[1], want[2], w, axis=(1, 2)),
        bnfast.layer_norm_backward(dy, x, want[1], want[2], w, axis=(1, 2)),
    )
    got = bnfast.rms_norm(d, w[0, :], axis=-1, return_stats=True)
    want = bnfast.rms_norm(x, w[0, :], axis=-1, return_stats=True)
    close_all(got, want)
    close_all(
        bnfast.rms_norm_backward(ddy, d, want[1], w[0, :], axis=-1),
        bnfast.rms_norm_backward(dy, x, want[1], w[0, :], axis=-1),
    )


@pytest.mark.parametrize("chunks", CHUNKS[1:])
def test_group_and_instance_norm(client, chunks):
    x = data(shape=(37, 10, 6), dtype=np.float32)
    dy = data(seed=6, offset=0.0)
    d, ddy = da.from_array(x, chunks=chunks), da.from_array(dy, chunks=chunks)
    rng = np.random.default_rng(7)
    w, b = rng.standard_normal(10), rng.standard_normal(10)
    got = bnfast.group_norm(d, 5, w, b, return_stats=True)  # groups of 2 cut by chunks of 3
    want = bnfast.group_norm(x, 5, w, b, return_stats=True)
    close_all(got, want)
    grads = bnfast.group_norm_backward(ddy, d, want[1], want[2], 5, w)
    ref = bnfast.group_norm_backward(dy, x, want[1], want[2], 5, w)
    close(grads[0], ref[0])
    # dweight/dbias: per-block partials rounded to float32, summed in
    # float64: one float32 rounding per batch block (<= 8 blocks here).
    for g, e in zip(grads[1:], ref[1:]):
        np.testing.assert_allclose(g.compute(), e, rtol=8 * np.finfo(np.float32).eps, atol=1e-5)
    rm, rv = np.zeros(10, np.float32), np.ones(10, np.float32)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    got = bnfast.instance_norm(d, w, b, running_mean=rm, running_var=rv, return_stats=True)
    want = bnfast.instance_norm(x, w, b, running_mean=rm_ref, running_var=rv_ref, return_stats=True)
    close_all(got, want)
    close(rm, rm_ref)
    close(rv, rv_ref)
    grads = bnfast.instance_norm_backward(ddy, d, want[1], want[2], w)
    ref = bnfast.instance_norm_backward(dy, x, want[1], want[2], w)
    close(grads[0], ref[0])


def test_diagnose(client):
    x = data(shape=(300, 4), dtype=np.float64)
    x[5, 0] = np.nan
    x[7, 2] = np.inf
    x[:, 3] = 7.0
    d = da.from_array(x, chunks=(41, 3))
    got, want = bnfast.diagnose(d), bnfast.diagnose(x)
    assert got.warnings == want.warnings
    assert got.table() == want.table()
    close(got.std, want.std)


def test_worker_killed_mid_computation_gives_same_result(client):
    """A worker process dies while blocks are being reduced: the scheduler
    reruns its tasks on the survivor (and the restarted worker); the result
    is unchanged."""
    x = data(shape=(400, 8), dtype=np.float64, offset=1e3)
    slow = da.from_array(x, chunks=(10, 8)).map_blocks(_slow_copy, dtype=x.dtype)
    want = bnfast.mean_var(x, axis=0)
    futures = client.compute(list(bnfast.mean_var(slow, axis=0)))
    pids = client.run(os.getpid)
    time.sleep(0.6)  # some blocks done, most not
    # 40 blocks of >= 0.1 s on 2 workers take >= 2 s: still running.
    assert not all(f.done() for f in futures)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    m, v = client.gather(futures)
    close(m, want[0])
    close(v, want[1])
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid) or client.run(os.getpid)[victim] != pids[victim]


def _slow_copy(block):
    time.sleep(0.1)
    return block.copy()


def test_worker_threads_not_oversubscribed(client):
    """distributed's nanny sets OMP_NUM_THREADS=1 in its worker processes:
    bnfast there runs its kernels on one thread, inside tasks too."""
    assert set(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == {"1"}
    assert set(client.run(bnfast.get_num_threads).values()) == {1}
    assert {c["num_threads"] for c in client.run(bnfast.config).values()} == {1}
    counts = da.zeros(4, chunks=1).map_blocks(_threads_in_task, dtype=np.int64).compute()
    assert set(counts.tolist()) == {1}


def _threads_in_task(block):
    return np.array([_dask.task_threads()] * block.size)


def test_threaded_scheduler_divides_threads():
    """On the local threaded scheduler each of its P threads gets the
    process count // P (at least 1) for bnfast's kernels."""
    with bnfast.threads(4), dask.config.set(scheduler="threads", num_workers=2):
        # (threads() is per OS thread: a task thread sees the process setting.)
        counts = da.zeros(4, chunks=1).map_blocks(_threads_in_task, dtype=np.int64).compute()
    expected = max(1, bnfast.get_num_threads() // 2)
    assert set(counts.tolist()) == {expected}


@st.composite
def chunked_arrays(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    axes = draw(st.sets(st.integers(0, ndim - 1), min_size=1))
    seed = draw(st.integers(0, 2**16))
    offset = draw(st.sampled_from([0.0, 1e3]))
    return data(shape, dtype, seed, offset), chunks, tuple(sorted(axes))


@given(chunked_arrays())
def test_mean_var_any_chunking_hypothesis(case):
    """Shapes, chunkings and axes drawn by hypothesis (synchronous
    scheduler: the merge logic, not the cluster)."""
    x, chunks, axes = case
    with dask.config.set(scheduler="sync"):
        got = dask.compute(*bnfast.mean_var(da.from_array(x, chunks=chunks), axis=axes))
        st_got = bnfast.Standardizer(axis=axes).fit(da.from_array(x, chunks=chunks))
    want = bnfast.mean_var(x, axis=axes)
    close(got[0], np.asarray(want[0]))
    var_scale = float(np.abs(x).max()) * float(np.sqrt(np.max(want[1])))
    close(got[1], np.asarray(want[1]), scale=max(var_scale, float(np.max(want[1]))))
    close(st_got.mean_, bnfast.Standardizer(axis=axes).fit(x).mean_)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_half_precision(half, training):
    """float16/bfloat16 dask arrays: float32 parameters and statistics, output
    in the input dtype, the same bits as the NumPy path (the same kernels
    with the same global statistics)."""
    if half == "bfloat16":
        dt = np.dtype(pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes").bfloat16)
    else:
        dt = np.dtype(half)
    rng = np.random.default_rng(3)
    xn = rng.standard_normal((9, 3, 5)).astype(dt)
    dyn = rng.standard_normal((9, 3, 5)).astype(dt)
    x, dy = da.from_array(xn, chunks=(4, 2, 5)), da.from_array(dyn, chunks=(4, 2, 5))
    w = np.linspace(0.5, 2.0, 3, dtype=np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    with dask.config.set(scheduler="sync"):
        y, mean, invstd = bnfast.batch_norm(x, rm, rv, w, training=training, return_stats=True)
        y = y.compute()
        want = bnfast.batch_norm(xn, rm_ref, rv_ref, w, training=training, return_stats=True)
        assert y.dtype == dt and mean.dtype == np.float32 and invstd.dtype == np.float32
        np.testing.assert_array_equal(y.view(np.uint16), want[0].view(np.uint16))
        np.testing.assert_array_equal(rm, rm_ref)
        grads = bnfast.batch_norm_backward(dy, x, want[1], want[2], w, training=training)
        grads_ref = bnfast.batch_norm_backward(dyn, xn, want[1], want[2], w, training=training)
        dx = grads[0].compute()
        assert dx.dtype == dt and grads[2].dtype == np.float32
        # dx: the same kernels and parameters; the sums are merged per block, so
        # allow one ulp of the output dtype.
        close_half = np.abs(dx.astype(np.float64) - grads_ref[0].astype(np.float64))
        ulp = np.spacing(np.abs(grads_ref[0].astype(np.float32))) * (
            2**13 if dt == np.float16 else 2**16
        )
        assert np.all(close_half <= ulp), float(close_half.max())
