"""The benchmark's memory floor: ``memory_floor`` (one read of src, a
streaming fill of dst) against its NumPy twin under every capability, and
the harness's rule for which passes each case's floor times."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast.cli.bench import cases, harness
from helpers import core, twin

ITEM_BYTES = 4096 * 64  # the kernel's work item (kItemLines lines of 64 bytes)
# Sizes around the vector widths (16/32/64 bytes), the 8-byte word, the
# 64-byte line and the work item.
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129]
SIZES += [ITEM_BYTES + d for d in (-65, -1, 0, 1, 63)] + [3 * ITEM_BYTES + 13]


def _pair(rng, n_src, n_dst):
    src = rng.integers(0, 256, n_src, dtype=np.uint8)
    return src, np.full(n_dst, 0xAA, np.uint8), np.full(n_dst, 0xAA, np.uint8)


@pytest.mark.parametrize("n", SIZES)
def test_matches_twin(native_backend, n):
    rng = np.random.default_rng(n)
    for n_dst in (0, n // 3, n, 2 * n + 5):
        src, d_native, d_twin = _pair(rng, n, n_dst)
        before = src.copy()
        got = core.memory_floor(src, d_native, 7)
        want = twin.memory_floor(src, d_twin, 7)
        assert got == want, (n, n_dst)
        np.testing.assert_array_equal(d_native, d_twin)
        np.testing.assert_array_equal(src, before)


def test_twin_checksum_is_the_word_xor():
    # The twin is the specification: check it against a plain loop once.
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, 37, dtype=np.uint8)
    want = 0
    for i in range(0, 37, 8):
        want ^= int.from_bytes(bytes(src[i : i + 8]).ljust(8, b"\0"), "little")
    assert twin.memory_floor(src, np.empty(0, np.uint8)) == want


@given(st.integers(0, 5 * ITEM_BYTES), st.integers(0, 5 * ITEM_BYTES), st.integers(1, 3))
def test_same_for_every_thread_count(n_src, n_dst, threads):
    if core is None:
        pytest.skip("the native module bnfast._core is not built")
    rng = np.random.default_rng(n_src)
    src, dst, _ = _pair(rng, n_src, n_dst)
    with bnfast.threads(threads):
        got = core.memory_floor(src, dst, 3)
    assert got == twin.memory_floor(src, np.empty(0, np.uint8))
    assert np.all(dst == 3)


def test_any_contiguous_dtype_is_bytes():
    if core is None:
        pytest.skip("the native module bnfast._core is not built")
    x = np.arange(1001, dtype=np.float32).reshape(7, 143)
    assert core.memory_floor(x, np.empty(0, np.uint8)) == twin.memory_floor(
        x, np.empty(0, np.uint8)
    )


@pytest.mark.parametrize("impl", ["native", "twin"])
def test_bad_arguments(impl):
    if impl == "native" and core is None:
        pytest.skip("the native module bnfast._core is not built")
    fn = core.memory_floor if impl == "native" else twin.memory_floor
    buf = np.zeros(64, np.uint8)
    with pytest.raises(ValueError, match="src must be C-contiguous"):
        fn(buf[::2], np.empty(0, np.uint8))
    with pytest.raises(ValueError, match="dst must be C-contiguous"):
        fn(buf, buf[::2].copy()[::2])
    ro = np.zeros(8, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dst is read-only"):
        fn(buf, ro)
    with pytest.raises(ValueError, match="fill must be a byte value"):
        fn(buf, np.zeros(8, np.uint8), 256)


# --------------------------------------------------------------------------
# Which passes a case's floor times.

N = 64 * 1024 * 4  # bytes of a (64, 1024) float32 input


@pytest.mark.parametrize(
    "op, shape, layout, want",
    [
        ("mean_var axis=0", (64, 1024), "2-D", ((N, 0),)),
        ("Standardizer fit", (64, 1024), "2-D", ((N, 0),)),
        ("batch_norm eval", (64, 1024), "2-D", ((N, N),)),
        ("Standardizer transform", (64, 1024), "2-D", ((N, N),)),
        ("layer_norm", (64, 1024), "2-D", ((N, N),)),
        ("batch_norm train", (1, 64, 32, 32), "NCHW", ((N, N),)),
        ("batch_norm train", (64, 1024), "2-D", ((N, 0), (N, N))),
        ("batch_norm train", (1, 32, 32, 64), "NHWC", ((N, 0), (N, N))),
        ("layer_norm backward", (64, 1024), "2-D", ((2 * N, N),)),
        # x and dy of one channel: 2 * 4 KiB, in cache: one pass
        ("batch_norm backward", (1, 64, 32, 32), "NCHW", ((2 * N, N),)),
        ("batch_norm backward", (64, 1024), "2-D", ((2 * N, 0), (2 * N, N))),
        ("batch_norm eval (new output)", (64, 1024), "2-D", ((N, N),)),
    ],
)
def test_floor_passes(op, shape, layout, want):
    spec = cases.CaseSpec(op, shape, layout, "float32")
    assert spec.floor_passes(cache_bytes=1 << 20) == want


def test_backward_floor_of_channels_beyond_the_cache():
    spec = cases.CaseSpec("batch_norm backward", (64, 8, 64, 64), "NCHW", "float32")
    n = spec.nbytes  # a channel's x and dy: 2 MiB
    assert spec.floor_passes(cache_bytes=1 << 20) == ((2 * n, 0), (2 * n, n))
    assert spec.floor_passes(cache_bytes=4 << 20) == ((2 * n, n),)


@pytest.mark.parametrize(
    "passes, label",
    [
        (((N, 0),), "read"),
        (((N, N),), "read+write"),
        (((N, 0), (N, N)), "read, read+write"),
        (((2 * N, 0), (2 * N, N)), "2 reads, 2 reads+write"),
    ],
)
def test_floor_label(passes, label):
    assert harness.floor_label(passes, N) == label


def test_every_case_has_a_floor():
    l2 = harness.cache_bytes()
    assert l2 > 0
    for size in cases.SIZES:
        for spec in cases.case_specs(size):
            passes = spec.floor_passes(l2)
            assert passes and all(r >= spec.nbytes and w >= 0 for r, w in passes), spec.name


@pytest.mark.parametrize("op", ["group_norm", "instance_norm"])
def test_group_floor_by_layout(op):
    # 32 samples of 256 channels x 56 x 56 float32 (3.2 MB a sample), 32
    # groups of 8 channels (100 KB): channels first a group is one block;
    # channels last it spans its whole sample, so beyond the cache the
    # statistics take a read of their own.
    groups = 32 if op == "group_norm" else 256
    nchw = cases.CaseSpec(op, (32, 256, 56, 56), "NCHW", "float32", groups)
    nhwc = cases.CaseSpec(op, (32, 56, 56, 256), "NHWC", "float32", groups)
    n = nchw.nbytes
    assert nchw.floor_passes(cache_bytes=1 << 20) == ((n, n),)
    assert nhwc.floor_passes(cache_bytes=1 << 20) == ((n, 0), (n, n))
    assert nhwc.floor_passes(cache_bytes=4 << 20) == ((n, n),)
    back = cases.CaseSpec(op + " backward", (32, 56, 56, 256), "NHWC", "float32", groups)
    assert back.floor_passes(cache_bytes=4 << 20) == ((2 * n, 0), (2 * n, n))
    assert back.floor_passes(cache_bytes=8 << 20) == ((2 * n, n),)
    back_nchw = cases.CaseSpec(op + " backward", (32, 256, 56, 56), "NCHW", "float32", groups)
    assert back_nchw.floor_passes(cache_bytes=1 << 20) == ((2 * n, n),)


def test_busy_flag():
    row = harness.Row(
        "op", "1", "2-D", "float32", 1.1, 1.0, 1.25, 1.0, "read", 1.0, None, None, None
    )
    assert not row.busy and row.over_floor == pytest.approx(1.1)
    row.bnfast_p90_ms = 1.35
    assert row.busy
