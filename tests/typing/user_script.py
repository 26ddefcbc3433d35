"""A user's script over the whole public API, for ``mypy --strict``.

CI runs ``mypy --strict tests/typing/user_script.py``: every call must type
check, and the results must have precise (not ``Any``) types, which the
``assert_type`` lines pin. It also runs as a plain script (``python
tests/typing/user_script.py``), so the annotations describe what the calls
really return.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import numpy as np
from numpy.typing import NDArray

import bnfast
from bnfast import nn

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    _T = TypeVar("_T")

    def assert_type(value: _T, typ: object) -> _T:
        return value


F = NDArray[np.floating[Any]]

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 4, 5, 5)).astype(np.float32)
dy = rng.standard_normal(x.shape).astype(np.float32)
w = np.linspace(0.5, 1.5, 4).astype(np.float32)
b = np.zeros(4, np.float32)

# -- statistics ---------------------------------------------------------------
mean_all, var_all = bnfast.mean_var(x)
assert_type(mean_all, np.floating[Any])
print(float(mean_all), float(var_all))
mean_c, var_c = bnfast.mean_var(x, axis=(0, 2, 3), ddof=1)
assert_type(mean_c, F)
print(mean_c.shape, var_c[0])
mean_k, _ = bnfast.mean_var([[1, 2], [3, 4]], axis=0, keepdims=True)
assert_type(mean_k, F)

m = bnfast.moments(x, axis=(0, 2, 3))
assert_type(m, bnfast.Moments)
total = bnfast.Moments.combine([m, bnfast.moments(x[:2], axis=(0, 2, 3))])
merged: bnfast.Moments = m + m
assert_type(total.var(ddof=1), NDArray[np.float64])
assert_type(merged.std(), NDArray[np.float64])
assert_type(m.mean, NDArray[np.float64])
assert_type(m.shape, tuple[int, ...])
print(total.count, m == merged, bnfast.Moments(3, 1.0, 2.0))

# -- batch norm ---------------------------------------------------------------
rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
y = bnfast.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1)
assert_type(y, F)
y, bmean, invstd = bnfast.batch_norm(x, weight=w, bias=b, training=True, return_stats=True)
assert_type(invstd, F)
flag: bool = bool(os.environ.get("NEVER_SET_X"))
either = bnfast.batch_norm(x, rm, rv, return_stats=flag)
print(type(either))
dx, dw, db = bnfast.batch_norm_backward(dy, x, bmean, invstd, w)
assert_type(dw, F)
dx, no_dw, db = bnfast.batch_norm_backward(dy, x, bmean, invstd, out=np.empty_like(x))
assert_type(no_dw, None)
maybe_w: Optional[F] = w if not flag else None
dx, dw_opt, db = bnfast.batch_norm_backward(dy, x, bmean, invstd, maybe_w, training=True)
assert_type(dw_opt, Optional[F])
print((dw * 0.1).sum(), db.shape)

# -- layer and RMS norm -------------------------------------------------------
lw = np.ones(5, np.float32)
z = bnfast.layer_norm(x, lw, lw, axis=-1, eps=1e-5)
assert_type(z, F)
z, lmean, lrstd = bnfast.layer_norm(x, axis=(-2, -1), return_stats=True)
ldx, ldw, ldb = bnfast.layer_norm_backward(dy, x, lmean, lrstd, axis=(-2, -1))
assert_type(ldw, None)
z, lmean, lrstd = bnfast.layer_norm(x, lw, lw, return_stats=True)
ldx, ldw2, ldb = bnfast.layer_norm_backward(dy, x, lmean, lrstd, lw, out=dy.copy())
assert_type(ldw2, F)
r = bnfast.rms_norm(x, lw)
assert_type(r, F)
r, rrstd = bnfast.rms_norm(x, lw, eps=None, return_stats=True)
rdx, rdw = bnfast.rms_norm_backward(dy, x, rrstd, lw)
assert_type(rdw, F)
print(ldw2.sum(), rdw.sum(), rdx.dtype)

# -- group and instance norm --------------------------------------------------
g = bnfast.group_norm(x, 2, w, b)
assert_type(g, F)
g, gmean, grstd = bnfast.group_norm(x, 2, w, b, axis=1, return_stats=True)
gdx, gdw, gdb = bnfast.group_norm_backward(dy, x, gmean, grstd, 2, w)
assert_type(gdw, F)
i = bnfast.instance_norm(x, running_mean=rm, running_var=rv, momentum=0.2)
assert_type(i, F)
i, imean, irstd = bnfast.instance_norm(x, w, b, return_stats=True)
idx_, idw, idb = bnfast.instance_norm_backward(dy, x, imean, irstd)
assert_type(idw, None)
print(gdb.sum(), idb.shape)

# -- configuration ------------------------------------------------------------
cfg = bnfast.config()
assert_type(cfg["num_threads"], int)
assert_type(cfg["capability"], Optional[str])
bnfast.show_config()
n_threads: int = bnfast.get_num_threads()
bnfast.set_num_threads(n_threads)
with bnfast.threads(1):
    y1 = bnfast.batch_norm(x, rm, rv)
print(bnfast.__version__, cfg["backend"], y1.shape)

# -- layers -------------------------------------------------------------------
bn = nn.BatchNorm(4, momentum=None, axis=1, dtype=np.float32)
out = bn(x)
assert_type(out, F)
grad = bn.backward(dy)
assert_type(bn.grad_weight, Optional[F])
assert_type(bn.running_mean, Optional[F])
bn.eval().train()
state = bn.state_dict()
bn.load_state_dict(state, strict=True)
bn.reset_running_stats()
bn.zero_grad()
params: list[F] = bn.parameters()
layers: list[nn.BatchNorm | nn.InstanceNorm | nn.GroupNorm | nn.LayerNorm | nn.RMSNorm] = [
    bn,
    nn.InstanceNorm(4, affine=True, track_running_stats=True),
    nn.GroupNorm(2, 4, eps=1e-5),
    nn.LayerNorm((5, 5), bias=False),
    nn.RMSNorm(5, eps=None, elementwise_affine=True),
]
for layer in layers:
    layer.train()
    o = layer(x)
    d = layer.backward(dy)
    print(type(layer).__name__, o.shape, d.dtype, layer.training, len(layer.parameters()))

# -- standardizing and diagnosing data ----------------------------------------
data = rng.standard_normal((100, 3))
st = bnfast.Standardizer(axis=0, with_mean=True, with_std=True, ddof=0)
st.fit(data)
st.partial_fit(data[:10])
t = st.transform(data)
back = st.inverse_transform(t)
ft = bnfast.Standardizer().fit_transform(data)
print(st.mean_, st.scale_, back.shape, ft.shape)
assert_type(t, NDArray[np.float64])  # float64 in, float64 out (dtype=None)
# An output dtype asked for types the results as that dtype, whatever the input.
st32 = bnfast.Standardizer(dtype=np.float32).fit(data)
assert_type(st32, bnfast.Standardizer[np.float32])
assert_type(st32.transform(data), NDArray[np.float32])
assert_type(st32.inverse_transform(data), NDArray[np.float32])
st16 = bnfast.Standardizer(dtype="float16")
assert_type(st16.fit_transform(np.arange(12).reshape(6, 2)), NDArray[np.float16])
st64: bnfast.Standardizer = bnfast.Standardizer(dtype=np.dtype(np.float64))
print(st32.transform(data).dtype, st64.dtype)
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "st.npz")
    st.save(path)
    loaded = bnfast.Standardizer.load(path)
    print(loaded.n_features_in_)
try:
    bnfast.Standardizer().transform(data)
except bnfast.NotFittedError as exc:
    print("not fitted:", exc)

report = bnfast.diagnose(data, axis=0)
rep2: bnfast.DataReport = report
print(rep2.table(), rep2.to_dict()["n_samples"], rep2.warnings)

try:
    from bnfast.sklearn import Standardizer as SkStandardizer
except ImportError:
    pass
else:
    sk = SkStandardizer().fit(data)
    print(sk.transform(data).shape, sk.get_params())

print(sorted(bnfast.__all__))
