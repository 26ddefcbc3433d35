"""Stateful layers bnfast.nn vs torch.nn modules.

Parity tests run a few training steps (forward + backward, same inputs) of
a torch module and the bnfast layer and compare outputs, input gradients,
parameter gradients, running statistics and num_batches_tracked, then the
same in eval mode; state_dict/load_state_dict round trips both ways.

The torch oracle runs in float64 (its float32 results are themselves only
good to ~1e-6..1e-5); bnfast runs in the layer dtype.  Tolerances: outputs
and running stats rtol 1e-5 (float32) / 1e-12 (float64), gradients 1e-4 /
1e-10, each with an atol of the same order times the reference magnitude.
"""

import numpy as np
import pytest

import bnfast
import bnfast.nn as bnn
from helpers import assert_close, grad_rtol_for, mag, make_data, needs_torch, rtol_for, torch

tnn = None if torch is None else torch.nn  # the torch-free tests below still run

DTYPES = [np.float32, np.float64]


def close(got, ref, rtol, what, floor=0.0):
    got = np.asarray(got)
    ref = np.asarray(ref, np.float64)
    assert_close(got, ref, rtol, rtol * max(mag(ref), floor), what=what)


def _t(a):
    return torch.from_numpy(np.array(a, np.float64, copy=True, order="C"))


def torch_state_for(module, dtype):
    """{k: numpy} of a (float64) torch module, floats cast to ``dtype``."""
    out = {}
    for k, v in module.state_dict().items():
        a = v.detach().numpy()
        out[k] = a.astype(dtype) if a.dtype.kind == "f" else a.copy()
    return out


