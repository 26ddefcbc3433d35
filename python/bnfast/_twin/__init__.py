"""The pure-NumPy backend: the executable specification of every native
kernel, and the fallback when the extension is not built.

Each kernel here has the same name, parameters and meaning as its twin in
``bnfast._core`` and works on the same canonical (A, C, B) views, one module
per family (``moments``, ``affine``, ``batch_norm``, ``layer_norm``,
``group_norm``, whose kernels take batched (N, A, C, B) views) plus the
per-channel float64 ``formulas`` and the benchmark's ``memory_floor`` pass.
The native-only fast entry points (``batch_norm_fast``, ``layer_norm_fast``)
have no twin: the general path is their specification.
"""

from .affine import affine
from .batch_norm import (
    batch_norm_backward_apply,
    batch_norm_backward_reduce,
    batch_norm_backward_train,
    batch_norm_train,
)
from .formulas import eval_fold, invstd, running_update, split_center
from .group_norm import group_norm_backward_train, group_norm_forward
from .layer_norm import layer_norm_backward, layer_norm_forward
from .memory_floor import memory_floor
from .moments import moments

__all__ = [
    "affine",
    "batch_norm_backward_apply",
    "batch_norm_backward_reduce",
    "batch_norm_backward_train",
    "batch_norm_train",
    "eval_fold",
    "group_norm_backward_train",
    "group_norm_forward",
    "invstd",
    "layer_norm_backward",
    "layer_norm_forward",
    "memory_floor",
    "moments",
    "running_update",
    "split_center",
]
