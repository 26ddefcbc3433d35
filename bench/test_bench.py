"""pytest-benchmark view of the benchmark cases of ``python -m bnfast bench``.

The cases come from the one registry, ``bnfast.cli.bench.cases``, at its
``moderate`` size (a full run takes minutes; a smoke run with
``--benchmark-disable`` uses the ``quick`` size). Each case is a benchmark
group: bnfast beside its memory floor (``floor``: bnfast's read and
read + streaming-write passes over the bytes the case's algorithm moves),
``np.copyto`` of the same bytes (a familiar reference), the plain NumPy
expression, PyTorch (CPU, same thread count, in this process)
when installed, and scikit-learn's StandardScaler for dataset statistics
when installed. Run with ``pytest bench/ --benchmark-only``; CI only
smoke-runs them with ``--benchmark-disable``.
"""

import re

import numpy as np
import pytest

from bnfast.cli.bench import cases, harness
from bnfast.cli.bench.peers import make_peer


def _id(spec):
    return re.sub(r"[^\w=.-]+", "_", spec.name).strip("_")


def pytest_generate_tests(metafunc):
    # (case, implementation) pairs, a case's implementations one after
    # another so that its arrays are made once (see ``built``).
    if "spec" in metafunc.fixturenames:
        smoke = metafunc.config.getoption("benchmark_disable", default=False)
        specs = cases.case_specs("quick" if smoke else "moderate")
        metafunc.parametrize(
            "spec, impl",
            [
                pytest.param(spec, impl, id=f"{_id(spec)}-{impl}")
                for spec in specs
                for impl in ("bnfast", "floor", "copy", *spec.baselines, "torch")
            ],
        )


class _Built:
    """The arrays of one case at a time, made when its first test runs."""

    def __init__(self):
        self.spec = self.case = None

    def get(self, spec):
        if spec != self.spec:
            self.close()
            self.case, self.spec = cases.build(spec, np.random.default_rng(0)), spec
        return self.case

    def close(self):
        if self.case is not None:
            self.case.release()
        self.spec = self.case = None


@pytest.fixture(scope="module")
def built():
    b = _Built()
    yield b
    b.close()


def test_case(benchmark, request, built, spec, impl):
    benchmark.group = spec.name
    if impl == "torch":
        torch = request.getfixturevalue("torch_mod")
        fn = make_peer(torch, spec.peer_request())
        if fn is None:
            pytest.skip("no PyTorch peer for this case")
    elif impl == "floor":
        from bnfast._runtime import _core

        if _core is None:
            pytest.skip("the memory floor needs the native module")
        passes = spec.floor_passes(harness.cache_bytes())
        bufs = [(np.ones(r, np.uint8), np.ones(w, np.uint8)) for r, w in passes]

        def fn():
            for src, dst in bufs:
                _core.memory_floor(src, dst)

    elif impl == "copy":
        src = np.ones(spec.nbytes, np.uint8)
        dst = np.empty_like(src)
        fn = lambda: np.copyto(dst, src)  # noqa: E731
    else:
        fn = getattr(built.get(spec), impl)
        if fn is None:  # the baseline's library is not installed
            pytest.skip(f"{impl} is not installed")
    benchmark(fn)