def randomize(module, rng):
    """Random affine parameters and running stats (float64 torch module)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(_t(rng.standard_normal(p.shape) * 0.5 + (1.0 if name == "weight" else 0.0)))
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.copy_(_t(rng.standard_normal(module.running_mean.shape)))
            module.running_var.copy_(_t(rng.uniform(0.5, 2.0, module.running_var.shape)))


def step(tm, layer, x, dy, axis, dtype, what, check_grads=True, one_element=False):
    """One forward/backward of both; compare everything.

    ``one_element``: the normalized groups hold a single element, so the
    exact dx is 0 and only rounding noise remains (torch's included): allow
    16 ulps of the terms dy*w*rstd with rstd = 1/sqrt(eps) there."""
    xt = _t(np.moveaxis(x, axis, 1) if axis is not None else x).requires_grad_(True)
    tm.zero_grad(set_to_none=True)
    yt = tm(xt)
    yt.backward(_t(np.moveaxis(dy, axis, 1) if axis is not None else dy))
    back = (lambda a: np.moveaxis(a, 1, axis)) if axis is not None else (lambda a: a)
    y = layer(x)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == x.shape
    # outputs: x - mean is rounded in the input precision, amplified by
    # rstd*|w| (<= ~3 for the data here): covered by the atol*magnitude term.
    close(y, back(yt.detach().numpy()), 3 * rtol_for(dtype), f"{what}: output", floor=1.0)
    if not check_grads:
        return
    dx = layer.backward(dy)
    assert dx.dtype == dtype and dx.shape == x.shape
    gx = back(xt.grad.numpy())
    if one_element:
        w = getattr(layer, "weight", None)
        floor = 16 * np.finfo(dtype).eps * mag(dy) * (1.0 if w is None else mag(w)) / np.sqrt(1e-5)
        assert_close(dx, gx, grad_rtol_for(dtype), floor, what=f"{what}: dx")
    else:
        close(dx, gx, grad_rtol_for(dtype), f"{what}: dx")
    for name in ("weight", "bias"):
        tp = getattr(tm, name, None)
        g = getattr(layer, "grad_" + name)
        if tp is None:
            assert g is None, f"{what}: grad_{name} should be None"
        else:
            assert g is not None and g.dtype == dtype, f"{what}: grad_{name}"
            if one_element and name == "weight":
                # exact value 0 (xhat == 0); torch's float64 xhat carries
                # ~ulp(x)*rstd of noise, summed over the batch
                floor = (
                    16
                    * np.finfo(np.float64).eps
                    * float(np.abs(dy).sum())
                    * (mag(x) + 1)
                    / np.sqrt(1e-5)
                )
                assert_close(
                    g, tp.grad.numpy(), grad_rtol_for(dtype), floor, what=f"{what}: grad_{name}"
                )
            else:
                close(g, tp.grad.numpy(), grad_rtol_for(dtype), f"{what}: grad_{name}")


def compare_buffers(tm, layer, dtype, what):
    if getattr(tm, "running_mean", None) is None:
        assert getattr(layer, "running_mean", None) is None
        assert getattr(layer, "running_var", None) is None
        return
    assert layer.running_mean.dtype == dtype and layer.running_var.dtype == dtype
    close(
        layer.running_mean,
        tm.running_mean.numpy(),
        rtol_for(dtype),
        f"{what}: running_mean",
        floor=1.0,
    )
    close(layer.running_var, tm.running_var.numpy(), rtol_for(dtype), f"{what}: running_var")
    assert int(layer.num_batches_tracked) == int(tm.num_batches_tracked)


def _torch_bn(ndim, **kw):
    cls = {2: tnn.BatchNorm1d, 3: tnn.BatchNorm1d, 4: tnn.BatchNorm2d, 5: tnn.BatchNorm3d}[ndim]
    return cls(**kw, dtype=torch.float64)


# ==========================================================================
# BatchNorm
# ==========================================================================
BN_CONFIGS = [
    # shape (channels first), momentum, affine, track
    ((8, 5, 6, 7), 0.1, True, True),
    ((8, 5, 6, 7), None, True, True),
    ((16, 33), 0.3, True, True),
    ((4, 16, 17), 0.1, False, True),
    ((4, 7, 15), 0.1, True, False),
    ((2, 3, 4, 5, 6), None, False, False),
    ((1, 17, 16, 1), 0.5, True, True),
]


@needs_torch
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", BN_CONFIGS, ids=str)
def test_batchnorm_matches_torch(backend, cfg, dtype, axis):
    shape, momentum, affine, track = cfg
    rng = np.random.default_rng(len(shape) * 10 + shape[1])
    C = shape[1]
    tm = _torch_bn(
        len(shape), num_features=C, momentum=momentum, affine=affine, track_running_stats=track
    )
    randomize(tm, rng)
    layer = bnn.BatchNorm(
        C, momentum=momentum, affine=affine, track_running_stats=track, axis=axis, dtype=dtype
    )
    layer.load_state_dict(torch_state_for(tm, dtype))
    assert layer.training and tm.training
    shape_b = tuple(np.moveaxis(np.empty(shape), 1, axis).shape)
    for i in range(3):
        x = make_data(rng, shape_b, dtype, offset=0.5 * i, scale=1.0 + i)
        dy = make_data(rng, shape_b, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, axis, dtype, f"train step {i}")
        compare_buffers(tm, layer, dtype, f"train step {i}")
    assert layer.eval() is layer and not layer.training
    tm.eval()
    for i in range(2):
        x = make_data(rng, shape_b, dtype)
        dy = make_data(rng, shape_b, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, axis, dtype, f"eval step {i}")
        compare_buffers(tm, layer, dtype, f"eval step {i}")  # eval: buffers unchanged
    assert layer.train() is layer and layer.training


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_defaults_and_state_dict_layout(dtype):
    """Keys/shapes/initial values of torch.nn.BatchNorm2d(7).state_dict()."""
    layer = bnn.BatchNorm(7, dtype=dtype)
    assert layer.training
    sd = layer.state_dict()
    expected = {
        "weight": np.ones(7),
        "bias": np.zeros(7),
        "running_mean": np.zeros(7),
        "running_var": np.ones(7),
    }
    assert set(sd) == set(expected) | {"num_batches_tracked"}
    for k, v in expected.items():
        assert isinstance(sd[k], np.ndarray), k
        assert sd[k].shape == (7,) and sd[k].dtype == dtype, k
        assert np.array_equal(sd[k], v), k
    nbt = np.asarray(sd["num_batches_tracked"])
    assert nbt.dtype == np.int64 and nbt.shape == () and nbt == 0
    assert layer.weight.dtype == dtype and layer.running_var.dtype == dtype
    assert layer.num_batches_tracked == 0
    assert isinstance(layer.num_batches_tracked, (int, np.integer))
    # float32 is the default dtype
    d = bnn.BatchNorm(3)
    assert d.weight.dtype == np.float32 and d.running_mean.dtype == np.float32
    # no affine / no tracking: attributes None and keys absent, like torch
    na = bnn.BatchNorm(3, affine=False, track_running_stats=False)
    assert na.weight is None and na.bias is None
    assert na.state_dict() == {}
    nt = bnn.BatchNorm(3, track_running_stats=False)
    assert set(nt.state_dict()) == {"weight", "bias"} and nt.running_mean is None


STATE_CASES = [
    ("BatchNorm", {}),
    ("BatchNorm", {"affine": False}),
    ("BatchNorm", {"track_running_stats": False}),
    ("LayerNorm", {}),
    ("LayerNorm", {"bias": False}),
    ("LayerNorm", {"elementwise_affine": False}),
    ("GroupNorm", {}),
    ("GroupNorm", {"affine": False}),
    ("InstanceNorm", {}),
    ("InstanceNorm", {"affine": True}),
    ("InstanceNorm", {"track_running_stats": True}),
    ("InstanceNorm", {"affine": True, "track_running_stats": True}),
    ("RMSNorm", {}),
    ("RMSNorm", {"elementwise_affine": False}),
]


@needs_torch
@pytest.mark.parametrize("name,kw", STATE_CASES, ids=str)
def test_state_dict_keys_and_shapes_match_torch(name, kw):
    mk = {
        "BatchNorm": (lambda **k: bnn.BatchNorm(6, **k), lambda **k: tnn.BatchNorm2d(6, **k)),
        "LayerNorm": (
            lambda **k: bnn.LayerNorm((3, 4), **k),
            lambda **k: tnn.LayerNorm((3, 4), **k),
        ),
        "GroupNorm": (lambda **k: bnn.GroupNorm(3, 6, **k), lambda **k: tnn.GroupNorm(3, 6, **k)),
        "InstanceNorm": (
            lambda **k: bnn.InstanceNorm(6, **k),
            lambda **k: tnn.InstanceNorm2d(6, **k),
        ),
        "RMSNorm": (lambda **k: bnn.RMSNorm((3, 4), **k), lambda **k: tnn.RMSNorm((3, 4), **k)),
    }[name]
    sd = mk[0](**kw).state_dict()
    tsd = mk[1](**kw).state_dict()
    assert set(sd) == set(tsd)
    for k, v in tsd.items():
        a = np.asarray(sd[k])
        assert a.shape == tuple(v.shape), k
        assert np.array_equal(a, v.numpy()), k  # same initial values
        if v.dtype == torch.int64:
            assert a.dtype == np.int64, k


def test_state_dict_reload_restores_eval_behaviour(backend):
    """state_dict -> load_state_dict into a fresh layer reproduces the eval output."""
    rng = np.random.default_rng(0)
    layer = bnn.BatchNorm(4)
    x = make_data(rng, (8, 4, 5), np.float32)
    layer(x)
    sd = {k: np.array(v, copy=True) for k, v in layer.state_dict().items()}
    y1 = layer.eval()(x)
    other = bnn.BatchNorm(4)
    other.load_state_dict(sd)
    assert other.num_batches_tracked == 1
    assert np.array_equal(other.eval()(x), y1)


@needs_torch
def test_batchnorm_torch_to_bnfast_round_trip(backend):
    """A trained torch BatchNorm2d (float32) loaded into bnfast gives torch's eval output."""
    rng = np.random.default_rng(1)
    tm = tnn.BatchNorm2d(6, momentum=0.2)
    with torch.no_grad():
        tm.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2, 6).astype(np.float32)))
        tm.bias.copy_(torch.from_numpy(rng.standard_normal(6).astype(np.float32)))
    for _ in range(3):
        tm(torch.from_numpy(make_data(rng, (5, 6, 4, 4), np.float32)))
    layer = bnn.BatchNorm(6)
    layer.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert layer.num_batches_tracked == 3
    assert np.array_equal(layer.running_mean, tm.running_mean.numpy())
    x = make_data(rng, (5, 6, 4, 4), np.float32)
    tm.eval()
    layer.eval()
    yt = tm(torch.from_numpy(x)).detach().numpy()
    # eval is a per-channel affine map in float32 on both sides
    close(layer(x), yt, 1e-5, "eval output", floor=1.0)


