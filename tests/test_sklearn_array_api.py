"""bnfast.sklearn.Standardizer under scikit-learn's array-API dispatch
(issue 14, item 7), and with tensors and DLPack objects outside it.

scikit-learn refuses ``array_api_dispatch=True`` unless scipy was imported
with ``SCIPY_ARRAY_API=1``, so the dispatch tests run in a fresh interpreter.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the adapter needs scikit-learn")

SCRIPT = textwrap.dedent(
    """
    import numpy as np, sklearn
    from bnfast.sklearn import Standardizer

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    plain = Standardizer().fit(X)
    want = plain.transform(X)
    with sklearn.config_context(array_api_dispatch=True):
        for data in (X, X.astype(np.float32)):
            st = Standardizer().fit(data)
            y = st.transform(data)
            assert type(y) is np.ndarray and y.dtype == data.dtype, (type(y), y.dtype)
            tol = 1e-15 if data.dtype == np.float64 else 1e-6
            np.testing.assert_allclose(y, want, rtol=0, atol=tol * 10)
            np.testing.assert_allclose(st.inverse_transform(y), data, rtol=tol * 10)
            st.partial_fit(data)
        try:
            import pandas as pd
        except ImportError:
            pass
        else:
            df = pd.DataFrame(X, columns=["a", "b", "c"])
            assert list(Standardizer().fit(df).feature_names_in_) == ["a", "b", "c"]
        try:
            import torch
        except ImportError:
            print("ok no-torch")
        else:
            for call in (lambda: Standardizer().fit(torch.tensor(X)),
                         lambda: plain.transform(torch.tensor(X))):
                try:
                    call()
                except TypeError as exc:
                    msg = str(exc)
                    assert "array_api_dispatch=True" in msg and "np.asarray(X)" in msg, msg
                    assert "torch.Tensor" in msg, msg
                else:
                    raise AssertionError("a torch tensor under dispatch was not refused")
            print("ok torch-refused")
    """
)


def test_adapter_under_array_api_dispatch():
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith("ok")


def test_adapter_reads_tensors_and_dlpack_outside_dispatch(backend):
    torch = pytest.importorskip("torch", reason="tensor input needs torch")
    from bnfast.sklearn import Standardizer

    X = np.random.default_rng(1).standard_normal((10, 3))
    want = Standardizer().fit_transform(X)
    got = Standardizer().fit_transform(torch.tensor(X, requires_grad=True))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, want)

    class OnlyDLPack:
        def __dlpack__(self, **kwargs):
            return X.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return X.__dlpack_device__()

    np.testing.assert_array_equal(Standardizer().fit_transform(OnlyDLPack()), want)
