"""The benchmark cases: the one registry behind ``python -m bnfast bench``
(sizes ``quick`` and ``full``) and ``bench/test_bench.py`` (pytest-benchmark,
size ``moderate``).

A case is an op on arrays of one shape, layout and dtype (:class:`CaseSpec`).
:func:`build` makes it runnable (:class:`Case`): the bnfast call and its
baselines, the NumPy expression a user would otherwise write and
scikit-learn's StandardScaler for the dataset statistics. PyTorch's peers
are in :mod:`.peers` (they run in a child process under ``bench``), the
``np.copyto`` memory floor in the harness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import bnfast

EPS = 1e-5
NEW_OUTPUT = " (new output)"  # op suffix: the same call without out=
SIZES = ("quick", "moderate", "full")

# Ops whose baselines are not the default (a NumPy expression, no scikit-learn).
_NO_NUMPY = (
    "layer_norm backward",
    "rms_norm backward",
    "group_norm backward",
    "instance_norm backward",
)
_SKLEARN = ("mean_var axis=0", "Standardizer fit", "Standardizer transform")


@dataclass(frozen=True)
class CaseSpec:
    """What one case times: ``op`` on an array of ``shape`` (``layout`` says
    how to read it: NCHW, NHWC, 2-D or tiny) and ``dtype``."""

    op: str
    shape: tuple[int, ...]
    layout: str
    dtype: str
    groups: int | None = None  # group_norm's number of groups (instance_norm: C)

    @property
    def base_op(self) -> str:
        """``op`` without the :data:`NEW_OUTPUT` suffix."""
        return self.op[: -len(NEW_OUTPUT)] if self.op.endswith(NEW_OUTPUT) else self.op

    @property
    def nbytes(self) -> int:
        """Bytes of the input array (what the copy baseline copies)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def floor_passes(self, cache_bytes: int) -> tuple[tuple[int, int], ...]:
        """The passes over memory this op's algorithm cannot avoid, each as
        (bytes read, bytes written): the memory floor the harness times.

        A reduction reads its input once. An element-wise op, or one whose
        statistics cover a slab that stays in ``cache_bytes`` of cache until
        it is written (a row of layer norm, a group of group norm), reads
        and writes once. Batch-norm training of NHWC and 2-D data needs
        every row before any output: a read, then a read and write (NCHW
        is fused per channel: one read and write). Batch-norm backward reads
        x and dy; its sums must be complete before any dx, so two passes,
        unless a channel's x and dy fit in ``cache_bytes`` (NCHW only).
        Group and instance norm likewise need a (sample, group) in cache: a
        contiguous block channels first, but the whole sample channels last,
        where every row (every cache line, for short groups) holds a piece of
        every group, so a group's statistics are complete only after the
        sample's last row."""
        n = self.nbytes
        op = self.base_op
        if op.startswith("mean_var") or op == "Standardizer fit":
            return ((n, 0),)
        if op == "batch_norm train":
            return ((n, n),) if self.layout == "NCHW" else ((n, 0), (n, n))
        if op == "batch_norm backward":
            channels = self.shape[1] if self.layout == "NCHW" else self.shape[-1]
            if self.layout == "NCHW" and 2 * n // channels <= cache_bytes:
                return ((2 * n, n),)
            return ((2 * n, 0), (2 * n, n))
        if op in ("layer_norm backward", "rms_norm backward"):
            return ((2 * n, n),)
        if op in ("group_norm", "instance_norm"):
            if self._group_span(n) <= cache_bytes:
                return ((n, n),)
            return ((n, 0), (n, n))
        if op in ("group_norm backward", "instance_norm backward"):
            # A (sample, group)'s x and dy in cache: reduced, then written.
            if 2 * self._group_span(n) <= cache_bytes:
                return ((2 * n, n),)
            return ((2 * n, 0), (2 * n, n))
        return ((n, n),)  # eval, layer/RMS norm, Standardizer transform

    def _group_span(self, n: int) -> int:
        """Bytes of x a (sample, group) of group/instance norm spans: its own
        block channels first, the whole sample channels last."""
        assert self.groups is not None
        per_sample = n // self.shape[0]
        return per_sample // self.groups if self.layout == "NCHW" else per_sample

    @property
    def baselines(self) -> tuple[str, ...]:
        """The baselines :func:`build` provides besides bnfast: ``numpy``, ``sklearn``."""
        return (("numpy",) if self.base_op not in _NO_NUMPY else ()) + (
            ("sklearn",) if self.base_op in _SKLEARN else ()
        )

    @property
    def name(self) -> str:
        return f"{self.op} {'x'.join(map(str, self.shape))} {self.layout} {self.dtype}"

    def peer_request(self, case_id: str = "") -> dict[str, Any]:
        """The JSON description :mod:`.peers` builds PyTorch's peer from."""
        return {
            "id": case_id,
            "op": self.op,
            "shape": list(self.shape),
            "layout": self.layout,
            "dtype": self.dtype,
            "groups": self.groups,
        }