@needs_torch
def test_batchnorm_bnfast_to_torch_round_trip(backend):
    rng = np.random.default_rng(2)
    layer = bnn.BatchNorm(6, momentum=None)
    layer.weight[...] = rng.uniform(0.5, 2, 6)
    layer.bias[...] = rng.standard_normal(6)
    for _ in range(4):
        layer(make_data(rng, (5, 6, 3, 3), np.float32))
    sd = layer.state_dict()
    tm = tnn.BatchNorm2d(6, momentum=None)
    tm.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    assert int(tm.num_batches_tracked) == 4
    assert np.array_equal(tm.weight.detach().numpy(), layer.weight)
    x = make_data(rng, (5, 6, 3, 3), np.float32)
    tm.eval()
    close(layer.eval()(x), tm(torch.from_numpy(x)).detach().numpy(), 1e-5, "eval output", floor=1.0)


# ==========================================================================
# load_state_dict errors
# ==========================================================================
def _bad_dicts(good):
    k0 = next(k for k, v in good.items() if np.asarray(v).ndim >= 1)
    missing = {k: v for k, v in good.items() if k != k0}
    unexpected = dict(good, bogus_key=np.zeros(3, np.float32))
    wrong_shape = dict(good)
    s0 = np.asarray(good[k0]).shape
    wrong_shape[k0] = np.zeros((s0[0] + 1,) + s0[1:], np.asarray(good[k0]).dtype)
    renamed = {("w8" if k == k0 else k): v for k, v in good.items()}
    return [
        ("missing", missing, k0),
        ("unexpected", unexpected, "bogus_key"),
        ("wrong shape", wrong_shape, k0),
        ("renamed", renamed, k0),
    ]


