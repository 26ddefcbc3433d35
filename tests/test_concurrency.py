"""Many Python threads calling bnfast at once: results bit-identical to a
serial run, shared state (running statistics, one Standardizer) loses
nothing, and threads(n) stays on its own thread.

The native calls release the GIL, so these threads really overlap. Every
thread is joined with a timeout: a deadlock fails the test instead of
hanging the suite. A short GIL switch interval makes Python-level races (the
NumPy twin's read-modify-write) show up too.
"""

import copy
import pickle
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import NATIVE_CHOICES, runtime

N_THREADS = 8
JOIN_TIMEOUT = 300  # seconds; far above the few seconds these take


@pytest.fixture(autouse=True)
def _short_switch_interval():
    """Switch the GIL often, so Python-level races get their chance."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


# Locking does not depend on the CPU capability: the NumPy twin and the best
# native level are enough for the slower tests.
TWO_BACKENDS = ["numpy", *NATIVE_CHOICES[-1:]]


@pytest.fixture(params=TWO_BACKENDS, ids=TWO_BACKENDS)
def some_backend(request):
    """The NumPy backend and the best native capability."""
    with runtime.using(request.param):
        yield request.param


def run_threads(target, n=N_THREADS):
    """Run ``target(i)`` on ``n`` threads released together; their results
    in order. An exception in a thread is raised here; a thread still
    running after JOIN_TIMEOUT fails the test."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        try:
            barrier.wait(JOIN_TIMEOUT)
            results[i] = target(i)
        except BaseException as exc:  # handed back to the test
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in pool), "a thread hung (deadlock?)"
    if errors:
        raise errors[0]
    return results


# --------------------------------------------------------------------------
# Concurrent calls compute what serial calls compute
# --------------------------------------------------------------------------
def _inputs(dtype):
    rng = np.random.default_rng(11)
    # 65,536 elements: above the size where the native kernels use threads.
    x = (rng.standard_normal((16, 8, 32, 16)) * 3 + 5).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    w = rng.uniform(0.5, 1.5, 8)
    b = rng.uniform(-1, 1, 8)
    return x, dy, w, b


def _ops(x, dy, w, b):
    """name -> a call returning arrays (tuples flattened by _bits)."""
    rm = np.full(8, 4.0, dtype=x.dtype)
    rv = np.full(8, 2.0, dtype=x.dtype)

    def bn_backward():
        _, mean, invstd = bnfast.batch_norm(x, weight=w, bias=b, training=True, return_stats=True)
        return bnfast.batch_norm_backward(dy, x, mean, invstd, w)

    def ln_backward():
        _, mean, rstd = bnfast.layer_norm(x, axis=(2, 3), return_stats=True)
        return bnfast.layer_norm_backward(dy, x, mean, rstd, axis=(2, 3))

    return {
        "mean_var": lambda: bnfast.mean_var(x, axis=(0, 2, 3)),
        "mean_var_flat": lambda: bnfast.mean_var(x, axis=None),
        "batch_norm_train": lambda: bnfast.batch_norm(x, weight=w, bias=b, training=True),
        "batch_norm_stats": lambda: bnfast.batch_norm(x, training=True, return_stats=True),
        "batch_norm_eval": lambda: bnfast.batch_norm(x, rm, rv, w, b),
        "batch_norm_nhwc": lambda: bnfast.batch_norm(
            np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=True, axis=-1
        ),
        "batch_norm_backward": bn_backward,
        "layer_norm": lambda: bnfast.layer_norm(x, axis=(2, 3)),
        "layer_norm_backward": ln_backward,
        "rms_norm": lambda: bnfast.rms_norm(x, axis=-1),
        "group_norm": lambda: bnfast.group_norm(x, 4, w, b, return_stats=True),
        "instance_norm": lambda: bnfast.instance_norm(x, w, b),
        "standardize": lambda: bnfast.Standardizer(axis=(0, 2, 3)).fit(x).transform(x),
    }


def _bits(value):
    if isinstance(value, tuple):
        return tuple(_bits(v) for v in value)
    arr = np.asarray(value)
    return (arr.dtype.str, arr.shape, arr.tobytes())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concurrent_calls_match_a_serial_run(backend, dtype):
    ops = _ops(*_inputs(dtype))
    names = sorted(ops)
    with bnfast.threads(1):
        serial = {name: _bits(ops[name]()) for name in names}

    def work(i):
        # Each thread its own order and its own thread count.
        order = names[i % len(names) :] + names[: i % len(names)]
        seen = []
        with bnfast.threads(1 + i % 3):
            for _ in range(2):
                for name in order:
                    seen.append((name, _bits(ops[name]())))
        return seen

    for seen in run_threads(work):
        for name, bits in seen:
            assert bits == serial[name], f"{name}: a concurrent call differs from the serial one"