def _shapes(size: str) -> dict[str, Any]:
    if size == "quick":
        return {
            "nchw": [(16, 32, 28, 28), (8, 64, 14, 14)],
            "two_d": [(65_536, 64), (4096, 256)],
            "rows": [(2048, 1024), (1024, 768)],
            "gn": [(8, 64, 28, 28)],
        }
    if size == "moderate":  # pytest-benchmark: many rounds per case
        return {
            "nchw": [(32, 64, 56, 56), (8, 256, 14, 14)],
            "two_d": [(262_144, 64), (16_384, 1024)],
            "rows": [(8192, 768), (4096, 4096)],
            "gn": [(16, 128, 28, 28)],
        }
    if size == "full":
        return {
            # large (memory-bound) shapes, then in-cache ones (tens of KB to a
            # few MB, where a pass is compute- and overhead-bound)
            "nchw": [
                (64, 64, 112, 112),
                (256, 128, 28, 28),
                (32, 64, 56, 56),
                (8, 256, 14, 14),
                (32, 64, 28, 28),
                (8, 64, 14, 14),
            ],
            "two_d": [(1_048_576, 64), (65_536, 1024)],
            "rows": [(16_384, 4096), (8192, 768), (2048, 1024), (1024, 768)],
            "gn": [(32, 256, 56, 56), (8, 64, 28, 28)],
        }
    raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")


def case_specs(size: str) -> list[CaseSpec]:
    """Every case, in the order they are timed and reported."""
    s = _shapes(size)
    specs = []

    def add(
        op: str, shape: tuple[int, ...], layout: str, dtype: type, groups: int | None = None
    ) -> None:
        specs.append(CaseSpec(op, tuple(shape), layout, np.dtype(dtype).name, groups))

    for shape in s["nchw"]:
        nhwc = (shape[0], shape[2], shape[3], shape[1])
        for op in ("batch_norm train", "batch_norm eval", "batch_norm backward"):
            add(op, shape, "NCHW", np.float32)
            if op != "batch_norm backward":
                add(op, nhwc, "NHWC", np.float32)
    # What a fresh output costs (no out=): the OS maps and zero-fills its pages.
    for op in ("batch_norm eval", "batch_norm backward"):
        add(op + NEW_OUTPUT, s["nchw"][0], "NCHW", np.float32)
    for shape in s["two_d"]:
        for dtype in (np.float32, np.float64):
            for op in (
                "batch_norm train",
                "batch_norm eval",
                "batch_norm backward",
                "mean_var axis=0",
                "Standardizer fit",
                "Standardizer transform",
            ):
                add(op, shape, "2-D", dtype)
    add("mean_var axis=-1", s["rows"][0], "2-D", np.float32)
    for shape in s["rows"]:
        for op in ("layer_norm", "layer_norm backward", "rms_norm", "rms_norm backward"):
            add(op, shape, "2-D", np.float32)
    for shape in s["gn"]:
        nhwc = (shape[0], shape[2], shape[3], shape[1])
        add("group_norm", shape, "NCHW", np.float32, groups=32)
        add("group_norm", nhwc, "NHWC", np.float32, groups=32)
        if size == "full":  # channels first and last at the same ratio to the floor
            c = shape[1]
            add("group_norm backward", shape, "NCHW", np.float32, groups=32)
            add("group_norm backward", nhwc, "NHWC", np.float32, groups=32)
            for op in ("instance_norm", "instance_norm backward"):
                add(op, shape, "NCHW", np.float32, groups=c)
                add(op, nhwc, "NHWC", np.float32, groups=c)
    add("batch_norm train", (4, 16), "tiny", np.float32)
    add("layer_norm", (4, 64), "tiny", np.float32)
    return specs


# --------------------------------------------------------------------------
# NumPy expressions a user would otherwise write.


