"""Shared fixtures of the bnfast test suite.

Every test that takes the ``backend`` fixture runs once per backend/CPU
capability this build and CPU support: the NumPy twin ("numpy") and each
native capability ("scalar", "avx2", "avx512").  ``native_backend`` runs a
test under each native capability only, for subjects the NumPy backend does
not have (threads, the fast path, streaming stores, the native kernels
themselves compared with their twin).  Reference values (helpers.py) are
computed with plain NumPy in float64, never with bnfast itself.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import bnfast
from helpers import CHOICES, NATIVE_CHOICES, runtime, scan

# Hypothesis: a small number of examples per test (each test is multiplied by
# the number of backends) and no deadline (first calls may JIT/thread-spawn).
settings.register_profile(
    "bnfast",
    max_examples=60,
    deadline=None,
    # The ``backend`` fixture is function scoped on purpose: it only selects
    # the backend, which is the same for every example of one test item.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
# CI explores the same examples on every run (a failure there must be
# reproducible, not a dice roll); local runs keep exploring new ones.
settings.register_profile(
    "bnfast-ci", parent=settings.get_profile("bnfast"), derandomize=True, database=None
)
settings.load_profile("bnfast-ci" if os.environ.get("CI") else "bnfast")


@pytest.fixture(params=CHOICES, ids=CHOICES)
def backend(request):
    """Run the test under one backend/capability (whole library switched)."""
    with runtime.using(request.param):
        yield request.param


@pytest.fixture(
    params=NATIVE_CHOICES
    or [pytest.param(None, marks=pytest.mark.skip(reason="no native backend in this build"))],
    ids=NATIVE_CHOICES or ["no-native"],
)
def native_backend(request):
    """Run the test under every native (C++) capability only."""
    with runtime.using(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests may change the thread count; always restore it."""
    before = bnfast.get_num_threads()
    yield
    bnfast.set_num_threads(before)


@pytest.fixture
def small_slabs(monkeypatch):
    """Slabs of 64 values so small arrays cross many slab boundaries of the
    Standardizer/diagnose scan."""
    monkeypatch.setattr(scan, "SLAB_ELEMENTS", 64)


@pytest.fixture(scope="session")
def big_offset_f32():
    """4M float32 values 1e4 + randn: mean^2/var = 1e8 > 1/eps32, where a
    float32 (or naive sum-of-squares) accumulator loses every digit."""
    rng = np.random.default_rng(2024)
    return (1e4 + rng.standard_normal(4_000_000)).astype(np.float32)


@pytest.fixture(scope="session")
def det_inputs():
    """Inputs of the thread-determinism tests: > 1M elements each, so that
    the native kernels split the work between threads."""
    rng = np.random.default_rng(99)
    return {
        "nc": (rng.standard_normal((70_000, 33)) * 3 + 100).astype(np.float32),
        "nc64": rng.standard_normal((70_000, 33)) * 3 + 100,
        "flat": (rng.standard_normal(3_000_001) + 10).astype(np.float32),
        "flat64": rng.standard_normal(3_000_001) + 10,
        "nchw": (rng.standard_normal((16, 8, 96, 96)) + 1).astype(np.float32),
    }


@pytest.fixture
def StandardScaler():  # (named after the class it returns)
    """scikit-learn's StandardScaler, or skip when scikit-learn is absent."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from sklearn.preprocessing import StandardScaler as SS

    return SS
