"""Containers at the public boundary (issue 14, items 3 and 6): longdouble
statistics computed in long double, and PyTorch tensors / DLPack objects read
through ``_validate.from_container`` -- as ``x``, as ``out=`` and as running
statistics updated in place through shared memory. Results stay NumPy arrays.
"""

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import bnfast
from bnfast._validate import from_container

LONGDOUBLE_BITS = np.finfo(np.longdouble).nmant


# ---------------------------------------------------------------------------
# longdouble (item 3): computed in long double, never float64 in disguise
# ---------------------------------------------------------------------------
needs_extended = pytest.mark.skipif(
    LONGDOUBLE_BITS < 60,
    reason="longdouble is float64 on this platform (nothing finer to keep)",
)


def _tiny_spread():
    """[1, 1 + 2**-60, 1 + 2**-59] exactly (representable with 64 bits)."""
    one = np.longdouble(1)
    return np.array([one, one + np.longdouble(2) ** -60, one + np.longdouble(2) ** -59])


@needs_extended
def test_longdouble_mean_var_keeps_long_double_precision(backend):
    x = _tiny_spread()
    mean, var = bnfast.mean_var(x)
    assert mean.dtype == np.longdouble and var.dtype == np.longdouble
    # Exact values: mean 1 + 2**-60, var = 2 * 2**-120 / 3. Both are within
    # half an ulp of long double: the sums involved are exact in 64 bits.
    step = np.longdouble(2) ** -60
    assert mean - 1 == step  # float64 arithmetic gives 0 here
    assert mean - 1 == np.mean(x) - 1  # NumPy: 8.7e-19
    want_var = 2 * step * step / 3
    assert abs(var - want_var) <= np.finfo(np.longdouble).eps * want_var
    mean1, var1 = bnfast.mean_var(x, ddof=1)
    assert mean1 == mean
    assert abs(var1 - step * step) <= np.finfo(np.longdouble).eps * step * step


def _exact_mean_var(values):
    """Mean and variance of long doubles in exact rational arithmetic."""
    exact = [Fraction(*v.as_integer_ratio()) for v in values]
    mean = sum(exact) / len(exact)
    return mean, sum((v - mean) ** 2 for v in exact) / len(exact)


@needs_extended
def test_longdouble_along_axes_is_exact_to_long_double(backend):
    rng = np.random.default_rng(3)
    # Offset data: float64 statistics would lose the low 11 bits of each
    # value; np.var's plain two-pass loses ~1e-15 of the variance here.
    x = 1 + rng.standard_normal((7, 5, 3)).astype(np.longdouble) * np.longdouble(2) ** -40
    eps = Fraction(*np.finfo(np.longdouble).eps.as_integer_ratio())
    for axis, moved in ((0, (0,)), ((0, 2), (0, 2)), (-1, (2,))):
        mean, var = bnfast.mean_var(x, axis=axis)
        assert mean.dtype == np.longdouble and var.dtype == np.longdouble
        rows = np.moveaxis(x, moved, tuple(range(len(moved)))).reshape(-1, *mean.shape)
        for idx in np.ndindex(mean.shape):
            want_mean, want_var = _exact_mean_var(rows[(slice(None), *idx)])
            # The corrected two-pass in long double: within a few roundings
            # (relative eps each) of sums of at most 21 terms.
            assert abs(Fraction(*mean[idx].as_integer_ratio()) - want_mean) <= 2 * eps
            assert abs(Fraction(*var[idx].as_integer_ratio()) - want_var) <= 16 * eps * want_var


@needs_extended
def test_longdouble_moments_round_once_to_float64(backend):
    x = _tiny_spread()
    m = bnfast.moments(x)
    assert m.mean.dtype == np.float64  # documented: Moments are float64
    # M2 = 2 * 2**-120 computed in long double, rounded once (exact here);
    # a float64 computation gives 0 (all three values round to 1.0).
    assert m.m2 == 2.0**-119
    assert float(m.mean) == 1.0


def test_longdouble_standardizer_is_float64_and_documented(backend):
    x = np.arange(6, dtype=np.longdouble).reshape(3, 2)
    st = bnfast.Standardizer().fit(x)
    assert st.mean_.dtype == np.float64
    assert st.transform(x).dtype == np.float64  # never a float128 in float64


# ---------------------------------------------------------------------------
# PyTorch tensors (item 6)
# ---------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch", reason="PyTorch tensors need torch")


