"""Fixtures of the command-line tests: data files on disk."""

import numpy as np
import pytest
from cli_helpers import make_features


@pytest.fixture
def x2d(tmp_path):
    """~2 MiB of float32 (8191, 64) in x.npy."""
    x = make_features()
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, path


@pytest.fixture
def xnan(tmp_path):
    """(6000, 6) float32 with 5 % NaN and one all-NaN feature, in nan.npy."""
    x = make_features(n=6000, f=6)
    rng = np.random.default_rng(5)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 4] = np.nan  # one all-NaN feature
    path = tmp_path / "nan.npy"
    np.save(path, x)
    return x, path