LAYER_FACTORIES = {
    "BatchNorm": lambda: bnn.BatchNorm(5),
    "LayerNorm": lambda: bnn.LayerNorm((3, 5)),
    "GroupNorm": lambda: bnn.GroupNorm(5, 10),
    "InstanceNorm": lambda: bnn.InstanceNorm(5, affine=True, track_running_stats=True),
    "RMSNorm": lambda: bnn.RMSNorm(5),
}


@pytest.mark.parametrize("name", list(LAYER_FACTORIES))
def test_load_state_dict_errors_name_the_key(name):
    good = {k: np.array(v, copy=True) for k, v in LAYER_FACTORIES[name]().state_dict().items()}
    LAYER_FACTORIES[name]().load_state_dict(good)  # baseline works
    for kind, bad, key in _bad_dicts(good):
        layer = LAYER_FACTORIES[name]()
        with pytest.raises(ValueError) as ei:
            layer.load_state_dict(bad)
        assert key in str(ei.value), f"{name} {kind}: message {ei.value!s} does not name {key!r}"


def test_load_state_dict_wrong_shape_leaves_layer_usable():
    layer = bnn.BatchNorm(5)
    w0 = layer.weight.copy()
    with pytest.raises(ValueError):
        layer.load_state_dict(dict(layer.state_dict(), weight=np.ones((2, 5), np.float32)))
    assert layer.weight.shape == (5,) and np.array_equal(layer.weight, w0)


