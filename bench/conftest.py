"""Benchmark fixtures.

PyTorch's peers run in this same process here (pytest-benchmark times
callables). The cases run one at a time and pytest-benchmark warms each up
(``--benchmark-warmup=on`` is set below), so the other library's idle
OpenMP pool has stopped spinning and sleeps while a case is timed. (Forcing
``OMP_WAIT_POLICY=PASSIVE`` instead made PyTorch's small calls 20x slower.)
``python -m bnfast bench`` keeps the two pools in separate processes and is
the source of bench/RESULTS.md.
"""

import pytest


def pytest_configure(config):
    if hasattr(config.option, "benchmark_warmup"):
        config.option.benchmark_warmup = True


@pytest.fixture(scope="session")
def torch_mod():
    torch = pytest.importorskip("torch", reason="PyTorch peers need torch installed")
    import bnfast

    torch.set_num_threads(bnfast.get_num_threads())
    return torch
