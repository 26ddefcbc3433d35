"""Benchmark fixtures: arrays are built once per module (not timed)."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)