# ==========================================================================
# LayerNorm
# ==========================================================================
LN_CONFIGS = [
    ((8, 33), 33, True, True),
    ((4, 7, 16), 16, True, False),
    ((4, 7, 16), (7, 16), True, True),
    ((3, 2, 15, 17), (15, 17), False, True),
    ((5, 1), 1, True, True),
]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", LN_CONFIGS, ids=str)
def test_layernorm_matches_torch(backend, cfg, dtype):
    shape, nshape, affine, bias = cfg
    rng = np.random.default_rng(sum(shape))
    tm = tnn.LayerNorm(nshape, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    randomize(tm, rng)
    layer = bnn.LayerNorm(nshape, elementwise_affine=affine, bias=bias, dtype=dtype)
    tsd = torch_state_for(tm, dtype)
    assert set(layer.state_dict()) == set(tsd)
    layer.load_state_dict(tsd)
    if not affine:
        assert layer.weight is None and layer.bias is None
    elif not bias:
        assert layer.bias is None and "bias" not in layer.state_dict()
    for i in range(2):
        x = make_data(rng, shape, dtype)
        dy = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, None, dtype, f"step {i}", one_element=np.prod(nshape) == 1)
    layer.eval()
    tm.eval()
    x = make_data(rng, shape, dtype)
    dy = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
    step(tm, layer, x, dy, None, dtype, "eval", one_element=np.prod(nshape) == 1)


# ==========================================================================
# GroupNorm
# ==========================================================================
GN_CONFIGS = [
    ((4, 6, 7), 3, True),
    ((2, 16, 5, 5), 4, True),
    ((3, 33, 2), 11, False),
    ((2, 8, 17), 1, True),
    ((4, 16, 1), 16, True),
]