# --------------------------------------------------------------------------
# Shared running statistics lose no update
# --------------------------------------------------------------------------
# All threads train on the same batch, so every update is the same function
# r -> (1 - m) r + m v: the result does not depend on the order, and N
# updates give exactly what N serial updates give. With a small momentum
# each update still moves the statistics by far more than one ulp, so a lost
# update changes the bits. Many channels and few values each: the update is
# a large part of each call, which gives a race (as without the lock) its
# chance.
MOMENTUM = 0.001
UPDATES_PER_THREAD = 60
C_MANY = 16_384


def _train(kind, x, rm, rv):
    if kind == "batch_norm general":  # return_stats: the Python path
        bnfast.batch_norm(x, rm, rv, training=True, momentum=MOMENTUM, return_stats=True)
    elif kind == "batch_norm fast":  # the C++ fast path (native backends)
        bnfast.batch_norm(x, rm, rv, training=True, momentum=MOMENTUM)
    else:
        bnfast.instance_norm(x, running_mean=rm, running_var=rv, momentum=MOMENTUM)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["batch_norm general", "batch_norm fast", "instance_norm"])
def test_shared_running_statistics_lose_no_update(some_backend, kind, dtype):
    x = (np.random.default_rng(5).standard_normal((2, C_MANY, 2)) * 3 + 5).astype(dtype)

    def fresh():
        return np.zeros(C_MANY, dtype), np.ones(C_MANY, dtype)

    if kind == "batch_norm fast":
        if some_backend == "numpy":
            pytest.skip("the NumPy backend has no fast path")
        probe = runtime.core().batch_norm_fast(
            x, *fresh(), None, None, True, MOMENTUM, 1e-5, 1, None
        )
        assert probe is not None, "the fast path declined these arguments"
    total = N_THREADS * UPDATES_PER_THREAD

    rm_serial, rv_serial = fresh()
    for _ in range(total):
        _train(kind, x, rm_serial, rv_serial)
    one_more = (rm_serial.copy(), rv_serial.copy())
    _train(kind, x, *one_more)  # sanity: one update more changes (nearly) every channel
    assert np.mean(one_more[0] != rm_serial) > 0.99
    assert np.mean(one_more[1] != rv_serial) > 0.99

    rm, rv = fresh()

    def work(i):
        for _ in range(UPDATES_PER_THREAD):
            _train(kind, x, rm, rv)

    run_threads(work)
    assert np.sum(rm != rm_serial) == 0, "running_mean lost updates"
    assert np.sum(rv != rv_serial) == 0, "running_var lost updates"


# --------------------------------------------------------------------------
# One Standardizer shared by threads
# --------------------------------------------------------------------------
def _chunks(n_chunks, rows=2_000, features=6, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, features)) * (1 + i) + 10 * i for i in range(n_chunks)]


