"""pytest-benchmark cases: each bnfast case sits in a group beside its
baselines -- np.copyto of the same array (the memory floor), the plain NumPy
expression, PyTorch (CPU, same thread count) when installed, and
scikit-learn's StandardScaler for dataset statistics when installed.
Run with ``pytest bench/ --benchmark-only``; CI only smoke-runs them with
``--benchmark-disable``. Shapes are moderate so a full run takes minutes;
``python -m bnfast bench`` has the full case list.
"""

import numpy as np
import pytest

import bnfast

EPS = 1e-5
NCHW = [(32, 64, 56, 56), (8, 256, 14, 14)]
TWO_D = [(262_144, 64), (16_384, 1024)]
ROWS = [(8192, 768), (4096, 4096)]
IMPLS = ["bnfast", "copy", "numpy", "torch"]


def _ids(shape):
    return "x".join(map(str, shape))


def _np_bn_train(x, axis):
    axes = tuple(i for i in range(x.ndim) if i != axis)
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + EPS)


def _run(benchmark, impl, fns, request):
    if impl == "torch":
        request.getfixturevalue("torch_mod")
    fn = fns[impl]
    if fn is None:
        pytest.skip(f"no {impl} baseline for this case")
    benchmark(fn)


@pytest.fixture(params=NCHW, ids=_ids)
def nchw(request, rng):
    return rng.standard_normal(request.param, dtype=np.float32)


@pytest.fixture(params=TWO_D, ids=_ids)
def two_d(request, rng):
    return rng.standard_normal(request.param, dtype=np.float32)


@pytest.fixture(params=ROWS, ids=_ids)
def rows(request, rng):
    return rng.standard_normal(request.param, dtype=np.float32)


def _torch_fns(request, make):
    try:
        torch = request.getfixturevalue("torch_mod")
    except pytest.skip.Exception:
        return None
    return make(torch)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_nchw(benchmark, request, nchw, impl, training):
    benchmark.group = f"batch_norm {'train' if training else 'eval'} NCHW {nchw.shape}"
    c = nchw.shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    y = np.empty_like(nchw)
    torch_fn = None
    if impl == "torch":
        def make(torch):
            xt = torch.from_numpy(nchw)
            rmt, rvt = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
            return lambda: torch.nn.functional.batch_norm(xt, rmt, rvt, training=training)
        torch_fn = _torch_fns(request, make)
    fns = {
        "bnfast": lambda: bnfast.batch_norm(nchw, rm, rv, training=training, out=y),
        "copy": lambda: np.copyto(y, nchw),
        "numpy": (lambda: _np_bn_train(nchw, 1)) if training else
                 (lambda: (nchw - rm[:, None, None]) / np.sqrt(rv[:, None, None] + EPS)),
        "torch": torch_fn,
    }
    _run(benchmark, impl, fns, request)


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_norm_backward_nchw(benchmark, request, nchw, impl):
    benchmark.group = f"batch_norm backward NCHW {nchw.shape}"
    c = nchw.shape[1]
    w = np.ones(c, np.float32)
    dy = np.ones_like(nchw)
    _, mean, invstd = bnfast.batch_norm(nchw, training=True, return_stats=True)
    dx = np.empty_like(nchw)
    torch_fn = None
    if impl == "torch":
        def make(torch):
            xt, dyt, wt = torch.from_numpy(nchw), torch.from_numpy(dy), torch.from_numpy(w)
            mt, it = torch.from_numpy(mean), torch.from_numpy(invstd)
            return lambda: torch.ops.aten.native_batch_norm_backward(
                dyt, xt, wt, None, None, mt, it, True, EPS, [True, True, True])
        torch_fn = _torch_fns(request, make)
    fns = {
        "bnfast": lambda: bnfast.batch_norm_backward(dy, nchw, mean, invstd, w, out=dx),
        "copy": lambda: np.copyto(dx, nchw),
        "numpy": None,
        "torch": torch_fn,
    }
    _run(benchmark, impl, fns, request)


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_norm_train_2d(benchmark, request, two_d, impl):
    benchmark.group = f"batch_norm train 2-D {two_d.shape}"
    y = np.empty_like(two_d)
    torch_fn = None
    if impl == "torch":
        def make(torch):
            xt = torch.from_numpy(two_d)
            return lambda: torch.nn.functional.batch_norm(xt, None, None, training=True)
        torch_fn = _torch_fns(request, make)
    fns = {
        "bnfast": lambda: bnfast.batch_norm(two_d, training=True, out=y),
        "copy": lambda: np.copyto(y, two_d),
        "numpy": lambda: _np_bn_train(two_d, 1),
        "torch": torch_fn,
    }
    _run(benchmark, impl, fns, request)


