"""bnfast: fast, exact normalization for NumPy.

Welford/Chan statistics and batch normalization in C++ kernels (OpenMP
threads, AVX2 / AVX-512 chosen at run time), with a pure-NumPy backend that
gives the same answers.
"""

from ._batch_norm import batch_norm
from ._config import config, get_num_threads, set_num_threads, show_config, threads
from ._stats import Moments, mean_var, moments
from ._version import __version__

__all__ = [
    "Moments",
    "__version__",
    "batch_norm",
    "config",
    "get_num_threads",
    "mean_var",
    "moments",
    "set_num_threads",
    "show_config",
    "threads",
]
