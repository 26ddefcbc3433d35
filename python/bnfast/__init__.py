"""bnfast: fast, exact normalization for NumPy.

Welford/Chan statistics and batch normalization in C++ kernels (on bnfast's
own thread pool, AVX2 / AVX-512 chosen at run time), with a pure-NumPy
backend that gives the same answers.
"""

from . import nn
from ._batch_norm import batch_norm, batch_norm_backward
from ._config import config, get_num_threads, set_num_threads, show_config, threads
from ._diagnose import DataReport, diagnose
from ._group_norm import group_norm, group_norm_backward, instance_norm, instance_norm_backward
from ._layer_norm import layer_norm, layer_norm_backward, rms_norm, rms_norm_backward
from ._moments import Moments, mean_var, moments
from ._standardize import NotFittedError, Standardizer
from ._version import __version__

__all__ = [
    "DataReport",
    "Moments",
    "NotFittedError",
    "Standardizer",
    "__version__",
    "batch_norm",
    "batch_norm_backward",
    "config",
    "diagnose",
    "get_num_threads",
    "group_norm",
    "group_norm_backward",
    "instance_norm",
    "instance_norm_backward",
    "layer_norm",
    "layer_norm_backward",
    "mean_var",
    "moments",
    "nn",
    "rms_norm",
    "rms_norm_backward",
    "set_num_threads",
    "show_config",
    "threads",
]