def test_importing_bnfast_imports_no_container_package():
    code = (
        "import sys, bnfast, numpy as np; bnfast.mean_var(np.ones(3)); "
        "bnfast.Standardizer().fit(np.ones((2, 2))); "
        "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'ml_dtypes', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_torch_tensor_as_x_gives_numpy(backend):
    torch = _torch()
    t = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    mean, var = bnfast.mean_var(t, axis=0)
    assert isinstance(mean, np.ndarray) and mean.dtype == np.float32
    np.testing.assert_array_equal(mean, t.numpy().mean(axis=0))
    y = bnfast.layer_norm(t)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, bnfast.layer_norm(t.numpy()))
    # A tensor that requires grad is read through detach(): the NumPy result
    # is outside autograd either way.
    g = t.clone().requires_grad_(True)
    np.testing.assert_array_equal(bnfast.layer_norm(g), y)
    # nn.Parameter weights (read-only arguments) too
    w = torch.nn.Parameter(torch.full((3,), 2.0))
    np.testing.assert_array_equal(bnfast.layer_norm(t, w), 2 * y)


def test_torch_in_standardizer(backend):
    torch = _torch()
    X = torch.randn(10, 3, dtype=torch.float64)
    st = bnfast.Standardizer().fit(X, sample_weight=torch.rand(10, dtype=torch.float64))
    out = torch.empty_like(X)
    st.transform(X, out=out)
    np.testing.assert_array_equal(out.numpy(), st.transform(X.numpy()))


def test_torch_non_contiguous_tensor_read_in_place(backend):
    torch = _torch()
    t = torch.arange(24, dtype=torch.float64).reshape(4, 6)[:, ::2].t()  # strided view
    assert not t.is_contiguous()
    a = from_container(t)
    assert np.shares_memory(a, t.numpy())
    np.testing.assert_array_equal(bnfast.mean_var(t, axis=1)[0], t.numpy().mean(axis=1))


def test_torch_running_stats_updated_in_place(backend):
    torch = _torch()
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 5, generator=gen)
    rm, rv = torch.zeros(3), torch.ones(3)
    ref_rm, ref_rv = torch.zeros(3), torch.ones(3)
    y = bnfast.batch_norm(x, rm, rv, training=True, momentum=0.1)
    y_ref = F.batch_norm(x, ref_rm, ref_rv, training=True, momentum=0.1)
    assert type(y) is np.ndarray
    # float32 output of a float64-exact computation vs PyTorch's float32
    # arithmetic: a few float32 ulps of values of magnitude ~3.
    np.testing.assert_allclose(y, y_ref.numpy(), rtol=0, atol=4e-6 * 4)
    # The running statistics were updated in the tensors' own memory.
    np.testing.assert_allclose(rm.numpy(), ref_rm.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rv.numpy(), ref_rv.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(rm.numpy(), np.zeros(3))
    # instance norm with running statistics goes through the same check
    rm2, rv2 = torch.zeros(3), torch.ones(3)
    ref_rm2, ref_rv2 = torch.zeros(3), torch.ones(3)
    bnfast.instance_norm(x, running_mean=rm2, running_var=rv2, momentum=0.1)
    F.instance_norm(x, ref_rm2, ref_rv2, use_input_stats=True, momentum=0.1)
    np.testing.assert_allclose(rm2.numpy(), ref_rm2.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rv2.numpy(), ref_rv2.numpy(), rtol=1e-6, atol=1e-7)


def test_torch_out_written_in_place(backend):
    torch = _torch()
    x = torch.randn(4, 6, dtype=torch.float64)
    out = torch.full((4, 6), 7.0, dtype=torch.float64)
    got = bnfast.layer_norm(x, out=out)
    assert type(got) is np.ndarray and np.shares_memory(got, out.numpy())
    np.testing.assert_array_equal(out.numpy(), bnfast.layer_norm(x.numpy()))
    out32 = torch.zeros(4, 6)
    with pytest.raises(TypeError, match="dtype"):
        bnfast.layer_norm(x, out=out32)  # the existing dtype check sees the ndarray


def test_torch_refusals_name_the_fix(backend):
    torch = _torch()
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"running_mean\.detach\(\)"):
        bnfast.batch_norm(x, torch.zeros(3, requires_grad=True), torch.ones(3), training=True)
    with pytest.raises(ValueError, match=r"out\.detach\(\)"):
        bnfast.layer_norm(x, out=torch.zeros(4, 3, requires_grad=True))
    with pytest.raises(TypeError, match=r"to_dense\(\)"):
        bnfast.mean_var(x.to_sparse())
    with pytest.raises(TypeError, match=r"no NumPy equivalent.*x\.float\(\)"):
        bnfast.mean_var(torch.zeros(3).to(torch.float8_e4m3fn))