def _np_bn_train(x: np.ndarray, axis: int) -> np.ndarray:
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def _np_bn_eval(x: np.ndarray, rm: np.ndarray, rv: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + EPS)


def _np_bn_backward(dy: np.ndarray, x: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    n = x.size // x.shape[axis]
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    invstd = 1 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + EPS)
    sum_dy = dy.sum(axis=axes, keepdims=True)
    sum_dy_xc = (dy * xc).sum(axis=axes, keepdims=True)
    dx = (dy - sum_dy / n - xc * sum_dy_xc * invstd**2 / n) * invstd
    return dx, (sum_dy_xc * invstd).ravel(), sum_dy.ravel()


def _np_layer_norm(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def _np_rms_norm(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.finfo(x.dtype).eps)


def _np_group_norm(x: np.ndarray, groups: int) -> np.ndarray:
    n = x.shape[0]
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(axis=-1, keepdims=True)
    var = xg.var(axis=-1, keepdims=True)
    return ((xg - mean) / np.sqrt(var + EPS)).reshape(x.shape)


# --------------------------------------------------------------------------


@dataclass
class Case:
    """A runnable case: zero-argument callables whose arrays are made on first
    use and dropped by ``release()``."""

    id: str
    spec: CaseSpec
    bnfast: Callable[[], object]
    numpy: Callable[[], object] | None
    sklearn: Callable[[], object] | None
    release: Callable[[], None]


def make_cases(size: str, rng: np.random.Generator) -> list[Case]:
    """Every case of ``size``, with ids ``00``, ``01``, ... in order."""
    return [build(spec, rng, f"{i:02d}") for i, spec in enumerate(case_specs(size))]


def build(spec: CaseSpec, rng: np.random.Generator, case_id: str = "") -> Case:
    """A :class:`Case` whose arrays are drawn from ``rng`` on first use."""
    shape, layout, dtype, op = spec.shape, spec.layout, np.dtype(spec.dtype), spec.base_op
    fresh = spec.op.endswith(NEW_OUTPUT)
    state: dict[str, Any] = {}

    def arrays() -> dict[str, Any]:
        if not state:
            x = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
            state["x"] = x
            state["y"] = np.empty_like(x)
            axis = -1 if layout == "NHWC" else (1 if x.ndim > 1 else 0)
            c = x.shape[axis]
            state["axis"] = axis
            state["w"] = np.ones(c, dtype)
            state["b"] = np.zeros(c, dtype)
            state["rm"] = np.zeros(c, dtype)
            state["rv"] = np.ones(c, dtype)
            if "backward" in op:
                state["dy"] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
                state["dx"] = np.empty_like(x)
                if op == "batch_norm backward":
                    _, state["mean"], state["invstd"] = bnfast.batch_norm(
                        x, training=True, axis=axis, return_stats=True
                    )
                elif op == "layer_norm backward":
                    state["wd"] = np.ones(x.shape[-1], dtype)
                    _, state["mean"], state["rstd"] = bnfast.layer_norm(
                        x, state["wd"], return_stats=True
                    )
                elif op == "group_norm backward":
                    assert spec.groups is not None
                    _, state["mean"], state["rstd"] = bnfast.group_norm(
                        x, spec.groups, axis=axis, return_stats=True
                    )
                elif op == "instance_norm backward":
                    _, state["mean"], state["rstd"] = bnfast.instance_norm(
                        x, axis=axis, return_stats=True
                    )
                else:
                    state["wd"] = np.ones(x.shape[-1], dtype)
                    _, state["rstd"] = bnfast.rms_norm(x, state["wd"], return_stats=True)
        return state

    def bnfast_call() -> Callable[[], object]:
        """The timed call as a closure over this case's arrays, so timing
        sees only the library call (no per-call case dispatch; that matters
        for the tiny cases, which take a few microseconds)."""
        a = arrays()
        x, y, axis = a["x"], a["y"], a["axis"]
        rm, rv, w, b = a["rm"], a["rv"], a["w"], a["b"]
        if op == "batch_norm train":
            return lambda: bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis, out=y)
        if op == "batch_norm eval":
            out = None if fresh else y
            return lambda: bnfast.batch_norm(x, rm, rv, w, b, axis=axis, out=out)
        if op == "batch_norm backward":
            dy, mean, invstd, dx = a["dy"], a["mean"], a["invstd"], None if fresh else a["dx"]
            return lambda: bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, out=dx)
        if op == "mean_var axis=0":
            return lambda: bnfast.mean_var(x, axis=0)
        if op == "mean_var axis=-1":
            return lambda: bnfast.mean_var(x, axis=-1)
        wd = a.setdefault("wd", np.ones(x.shape[-1], x.dtype))
        if op == "layer_norm":
            return lambda: bnfast.layer_norm(x, wd, out=y)
        if op == "layer_norm backward":
            dy, mean, rstd, dx = a["dy"], a["mean"], a["rstd"], a["dx"]
            return lambda: bnfast.layer_norm_backward(dy, x, mean, rstd, wd, out=dx)
        if op == "rms_norm":
            return lambda: bnfast.rms_norm(x, wd, out=y)
        if op == "rms_norm backward":
            dy, rstd, dx = a["dy"], a["rstd"], a["dx"]
            return lambda: bnfast.rms_norm_backward(dy, x, rstd, wd, out=dx)
        if op == "group_norm":
            groups = spec.groups
            assert groups is not None
            return lambda: bnfast.group_norm(x, groups, w, b, axis=axis, out=y)
        if op == "group_norm backward":
            num_groups = spec.groups
            assert num_groups is not None
            dy, mean, rstd, dx = a["dy"], a["mean"], a["rstd"], a["dx"]
            return lambda: bnfast.group_norm_backward(
                dy, x, mean, rstd, num_groups, w, axis=axis, out=dx
            )
        if op == "instance_norm":
            return lambda: bnfast.instance_norm(x, w, b, axis=axis, out=y)
        if op == "instance_norm backward":
            dy, mean, rstd, dx = a["dy"], a["mean"], a["rstd"], a["dx"]
            return lambda: bnfast.instance_norm_backward(dy, x, mean, rstd, w, axis=axis, out=dx)
        if op == "Standardizer fit":
            return lambda: bnfast.Standardizer().fit(x)
        if op == "Standardizer transform":
            scaler = bnfast.Standardizer().fit(x)
            return lambda: scaler.transform(x, out=y)
        raise ValueError(op)

    def run_bnfast() -> object:
        fn = state.get("bnfast_fn")
        if fn is None:
            fn = state["bnfast_fn"] = bnfast_call()
        return fn()

    def run_numpy() -> object:
        a = arrays()
        x, axis = a["x"], a["axis"]
        if op == "batch_norm train":
            return _np_bn_train(x, axis)
        if op == "batch_norm eval":
            return _np_bn_eval(x, a["rm"], a["rv"], axis)
        if op == "batch_norm backward":
            return _np_bn_backward(a["dy"], x, axis)
        if op.startswith("mean_var"):
            ax = 0 if op == "mean_var axis=0" else -1
            return x.mean(axis=ax), x.var(axis=ax)
        if op == "layer_norm":
            return _np_layer_norm(x)
        if op == "rms_norm":
            return _np_rms_norm(x)
        if op in ("group_norm", "instance_norm"):
            assert spec.groups is not None
            if layout == "NHWC":  # channels first for the expression, back after
                return _np_group_norm(np.moveaxis(x, -1, 1), spec.groups).transpose(0, 2, 3, 1)
            return _np_group_norm(x, spec.groups)
        if op == "Standardizer fit":
            return x.mean(axis=0), x.std(axis=0)
        if op == "Standardizer transform":
            if "np_scaler" not in a:
                a["np_scaler"] = (x.mean(axis=0), x.std(axis=0))
            mean, std = a["np_scaler"]
            return (x - mean) / std
        raise ValueError(op)

    sklearn_fn = _sklearn_call(op, arrays) if "sklearn" in spec.baselines else None
    numpy_fn = run_numpy if "numpy" in spec.baselines else None
    return Case(case_id, spec, run_bnfast, numpy_fn, sklearn_fn, state.clear)


def _sklearn_call(op: str, arrays: Callable[[], dict[str, Any]]) -> Callable[[], object] | None:
    """scikit-learn's StandardScaler doing the work of ``op`` (None when
    scikit-learn is not installed)."""
    try:
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None
    if op == "Standardizer transform":

        def transform() -> object:
            a = arrays()
            if "sk_scaler" not in a:
                a["sk_scaler"] = StandardScaler().fit(a["x"])
            return a["sk_scaler"].transform(a["x"])

        return transform
    return lambda: StandardScaler().fit(arrays()["x"])