@needs_torch
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", GN_CONFIGS, ids=str)
def test_groupnorm_matches_torch(backend, cfg, dtype, axis):
    shape, G, affine = cfg
    rng = np.random.default_rng(sum(shape) + G)
    C = shape[1]
    tm = tnn.GroupNorm(G, C, affine=affine, dtype=torch.float64)
    randomize(tm, rng)
    layer = bnn.GroupNorm(G, C, affine=affine, axis=axis, dtype=dtype)
    tsd = torch_state_for(tm, dtype)
    assert set(layer.state_dict()) == set(tsd)
    layer.load_state_dict(tsd)
    shape_b = tuple(np.moveaxis(np.empty(shape), 1, axis).shape)
    one = np.prod(shape[2:]) * (C // G) == 1
    for i in range(2):
        x = make_data(rng, shape_b, dtype)
        dy = make_data(rng, shape_b, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, axis, dtype, f"step {i}", one_element=one)
    layer.eval()
    tm.eval()
    x = make_data(rng, shape_b, dtype)
    step(tm, layer, x, make_data(rng, shape_b, dtype), axis, dtype, "eval", one_element=one)


def test_groupnorm_constructor_rejects_indivisible():
    with pytest.raises(ValueError, match="divisible by num_groups"):
        bnn.GroupNorm(4, 6)


# ==========================================================================
# InstanceNorm
# ==========================================================================
IN_CONFIGS = [
    ((4, 3, 8, 8), False, False, 0.1),
    ((4, 3, 8, 8), True, True, 0.1),
    ((2, 16, 17), True, False, 0.1),
    ((2, 5, 33), False, True, 0.3),
    ((3, 7, 4, 5), True, True, None),
]


@needs_torch
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", IN_CONFIGS, ids=str)
def test_instancenorm_matches_torch(backend, cfg, dtype, axis):
    shape, affine, track, momentum = cfg
    rng = np.random.default_rng(sum(shape) + 3)
    C = shape[1]
    cls = {3: tnn.InstanceNorm1d, 4: tnn.InstanceNorm2d}[len(shape)]
    tm = cls(C, affine=affine, track_running_stats=track, momentum=momentum, dtype=torch.float64)
    randomize(tm, rng)
    layer = bnn.InstanceNorm(
        C, affine=affine, track_running_stats=track, momentum=momentum, axis=axis, dtype=dtype
    )
    tsd = torch_state_for(tm, dtype)
    assert set(layer.state_dict()) == set(tsd)
    layer.load_state_dict(tsd)
    if not affine:
        assert layer.weight is None and layer.bias is None
    shape_b = tuple(np.moveaxis(np.empty(shape), 1, axis).shape)
    for i in range(3):
        x = make_data(rng, shape_b, dtype, offset=0.3 * i)
        dy = make_data(rng, shape_b, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, axis, dtype, f"train step {i}")
        compare_buffers(tm, layer, dtype, f"train step {i}")
    layer.eval()
    tm.eval()
    # eval: running stats when tracking, input stats otherwise
    for i in range(2):
        x = make_data(rng, shape_b, dtype)
        dy = make_data(rng, shape_b, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, axis, dtype, f"eval step {i}")
        compare_buffers(tm, layer, dtype, f"eval step {i}")


# ==========================================================================
# RMSNorm
# ==========================================================================
RMS_CONFIGS = [
    ((8, 33), 33, None, True),
    ((4, 7, 16), (7, 16), 1e-5, True),
    ((3, 17), 17, None, False),
    ((5, 1), 1, 1e-3, True),
]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", RMS_CONFIGS, ids=str)
def test_rmsnorm_matches_torch(backend, cfg, dtype):
    shape, nshape, eps, affine = cfg
    rng = np.random.default_rng(sum(shape) + 9)
    # torch's default eps follows its (float64 oracle) input dtype; bnfast's
    # follows the float32/float64 data: give torch the value bnfast must use.
    teps = float(np.finfo(dtype).eps) if eps is None else eps
    tm = tnn.RMSNorm(nshape, eps=teps, elementwise_affine=affine, dtype=torch.float64)
    randomize(tm, rng)
    layer = bnn.RMSNorm(nshape, eps=eps, elementwise_affine=affine, dtype=dtype)
    tsd = torch_state_for(tm, dtype)
    assert set(layer.state_dict()) == set(tsd)
    layer.load_state_dict(tsd)
    assert layer.bias is None
    for i in range(2):
        # small data so that the default eps matters
        x = make_data(rng, shape, dtype, offset=0.0, scale=1e-3 if eps is None else 1.0)
        dy = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
        step(tm, layer, x, dy, None, dtype, f"step {i}")


# ==========================================================================
# generic layer behaviour
# ==========================================================================
@pytest.mark.parametrize("name", list(LAYER_FACTORIES))
def test_train_eval_flags(name):
    layer = LAYER_FACTORIES[name]()
    assert layer.training is True
    assert layer.eval() is layer and layer.training is False
    assert layer.train() is layer and layer.training is True


@pytest.mark.parametrize(
    "name,shape",
    [
        ("BatchNorm", (4, 5, 3)),
        ("LayerNorm", (2, 3, 5)),
        ("GroupNorm", (2, 10, 3)),
        ("InstanceNorm", (2, 5, 4)),
        ("RMSNorm", (3, 5)),
    ],
)
def test_dtype_float64_layers(backend, name, shape):
    factories = {
        "BatchNorm": lambda: bnn.BatchNorm(5, dtype=np.float64),
        "LayerNorm": lambda: bnn.LayerNorm((3, 5), dtype=np.float64),
        "GroupNorm": lambda: bnn.GroupNorm(5, 10, dtype=np.float64),
        "InstanceNorm": lambda: bnn.InstanceNorm(
            5, affine=True, track_running_stats=True, dtype=np.float64
        ),
        "RMSNorm": lambda: bnn.RMSNorm(5, dtype=np.float64),
    }
    layer = factories[name]()
    for k, v in layer.state_dict().items():
        if k != "num_batches_tracked":
            assert v.dtype == np.float64, k
    assert LAYER_FACTORIES[name]().weight.dtype == np.float32  # default
    x = make_data(np.random.default_rng(0), shape, np.float64)
    y = layer(x)
    assert y.dtype == np.float64
    dx = layer.backward(np.ones_like(x))
    assert dx.dtype == np.float64 and dx.shape == x.shape
    assert layer.grad_weight.dtype == np.float64


def test_batchnorm_momentum_none_is_cumulative_average(backend):
    """momentum=None: running stats are the plain average of the batch
    statistics seen so far (factor 1/num_batches_tracked)."""
    rng = np.random.default_rng(3)
    layer = bnn.BatchNorm(4, momentum=None, dtype=np.float64)
    means, uvars = [], []
    for i in range(5):
        x = make_data(rng, (6, 4, 3), np.float64, offset=float(i), scale=1.0 + i)
        layer(x)
        means.append(x.mean(axis=(0, 2)))
        uvars.append(x.var(axis=(0, 2), ddof=1))
    assert layer.num_batches_tracked == 5
    close(layer.running_mean, np.mean(means, axis=0), 1e-12, "running_mean", floor=1.0)
    close(layer.running_var, np.mean(uvars, axis=0), 1e-12, "running_var")


def test_batchnorm_no_tracking_uses_batch_stats_in_eval(backend):
    rng = np.random.default_rng(4)
    layer = bnn.BatchNorm(4, track_running_stats=False, dtype=np.float64)
    x = make_data(rng, (6, 4, 3), np.float64)
    y_train = layer(x)
    y_eval = layer.eval()(x)
    close(y_eval, y_train, 1e-12, "eval == train output", floor=1.0)
    ref = bnfast.batch_norm(x, weight=layer.weight, bias=layer.bias, training=True)
    close(y_eval, ref, 1e-12, "batch statistics", floor=1.0)


def test_backward_uses_last_forward(backend):
    """backward(dy) differentiates the most recent forward, and grads are
    replaced (not accumulated) by each backward."""
    rng = np.random.default_rng(5)
    layer = bnn.LayerNorm(8, dtype=np.float64)
    x1 = make_data(rng, (3, 8), np.float64)
    x2 = make_data(rng, (3, 8), np.float64, offset=2.0, scale=3.0)
    dy = make_data(rng, (3, 8), np.float64)
    layer(x1)
    layer(x2)
    dx = layer.backward(dy)
    _, m, r = bnfast.layer_norm(x2, layer.weight, layer.bias, return_stats=True)
    rdx, rdw, rdb = bnfast.layer_norm_backward(dy, x2, m, r, layer.weight)
    close(dx, rdx, 1e-12, "dx")
    layer.backward(dy)
    close(layer.grad_weight, rdw, 1e-12, "grad_weight")
    close(layer.grad_bias, rdb, 1e-12, "grad_bias")


def test_layer_does_not_modify_input(backend):
    rng = np.random.default_rng(6)
    x = make_data(rng, (4, 6, 5), np.float32)
    dy = make_data(rng, (4, 6, 5), np.float32)
    for layer in (
        bnn.BatchNorm(6),
        bnn.GroupNorm(3, 6),
        bnn.InstanceNorm(6, affine=True),
        bnn.LayerNorm(5),
        bnn.RMSNorm(5),
    ):
        x0, dy0 = x.copy(), dy.copy()
        layer(x)
        layer.backward(dy)
        assert np.array_equal(x, x0) and np.array_equal(dy, dy0), type(layer).__name__


def test_constant_channel_layers_finite(backend):
    """Constant channel of 1e4: output exactly bias, gradients finite."""
    rng = np.random.default_rng(7)
    x = make_data(rng, (4, 6, 5), np.float32)
    x[:, 2] = 1e4
    dy = make_data(rng, x.shape, np.float32)
    layer = bnn.BatchNorm(6)
    layer.bias[...] = rng.standard_normal(6)
    y = layer(x)
    assert np.all(y[:, 2] == layer.bias[2])
    dx = layer.backward(dy)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(layer.grad_weight))