@pytest.mark.parametrize("impl", IMPLS + ["sklearn"])
def test_mean_var_axis0(benchmark, request, two_d, impl):
    benchmark.group = f"mean_var axis=0 {two_d.shape}"
    y = np.empty_like(two_d)
    torch_fn = sk_fn = None
    if impl == "torch":
        def make(torch):
            xt = torch.from_numpy(two_d)
            return lambda: torch.var_mean(xt, dim=0, correction=0)
        torch_fn = _torch_fns(request, make)
    if impl == "sklearn":
        preprocessing = pytest.importorskip("sklearn.preprocessing", reason="scikit-learn not installed")
        sk_fn = lambda: preprocessing.StandardScaler().fit(two_d)  # noqa: E731
    fns = {
        "bnfast": lambda: bnfast.mean_var(two_d, axis=0),
        "copy": lambda: np.copyto(y, two_d),
        "numpy": lambda: (two_d.mean(axis=0), two_d.var(axis=0)),
        "torch": torch_fn,
        "sklearn": sk_fn,
    }
    _run(benchmark, impl, fns, request)


@pytest.mark.parametrize("impl", ["bnfast", "copy", "numpy", "sklearn"])
@pytest.mark.parametrize("step", ["fit", "transform"])
def test_standardizer(benchmark, request, two_d, impl, step):
    benchmark.group = f"Standardizer {step} {two_d.shape}"
    y = np.empty_like(two_d)
    mean, std = two_d.mean(axis=0), two_d.std(axis=0)
    sk_fn = None
    if impl == "sklearn":
        preprocessing = pytest.importorskip("sklearn.preprocessing", reason="scikit-learn not installed")
        if step == "fit":
            sk_fn = lambda: preprocessing.StandardScaler().fit(two_d)  # noqa: E731
        else:
            sk_fn = preprocessing.StandardScaler().fit(two_d).transform
            sk_fn = (lambda f: lambda: f(two_d))(sk_fn)
    scaler = bnfast.Standardizer().fit(two_d)
    fns = {
        "bnfast": (lambda: bnfast.Standardizer().fit(two_d)) if step == "fit"
        else (lambda: scaler.transform(two_d, out=y)),
        "copy": lambda: np.copyto(y, two_d),
        "numpy": (lambda: (two_d.mean(axis=0), two_d.std(axis=0))) if step == "fit"
        else (lambda: (two_d - mean) / std),
        "sklearn": sk_fn,
    }
    _run(benchmark, impl, fns, request)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_row_norms(benchmark, request, rows, impl, op):
    benchmark.group = f"{op} {rows.shape}"
    d = rows.shape[1]
    w = np.ones(d, np.float32)
    y = np.empty_like(rows)
    torch_fn = None
    if impl == "torch":
        def make(torch):
            xt, wt = torch.from_numpy(rows), torch.from_numpy(w)
            f = torch.nn.functional.layer_norm if op == "layer_norm" else torch.nn.functional.rms_norm
            return lambda: f(xt, (d,), wt)
        torch_fn = _torch_fns(request, make)
    if op == "layer_norm":
        ours = lambda: bnfast.layer_norm(rows, w, out=y)  # noqa: E731
        ref = lambda: (rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + EPS)  # noqa: E731
    else:
        ours = lambda: bnfast.rms_norm(rows, w, out=y)  # noqa: E731
        ref = lambda: rows / np.sqrt((rows * rows).mean(-1, keepdims=True) + np.finfo(np.float32).eps)  # noqa: E731
    fns = {"bnfast": ours, "copy": lambda: np.copyto(y, rows), "numpy": ref, "torch": torch_fn}
    _run(benchmark, impl, fns, request)


@pytest.mark.parametrize("impl", ["bnfast", "numpy", "torch"])
def test_tiny_calls(benchmark, request, impl):
    benchmark.group = "tiny: batch_norm train (4, 16)"
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    torch_fn = None
    if impl == "torch":
        def make(torch):
            xt = torch.from_numpy(x)
            return lambda: torch.nn.functional.batch_norm(xt, None, None, training=True)
        torch_fn = _torch_fns(request, make)
    fns = {
        "bnfast": lambda: bnfast.batch_norm(x, training=True),
        "numpy": lambda: _np_bn_train(x, 1),
        "torch": torch_fn,
    }
    _run(benchmark, impl, fns, request)