@pytest.mark.parametrize("fresh", [True, False], ids=["unfitted", "fitted"])
def test_shared_standardizer_partial_fit_loses_no_sample(backend, fresh):
    chunks = _chunks(N_THREADS * 4)
    serial = bnfast.Standardizer().fit(np.concatenate(chunks))
    shared = bnfast.Standardizer()
    todo = chunks
    if not fresh:  # the race on the first fit, or merges only
        shared.partial_fit(chunks[0])
        todo = chunks[1:]

    def work(i):
        for chunk in todo[i::N_THREADS]:
            shared.partial_fit(chunk)

    run_threads(work)
    assert shared.n_samples_seen_ == serial.n_samples_seen_ == sum(len(c) for c in chunks)
    np.testing.assert_array_equal(shared.moments_.count, serial.moments_.count)
    # The merges ran in another order: equal up to the last bits.
    np.testing.assert_allclose(shared.mean_, serial.mean_, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(shared.var_, serial.var_, rtol=1e-12)
    np.testing.assert_allclose(
        shared.transform(chunks[0]), serial.transform(chunks[0]), rtol=1e-11, atol=1e-11
    )


def test_shared_standardizer_transforms_while_fitting(backend):
    # Half the threads fit, half transform: no error, no sample lost, and
    # every transform uses the mean and scale of one fit.
    chunks = _chunks(13, rows=500)
    st = bnfast.Standardizer().fit(chunks[0])
    probe = chunks[0][:50]

    def work(i):
        if i % 2:
            for chunk in chunks[1:][i // 2 :: N_THREADS // 2]:
                st.partial_fit(chunk)
            return []
        return [st.transform(probe) for _ in range(6)]

    results = run_threads(work)
    assert st.n_samples_seen_ == sum(len(c) for c in chunks)
    assert all(np.all(np.isfinite(y)) for out in results for y in out)


def test_standardizer_with_lock_stays_picklable_and_clonable(tmp_path):
    st = bnfast.Standardizer(axis=0, ddof=1)
    run_threads(lambda i: st.partial_fit(_chunks(1, seed=i)[0]), n=4)
    for twin in (pickle.loads(pickle.dumps(st)), copy.deepcopy(st), copy.copy(st)):
        np.testing.assert_array_equal(twin.mean_, st.mean_)
        assert twin.n_samples_seen_ == st.n_samples_seen_
        twin.partial_fit(_chunks(1, seed=9)[0])  # a lock of its own works
    assert st.n_samples_seen_ == 4 * 2_000  # copies are independent
    clone = type(st)(**st.get_params())
    assert clone.get_params() == st.get_params()
    st.save(tmp_path / "st.npz")
    loaded = bnfast.Standardizer.load(tmp_path / "st.npz")
    np.testing.assert_array_equal(loaded.mean_, st.mean_)
    run_threads(lambda i: loaded.partial_fit(_chunks(1, seed=20 + i)[0]), n=4)
    assert loaded.n_samples_seen_ == 8 * 2_000


def test_sklearn_standardizer_shared_by_threads():
    sk = pytest.importorskip("bnfast.sklearn", reason="scikit-learn is not installed")
    from sklearn.base import clone

    chunks = _chunks(N_THREADS * 2)
    shared = sk.Standardizer()
    run_threads(lambda i: [shared.partial_fit(c) for c in chunks[i::N_THREADS]])
    assert shared.n_samples_seen_ == sum(len(c) for c in chunks)
    assert pickle.loads(pickle.dumps(shared)).n_samples_seen_ == shared.n_samples_seen_
    assert clone(shared).get_params() == shared.get_params()


# --------------------------------------------------------------------------
# threads(n) belongs to its thread
# --------------------------------------------------------------------------
def _in_thread(fn):
    """fn() run on a new Python thread; its result (or exception) here."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive(), "thread did not finish"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_threads_block_is_per_thread():
    # Regression: threads(n) set the process-wide count, so every other
    # thread ran with n too.
    bnfast.set_num_threads(2)
    with bnfast.threads(1):
        assert bnfast.get_num_threads() == 1
        assert _in_thread(bnfast.get_num_threads) == 2
        assert bnfast.config()["num_threads"] == 1
    assert bnfast.get_num_threads() == 2


def test_set_num_threads_inside_a_block_applies_after_it():
    bnfast.set_num_threads(2)
    with bnfast.threads(3):
        bnfast.set_num_threads(1)
        assert bnfast.get_num_threads() == 3  # the block wins on its thread
        assert _in_thread(bnfast.get_num_threads) == 1
    assert bnfast.get_num_threads() == 1


def test_new_threads_start_without_a_block():
    bnfast.set_num_threads(2)
    with bnfast.threads(1):

        def nested():
            with bnfast.threads(3):
                return bnfast.get_num_threads()

        assert _in_thread(nested) == 3
        assert bnfast.get_num_threads() == 1


def test_blocks_ending_out_of_order_on_one_thread():
    # Two generators interleave their blocks: each restores only itself.
    bnfast.set_num_threads(2)

    def gen(n):
        with bnfast.threads(n):
            yield bnfast.get_num_threads()
            yield bnfast.get_num_threads()

    a, b = gen(1), gen(3)
    assert next(a) == 1
    assert next(b) == 3
    a.close()  # a's block ends first: b's is still open
    assert bnfast.get_num_threads() == 3
    b.close()
    assert bnfast.get_num_threads() == 2


@settings(max_examples=25)
@given(
    plans=st.lists(
        st.lists(st.integers(1, 8), min_size=1, max_size=4), min_size=2, max_size=N_THREADS
    ),
    exit_order=st.randoms(use_true_random=False),
)
def test_threads_blocks_of_many_threads_do_not_interfere(plans, exit_order):
    # Regression: threads(n) was process-wide, and blocks of two threads that
    # ended out of order left the wrong count behind (17 of 20 trials).
    bnfast.set_num_threads(2)
    n = len(plans)
    inside = threading.Barrier(n)
    # Every thread opens all its blocks, then the threads close theirs one
    # thread after another in a random order: thread order[k] goes k-th,
    # while the others still have theirs open.
    order = list(range(n))
    exit_order.shuffle(order)
    turn = threading.Condition()
    done = [0]

    def work(i):
        plan, blocks = plans[i], []
        for count in plan:
            blocks.append(bnfast.threads(count))
            blocks[-1].__enter__()
            assert bnfast.get_num_threads() == count
        inside.wait(JOIN_TIMEOUT)
        assert bnfast.get_num_threads() == plan[-1]
        with turn:
            assert turn.wait_for(lambda: order[done[0]] == i, JOIN_TIMEOUT)
        assert bnfast.get_num_threads() == plan[-1]  # others' exits left it alone
        while blocks:
            blocks.pop().__exit__(None, None, None)
            assert bnfast.get_num_threads() == (plan[len(blocks) - 1] if blocks else 2)
        with turn:
            done[0] += 1
            turn.notify_all()

    run_threads(work, n=n)
    assert bnfast.get_num_threads() == 2
