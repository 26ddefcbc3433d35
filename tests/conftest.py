"""Shared fixtures and reference helpers for the bnfast test suite.

Every test that takes the ``backend`` fixture runs once per backend/CPU
capability reported by ``bnfast._runtime.choices()`` ("numpy", "scalar",
"avx2", "avx512", ...).  Reference values (see _util.py) are computed with
plain NumPy in float64, never with bnfast itself.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

import bnfast
from bnfast import _runtime

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
settings.register_profile("bnfast-ci", parent=settings.get_profile("bnfast"),
                          derandomize=True, database=None)
settings.load_profile("bnfast-ci" if os.environ.get("CI") else "bnfast")

CHOICES = list(_runtime.choices())
NATIVE_CHOICES = [c for c in CHOICES if c != "numpy"]

@pytest.fixture(params=CHOICES, ids=CHOICES)
def backend(request):
    """Run the test under one backend/capability (whole library switched)."""
    with _runtime.using(request.param):
        yield request.param


@pytest.fixture(
    params=NATIVE_CHOICES
    or [pytest.param(None, marks=pytest.mark.skip(reason="no native backend in this build"))],
    ids=NATIVE_CHOICES or ["no-native"],
)
def native_backend(request):
    """Run the test under every native (C++) capability only."""
    with _runtime.using(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests may change the thread count; always restore it."""
    before = bnfast.get_num_threads()
    yield
    bnfast.set_num_threads(before)