def test_torch_non_cpu_tensor_is_refused(backend):
    torch = _torch()
    meta = torch.empty(4, 3, device="meta")  # a non-CPU device on every machine
    with pytest.raises(TypeError, match=r"on meta.*x\.cpu\(\)"):
        bnfast.mean_var(meta)
    with pytest.raises(TypeError, match=r"out\.cpu\(\)"):
        bnfast.layer_norm(torch.randn(4, 3), out=meta)


def test_torch_bfloat16_converted_through_ml_dtypes():
    torch = _torch()
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    t = torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16)
    a = from_container(t)
    assert a.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(a.astype(np.float32), t.float().numpy())
    # Same memory: a write through the array shows in the tensor.
    a[0] = 4.0
    assert t[0].item() == 4.0
    out = torch.zeros(3, dtype=torch.bfloat16)
    from_container(out, "out", writable=True)[1] = 2.0
    assert out[1].item() == 2.0


def test_torch_bfloat16_through_an_op(backend):
    torch = _torch()
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    t = torch.randn(16, 4).to(torch.bfloat16)
    mean, _ = bnfast.mean_var(t, axis=0)
    assert mean.dtype.name == "bfloat16"
    # The mean is rounded once to bfloat16: within one ulp (2**-7 relative).
    np.testing.assert_allclose(
        np.asarray(mean, dtype=np.float64), t.double().mean(dim=0).numpy(), rtol=2**-7
    )


def test_torch_bfloat16_without_ml_dtypes_is_a_clear_error(monkeypatch):
    torch = _torch()
    import bnfast._validate as validate

    monkeypatch.setattr(validate, "_ml_dtypes_bfloat16", lambda: None)
    with pytest.raises(TypeError, match=r"ml_dtypes.*x\.float\(\)"):
        bnfast.mean_var(torch.zeros(3, dtype=torch.bfloat16))


# ---------------------------------------------------------------------------
# DLPack objects (item 6)
# ---------------------------------------------------------------------------
class OnlyDLPack:
    """An array that offers nothing but the DLPack protocol."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class BrokenDLPack:
    """A DLPack producer on a device NumPy cannot read."""

    def __dlpack__(self, **kwargs):
        raise BufferError("this producer lives on a GPU")

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA


def test_dlpack_only_object_read_without_copy(backend):
    base = np.arange(12.0).reshape(3, 4)
    obj = OnlyDLPack(base)
    assert np.shares_memory(from_container(obj), base)
    mean, var = bnfast.mean_var(obj, axis=0)
    np.testing.assert_array_equal(mean, base.mean(axis=0))
    np.testing.assert_array_equal(var, base.var(axis=0))
    st = bnfast.Standardizer().fit(obj)
    np.testing.assert_array_equal(st.transform(obj), bnfast.Standardizer().fit_transform(base))


def test_dlpack_out_and_running_stats_share_memory(backend):
    x = np.random.default_rng(1).standard_normal((6, 3))
    out = np.zeros_like(x)
    bnfast.layer_norm(x, out=OnlyDLPack(out))
    np.testing.assert_array_equal(out, bnfast.layer_norm(x))
    rm, rv = np.zeros(3), np.ones(3)
    bnfast.batch_norm(x, OnlyDLPack(rm), OnlyDLPack(rv), training=True)
    want_rm, want_rv = np.zeros(3), np.ones(3)
    bnfast.batch_norm(x, want_rm, want_rv, training=True)
    np.testing.assert_array_equal(rm, want_rm)
    np.testing.assert_array_equal(rv, want_rv)


def test_dlpack_unreadable_object_is_a_clear_error(backend):
    with pytest.raises(TypeError, match=r"could not be read through DLPack.*GPU"):
        bnfast.mean_var(BrokenDLPack())


def test_sparse_input_to_a_dense_op_names_toarray():
    sparse = pytest.importorskip("scipy.sparse", reason="scipy.sparse input")
    with pytest.raises(TypeError, match=r"scipy\.sparse.*x\.toarray\(\)"):
        bnfast.mean_var(sparse.csr_matrix(np.eye(3)))
