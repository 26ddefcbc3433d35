"""The data subcommands of the command line: ``python -m bnfast stats|normalize|diagnose``.

Files several times larger than ``--chunk-mb`` are read in chunks and the
results compared with in-memory ``bnfast.Standardizer`` / NumPy float64
computations; the peak resident memory of a real child process is measured
for a tiny and a ~200 MB file; every bad-file case must give one
``bnfast: error:`` line and exit code 1.
"""
import hashlib
import os
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import bnfast
from bnfast import cli as _cli
from bnfast.__main__ import main
from bnfast.cli import commands as _commands
from bnfast.cli import datafiles as _datafiles
from bnfast.cli import progress as _progress

CHUNK = "0.2"  # MiB per chunk in the in-process tests (x2d is 2 MiB: 10 chunks)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def cli(capsys, *args):
    """Run ``python -m bnfast ARGS`` in process -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(code, err, *fragments):
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bnfast: error: "), err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def table_rows(out: str, header_word: str = "feature") -> dict:
    """Parse a printed stats table -> {feature label: [cells...]}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header_word])
    header = lines[start].split()
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("..."):
            rows["..."] = {}
            continue
        if line.startswith("("):  # feature index tuple such as "(0, 1)"
            label, rest = line.split(")", 1)
            cells = [label + ")"] + rest.split()
        else:
            cells = line.split()
        # (the report's last column, flags, may be empty)
        if not len(header) - 1 <= len(cells) <= len(header) or cells[0].startswith("!"):
            break
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


def make_data(seed=0, n=8191, f=64, dtype=np.float32):
    """~2 MiB float32 (n not a multiple of the chunk rows), features on
    different scales and offsets."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(1e-2, 1e3, f)
    x = rng.standard_normal((n, f)) * scale + np.linspace(-50, 50, f)
    return x.astype(dtype)


def ref_standardize(x, axis=0):
    """float64 NumPy reference of sklearn's StandardScaler (NaN omitted)."""
    x64 = x.astype(np.float64)
    with warnings.catch_warnings():  # all-NaN features: NaN, as sklearn
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x64, axis=axis, keepdims=True)
        std = np.nanstd(x64, axis=axis, keepdims=True)
    return (x64 - mean) / std, mean, std


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def x2d(tmp_path):
    x = make_data()
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, path


# --------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------
def test_stats_chunked_matches_in_memory(capsys, x2d, tmp_path):
    x, path = x2d
    assert path.stat().st_size > 8 * float(CHUNK) * 2**20  # many chunks
    stats = tmp_path / "stats.npz"
    code, out, err = cli(capsys, "stats", path, "--chunk-mb", CHUNK, "--out", stats)
    assert code == 0, err
    assert err == ""  # a quick run shows no progress bar
    loaded = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer().fit(x)
    np.testing.assert_allclose(loaded.mean_, ref.mean_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loaded.var_, ref.var_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loaded.scale_, ref.scale_, rtol=1e-12, atol=0)
    assert loaded.n_samples_seen_ == x.shape[0]
    assert loaded.feature_shape_ == (x.shape[1],)
    _, mean, std = ref_standardize(x)
    np.testing.assert_allclose(loaded.mean_, mean[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(loaded.var_), std[0], rtol=1e-10)

    # The printed table: more than 20 features -> first and last 10 rows.
    rows = table_rows(out)
    assert "..." in rows
    shown = [k for k in rows if k != "..."]
    assert shown == [str(i) for i in range(10)] + [str(i) for i in range(54, 64)]
    for j in map(int, shown):
        row = rows[str(j)]
        assert int(row["count"]) == x.shape[0]
        assert int(row["nan"]) == 0
        for name, want in (("mean", mean[0, j]), ("std", std[0, j]),
                           ("min", x[:, j].min()), ("max", x[:, j].max())):
            assert float(row[name]) == pytest.approx(float(want), rel=1e-5, abs=1e-9), (j, name)
    assert f"statistics saved to {stats}" in out


def test_stats_few_features_prints_every_row(capsys, tmp_path):
    x = make_data(n=3000, f=5)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(capsys, "stats", tmp_path / "x.npy", "--chunk-mb", "0.01")
    assert code == 0, err
    rows = table_rows(out)
    assert list(rows) == ["0", "1", "2", "3", "4"]
    assert "shape (3000, 5), dtype float32" in out


def test_stats_multi_axis_nchw(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(300, 3, 20, 20), dtype=np.uint8)
    path = tmp_path / "img.npy"
    np.save(path, x)
    stats = tmp_path / "s.npz"
    code, out, err = cli(capsys, "stats", path, "--axis", "0,2,3", "--chunk-mb", "0.05",
                         "--out", stats)
    assert code == 0, err
    st = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer(axis=(0, 2, 3)).fit(x)
    assert st.feature_shape_ == (3,)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(st.var_, ref.var_, rtol=1e-12)
    rows = table_rows(out)
    assert list(rows) == ["0", "1", "2"]
    for c in range(3):
        assert int(rows[str(c)]["count"]) == 300 * 400
        assert float(rows[str(c)]["min"]) == x[:, c].min()
        assert float(rows[str(c)]["max"]) == x[:, c].max()


def test_stats_negative_axis_and_2d_features(capsys, tmp_path):
    x = make_data(n=2000, f=12).reshape(2000, 3, 4)
    np.save(tmp_path / "x.npy", x)
    stats = tmp_path / "s.npz"
    code, out, err = cli(capsys, "stats", tmp_path / "x.npy", "--axis", "0,-1",
                         "--chunk-mb", "0.02", "--out", stats)
    assert code == 0, err
    st = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer(axis=(0, 2)).fit(x)
    assert st.feature_shape_ == (3,)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-12, atol=1e-12)
    # 2-D feature shape: labels are index tuples
    code, out, err = cli(capsys, "stats", tmp_path / "x.npy", "--chunk-mb", "0.02")
    assert code == 0, err
    assert "(2, 3)" in table_rows(out)


# --------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------
def test_normalize_chunked_matches_in_memory(capsys, x2d, tmp_path):
    x, path = x2d
    out_path = tmp_path / "y.npy"
    code, out, err = cli(capsys, "normalize", path, out_path, "--chunk-mb", CHUNK)
    assert code == 0, err
    y = np.load(out_path)
    assert y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
    ref = bnfast.Standardizer().fit(x).transform(x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    ref64, _, _ = ref_standardize(x)
    np.testing.assert_allclose(y, ref64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.astype(np.float64).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.astype(np.float64).std(0), 1, rtol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["x.npy", "y.npy"]  # no temp file left


@pytest.mark.parametrize("dtype, out_dtype", [
    (np.float64, np.float64), (np.int16, np.float64), (np.uint8, np.float64),
    (np.float16, np.float64), (np.bool_, np.float64),
])
def test_normalize_output_dtype(capsys, tmp_path, dtype, out_dtype):
    rng = np.random.default_rng(3)
    if dtype == np.bool_:
        x = rng.random((5000, 7)) < 0.3
    else:
        x = (rng.standard_normal((5000, 7)) * 20 + 30).clip(0, 200).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(capsys, "normalize", tmp_path / "x.npy", tmp_path / "y.npy",
                         "--chunk-mb", "0.02")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == out_dtype
    ref = bnfast.Standardizer().fit(x).transform(x)
    assert ref.dtype == out_dtype
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_normalize_nchw_axes(capsys, tmp_path):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((200, 3, 16, 16)) * [[[1.0]], [[5.0]], [[0.1]]] + 7).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = cli(capsys, "normalize", tmp_path / "x.npy", tmp_path / "y.npy",
                       "--axis", "0,2,3", "--chunk-mb", "0.03")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    ref = bnfast.Standardizer(axis=(0, 2, 3)).fit(x).transform(x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    ref64, _, _ = ref_standardize(x, axis=(0, 2, 3))
    np.testing.assert_allclose(y, ref64, rtol=1e-5, atol=1e-5)


def test_big_endian_file(capsys, tmp_path):
    x = make_data(n=3000, f=6)
    np.save(tmp_path / "be.npy", x.astype(">f4"))
    np.save(tmp_path / "le.npy", x)
    for name in ("be", "le"):
        code, _, err = cli(capsys, "normalize", tmp_path / f"{name}.npy",
                           tmp_path / f"y_{name}.npy", "--chunk-mb", "0.01")
        assert code == 0, err
    y_be, y_le = np.load(tmp_path / "y_be.npy"), np.load(tmp_path / "y_le.npy")
    assert y_be.dtype == np.float32 and y_be.dtype.isnative
    np.testing.assert_array_equal(y_be, y_le)


# --------------------------------------------------------------------------
# NaN
# --------------------------------------------------------------------------
@pytest.fixture
def xnan(tmp_path):
    x = make_data(n=6000, f=6)
    rng = np.random.default_rng(5)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 4] = np.nan  # one all-NaN feature
    path = tmp_path / "nan.npy"
    np.save(path, x)
    return x, path


def test_stats_with_nan(capsys, xnan, tmp_path):
    x, path = xnan
    stats = tmp_path / "s.npz"
    code, out, err = cli(capsys, "stats", path, "--chunk-mb", "0.02", "--out", stats)
    assert code == 0, err
    rows = table_rows(out)
    nan_count = np.isnan(x).sum(0)
    for j in range(6):
        assert int(rows[str(j)]["nan"]) == nan_count[j]
        assert int(rows[str(j)]["count"]) == x.shape[0] - nan_count[j]
    assert rows["4"]["mean"] == "nan" and rows["4"]["min"] == "nan"
    st = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer().fit(x)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(st.var_, ref.var_, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(st.n_samples_seen_, ref.n_samples_seen_)
    ok = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(st.mean_[ok], np.nanmean(x[:, ok].astype(np.float64), 0), rtol=1e-10)


def test_stats_nan_policies(capsys, xnan):
    x, path = xnan
    code, out, err = cli(capsys, "stats", path, "--nan-policy", "propagate", "--chunk-mb", "0.02")
    assert code == 0, err
    assert all(row["mean"] == "nan" for row in table_rows(out).values())  # every feature has a NaN
    code, out, err = cli(capsys, "stats", path, "--nan-policy", "raise", "--chunk-mb", "0.02")
    assert_one_error(code, err, str(path), "NaN")
    assert out == ""


def test_normalize_with_nan(capsys, xnan, tmp_path):
    x, path = xnan
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", "0.02")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    ref = bnfast.Standardizer().fit(x).transform(x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6, equal_nan=True)
    ref64, _, _ = ref_standardize(x)
    np.testing.assert_allclose(y, ref64, rtol=1e-5, atol=1e-5, equal_nan=True)


# --------------------------------------------------------------------------
# .npz members, Fortran order
# --------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_npz_members(capsys, x2d, tmp_path, compressed):
    x, path = x2d
    save = np.savez_compressed if compressed else np.savez
    arch = tmp_path / "data.npz"
    save(arch, train=x, other=x[:10] * 2)
    save(tmp_path / "one.npz", x)
    with zipfile.ZipFile(arch) as zf:
        kinds = {i.compress_type for i in zf.infolist()}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}
    with _datafiles.open_data(f"{arch}:train") as src:
        want = _datafiles._StreamSource if compressed else _datafiles._MappedSource
        assert isinstance(src, want)
        assert src.shape == x.shape and src.dtype == x.dtype

    code, _, err = cli(capsys, "normalize", path, tmp_path / "ref.npy", "--chunk-mb", CHUNK)
    assert code == 0, err
    ref = np.load(tmp_path / "ref.npy")
    for data in (f"{arch}:train", f"{arch}:train.npy", tmp_path / "one.npz",
                 f"{tmp_path / 'one.npz'}:arr_0"):
        code, _, err = cli(capsys, "normalize", data, tmp_path / "y.npy", "--chunk-mb", CHUNK,
                           "--force")
        assert code == 0, (data, err)
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), ref)
    code, out, err = cli(capsys, "stats", f"{arch}:other", "--chunk-mb", CHUNK)
    assert code == 0, err
    assert float(table_rows(out)["0"]["max"]) == pytest.approx(float(x[:10, 0].max() * 2), rel=1e-5)

    code, _, err = cli(capsys, "stats", f"{arch}:nope")
    assert_one_error(code, err, "nope", "other, train")
    code, _, err = cli(capsys, "stats", arch)  # two arrays, no member named
    assert_one_error(code, err, "2 arrays", "other, train")


def test_npz_unaligned_stored_member(capsys, tmp_path):
    # np.savez puts the data at an odd offset; the memory-mapped view is unaligned.
    x = make_data(n=2000, f=3, dtype=np.float64)
    np.savez(tmp_path / "a.npz", x)
    with _datafiles.open_data(str(tmp_path / "a.npz")) as src:
        assert src.data_offset % 8 != 0
    stats = tmp_path / "s.npz"
    code, _, err = cli(capsys, "stats", tmp_path / "a.npz", "--chunk-mb", "0.01", "--out", stats)
    assert code == 0, err
    np.testing.assert_allclose(bnfast.Standardizer.load(stats).mean_,
                               bnfast.Standardizer().fit(x).mean_, rtol=1e-12)


def test_fortran_order_file(capsys, x2d, tmp_path):
    x, path = x2d
    fpath = tmp_path / "f.npy"
    np.save(fpath, np.asfortranarray(x))
    with _datafiles.open_data(str(fpath)) as src:
        assert src.fortran_order
    for name, data in (("c", path), ("f", fpath)):
        code, _, err = cli(capsys, "normalize", data, tmp_path / f"y_{name}.npy",
                           "--chunk-mb", CHUNK)
        assert code == 0, err
        code, _, err = cli(capsys, "stats", data, "--chunk-mb", CHUNK,
                           "--out", tmp_path / f"s_{name}.npz")
        assert code == 0, err
    y_c, y_f = np.load(tmp_path / "y_c.npy"), np.load(tmp_path / "y_f.npy")
    assert y_f.flags.c_contiguous
    np.testing.assert_allclose(y_f, y_c, rtol=1e-6, atol=1e-6)
    s_c = bnfast.Standardizer.load(tmp_path / "s_c.npz")
    s_f = bnfast.Standardizer.load(tmp_path / "s_f.npz")
    np.testing.assert_allclose(s_f.mean_, s_c.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s_f.var_, s_c.var_, rtol=1e-12)

    # A compressed Fortran-order member cannot be streamed in row chunks.
    np.savez_compressed(tmp_path / "fc.npz", a=np.asfortranarray(x))
    code, _, err = cli(capsys, "stats", f"{tmp_path / 'fc.npz'}:a")
    assert_one_error(code, err, "Fortran")
    # ... but a stored one is memory-mapped.
    np.savez(tmp_path / "fs.npz", a=np.asfortranarray(x))
    code, _, err = cli(capsys, "normalize", f"{tmp_path / 'fs.npz'}:a", tmp_path / "y_fs.npy",
                       "--chunk-mb", CHUNK)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y_fs.npy"), y_f)


# --------------------------------------------------------------------------
# --stats reuse
# --------------------------------------------------------------------------
def test_normalize_with_saved_stats(capsys, tmp_path):
    train, test = make_data(seed=1, n=5000, f=8), make_data(seed=2, n=3001, f=8) * 1.5
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    stats = tmp_path / "s.npz"
    assert cli(capsys, "stats", tmp_path / "train.npy", "--out", stats)[0] == 0
    code, _, err = cli(capsys, "normalize", tmp_path / "test.npy", tmp_path / "y.npy",
                       "--stats", stats, "--chunk-mb", "0.02")
    assert code == 0, err
    want = bnfast.Standardizer().fit(train).transform(test)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-6, atol=1e-6)

    # wrong number of features: refused before anything is written
    np.save(tmp_path / "wide.npy", make_data(n=100, f=9))
    code, _, err = cli(capsys, "normalize", tmp_path / "wide.npy", tmp_path / "w.npy",
                       "--stats", stats)
    assert_one_error(code, err, "(9,)", "(8,)")
    assert not (tmp_path / "w.npy").exists()
    # not a Standardizer file / missing file
    np.savez(tmp_path / "junk.npz", a=np.ones(3))
    for bad in (tmp_path / "junk.npz", tmp_path / "missing.npz"):
        code, _, err = cli(capsys, "normalize", tmp_path / "test.npy", tmp_path / "w.npy",
                           "--stats", bad)
        assert_one_error(code, err, str(bad))
        assert not (tmp_path / "w.npy").exists()
    assert sorted(os.listdir(tmp_path)) == ["junk.npz", "s.npz", "test.npy", "train.npy",
                                            "wide.npy", "y.npy"]


def test_saved_stats_keep_their_axes(capsys, tmp_path):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((64, 3, 8, 8)) * [[[2.0]], [[3.0]], [[4.0]]]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    stats = tmp_path / "s.npz"
    assert cli(capsys, "stats", tmp_path / "x.npy", "--axis", "0,2,3", "--out", stats)[0] == 0
    code, _, err = cli(capsys, "normalize", tmp_path / "x.npy", tmp_path / "y.npy",
                       "--stats", stats, "--chunk-mb", "0.01")
    assert code == 0, err
    ref = bnfast.Standardizer(axis=(0, 2, 3)).fit(x).transform(x)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-6, atol=1e-6)
    code, _, err = cli(capsys, "normalize", tmp_path / "x.npy", tmp_path / "z.npy",
                       "--stats", stats, "--axis", "0")
    assert_one_error(code, err, "--axis")
    assert not (tmp_path / "z.npy").exists()


# --------------------------------------------------------------------------
# output safety
# --------------------------------------------------------------------------
def test_output_never_overwrites_input(capsys, x2d, tmp_path):
    x, path = x2d
    before = sha(path)
    os.symlink(path, tmp_path / "link.npy")
    os.link(path, tmp_path / "hard.npy")
    np.savez(tmp_path / "a.npz", a=x)
    arch_before = sha(tmp_path / "a.npz")
    cases = [
        ("normalize", path, path, "--force"),
        ("normalize", path, tmp_path / "link.npy", "--force"),
        ("normalize", tmp_path / "link.npy", path, "--force"),
        ("normalize", path, tmp_path / "hard.npy", "--force"),
        ("normalize", f"{tmp_path / 'a.npz'}:a", tmp_path / "a.npz", "--force"),
        ("normalize", path, tmp_path / "sub" / ".." / "x.npy", "--force"),
        ("stats", path, "--out", path),
        ("stats", f"{tmp_path / 'a.npz'}:a", "--out", tmp_path / "a"),  # np.savez adds .npz
        ("diagnose", path, "--plot", path),
    ]
    os.mkdir(tmp_path / "sub")
    for args in cases:
        code, out, err = cli(capsys, *args)
        assert_one_error(code, err, "input")
    assert sha(path) == before
    assert sha(tmp_path / "a.npz") == arch_before
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_existing_output_needs_force(capsys, x2d, tmp_path):
    x, path = x2d
    out = tmp_path / "y.npy"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    code, _, err = cli(capsys, "normalize", path, out)
    assert_one_error(code, err, "exists", "--force")
    assert out.read_bytes() == b"old"
    code, _, err = cli(capsys, "normalize", path, out, "--force", "--chunk-mb", CHUNK)
    assert code == 0, err
    assert np.load(out).shape == x.shape
    assert os.stat(out).st_mode & 0o777 == 0o640  # the replaced file's mode is kept
    # a directory as OUT is refused, even with --force
    code, _, err = cli(capsys, "normalize", path, tmp_path, "--force")
    assert_one_error(code, err, "directory")


def test_new_output_mode_follows_umask(capsys, x2d, tmp_path):
    _, path = x2d
    old = os.umask(0o027)
    try:
        code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    finally:
        os.umask(old)
    assert code == 0, err
    assert os.stat(tmp_path / "y.npy").st_mode & 0o777 == 0o640


def _failing_transform(monkeypatch, exc):
    """Make Standardizer.transform raise ``exc`` on its second call."""
    orig = bnfast.Standardizer.transform
    calls = []

    def transform(self, X, out=None):
        calls.append(X.shape[0])
        if len(calls) == 2:
            raise exc
        return orig(self, X, out=out)

    monkeypatch.setattr(bnfast.Standardizer, "transform", transform)
    return calls


def test_interrupted_run_leaves_nothing(capsys, x2d, tmp_path, monkeypatch):
    x, path = x2d
    calls = _failing_transform(monkeypatch, KeyboardInterrupt())
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    assert code == 130
    assert err.strip() == "bnfast: interrupted"
    assert len(calls) == 2
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]

    # an existing OUT survives an interrupted --force run unchanged
    (tmp_path / "y.npy").write_bytes(b"keep me")
    calls.clear()
    code, _, _ = cli(capsys, "normalize", path, tmp_path / "y.npy", "--force", "--chunk-mb", CHUNK)
    assert code == 130
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["x.npy", "y.npy"]


def test_failed_run_leaves_nothing(capsys, x2d, tmp_path, monkeypatch):
    _, path = x2d
    _failing_transform(monkeypatch, RuntimeError("simulated bug"))
    with pytest.raises(RuntimeError, match="simulated bug"):  # bugs are not swallowed
        main(["normalize", str(path), str(tmp_path / "y.npy"), "--chunk-mb", CHUNK])
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_missing_output_directory(capsys, x2d, tmp_path):
    _, path = x2d
    code, _, err = cli(capsys, "normalize", path, tmp_path / "no" / "y.npy")
    assert_one_error(code, err, str(tmp_path / "no"))


# --------------------------------------------------------------------------
# bad files and arguments: one line, exit code 1
# --------------------------------------------------------------------------
def _write_bad(tmp_path, kind):
    p = tmp_path / "bad.npy"
    if kind == "missing":
        return tmp_path / "nope.npy", "no such file"
    if kind == "directory":
        (tmp_path / "dir.npy").mkdir()
        return tmp_path / "dir.npy", "directory"
    if kind == "text":
        p.write_text("hello, world\n" * 10)
        return p, "not a .npy"
    if kind == "empty":
        p.write_bytes(b"")
        return p, "not a .npy"
    if kind == "bad-header":
        p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4  \n" + b"\0" * 10)
        return p, "header"
    if kind == "truncated":
        np.save(p, np.ones((1000, 10), np.float32))
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) - 100)
        return p, "truncated"
    if kind == "truncated-npz-member":
        np.savez(tmp_path / "t.npz", a=np.ones((1000, 10), np.float32))
        # rewrite the member's header to promise more rows than are stored
        raw = bytearray((tmp_path / "t.npz").read_bytes())
        i = raw.find(b"(1000, 10)")
        raw[i:i + 10] = b"(9000, 10)"
        (tmp_path / "t.npz").write_bytes(bytes(raw))
        return f"{tmp_path / 't.npz'}:a", "truncated"
    if kind == "bad-zip":
        p = tmp_path / "bad.npz"
        p.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
        return p, "npz"
    if kind == "unknown-member":
        np.savez(tmp_path / "m.npz", alpha=np.ones((4, 2)), beta=np.ones((4, 2)))
        return f"{tmp_path / 'm.npz'}:gamma", "alpha, beta"
    if kind == "member-of-npy":
        np.save(p, np.ones((4, 2)))
        return f"{p}:a", "not an .npz"
    if kind == "0-d":
        np.save(p, np.float32(3.0))
        return p, "0-d"
    arrays = {
        "object": np.array([1, "a", None] * 4, dtype=object).reshape(4, 3),
        "complex": np.ones((4, 3), np.complex64),
        "string": np.array([["a", "b"], ["c", "d"]]),
        "bytes": np.array([[b"a", b"b"]]),
        "void": np.zeros((4,), dtype=[("a", "f4"), ("b", "i4")]),
        "datetime": np.array(["2020-01-01", "2021-01-01"], dtype="datetime64[D]"),
        "timedelta": np.array([1, 2], dtype="timedelta64[s]"),
    }
    np.save(p, arrays[kind], allow_pickle=True)
    return p, kind if kind not in ("void",) else "structured"


BAD_KINDS = ["missing", "directory", "text", "empty", "bad-header", "truncated",
             "truncated-npz-member", "bad-zip", "unknown-member", "member-of-npy", "0-d",
             "object", "complex", "string", "bytes", "void", "datetime", "timedelta"]


@pytest.mark.parametrize("command", ["stats", "normalize", "diagnose"])
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_one_error_line(capsys, tmp_path, command, kind):
    data, fragment = _write_bad(tmp_path, kind)
    out_path = tmp_path / "out.npy"
    args = [command, data] + ([out_path] if command == "normalize" else [])
    before = set(os.listdir(tmp_path))
    code, out, err = cli(capsys, *args)
    assert_one_error(code, err, fragment)
    assert out == ""
    assert set(os.listdir(tmp_path)) == before  # nothing written


@pytest.mark.parametrize("command", ["stats", "normalize", "diagnose"])
@pytest.mark.parametrize("extra, fragment", [
    (["--axis", "1"], "include 0"),
    (["--axis", "0,2"], "out of range"),
    (["--axis", "-3"], "out of range"),
    (["--axis", "0,-2"], "repeated"),
    (["--chunk-mb", "0"], "--chunk-mb"),
    (["--chunk-mb", "-1"], "--chunk-mb"),
    (["--chunk-mb", "nan"], "--chunk-mb"),
    (["--chunk-mb", "inf"], "--chunk-mb"),
])
def test_bad_arguments_one_error_line(capsys, tmp_path, command, extra, fragment):
    np.save(tmp_path / "x.npy", np.ones((10, 3), np.float32))
    args = [command, tmp_path / "x.npy"] + ([tmp_path / "y.npy"] if command == "normalize" else [])
    code, out, err = cli(capsys, *args, *extra)
    assert_one_error(code, err, fragment)
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("command", ["stats", "normalize"])
def test_infinity_is_an_error_for_fitting(capsys, tmp_path, command):
    x = np.ones((100, 3), np.float32)
    x[50, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    args = [command, tmp_path / "x.npy"] + ([tmp_path / "y.npy"] if command == "normalize" else [])
    code, _, err = cli(capsys, *args, "--chunk-mb", "0.001")
    assert_one_error(code, err, "infinity")
    assert not (tmp_path / "y.npy").exists()


def test_empty_data(capsys, tmp_path):
    np.save(tmp_path / "e.npy", np.ones((0, 3), np.float32))
    for command in ("stats", "diagnose"):
        code, _, err = cli(capsys, command, tmp_path / "e.npy")
        assert_one_error(code, err, "no values")
    # with saved statistics an empty file normalizes to an empty file
    np.save(tmp_path / "x.npy", make_data(n=100, f=3))
    assert cli(capsys, "stats", tmp_path / "x.npy", "--out", tmp_path / "s.npz")[0] == 0
    code, _, err = cli(capsys, "normalize", tmp_path / "e.npy", tmp_path / "y.npy",
                       "--stats", tmp_path / "s.npz")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (0, 3) and y.dtype == np.float32


@pytest.mark.parametrize("args", [
    ["stats"],
    ["stats", "x.npy", "--chunk-mb", "abc"],
    ["stats", "x.npy", "--axis", "0,a"],
    ["stats", "x.npy", "--nan-policy", "bogus"],
    ["normalize", "x.npy"],
    ["diagnose", "x.npy", "--bogus"],
])
def test_usage_errors_keep_exit_code_2(capsys, args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------
def test_diagnose_chunked_equals_in_memory(capsys, xnan, tmp_path):
    x, path = xnan
    x = x.copy()
    x[7, 2] = np.inf
    np.save(path, x)
    with _datafiles.open_data(str(path)) as src:
        chunked = _commands.diagnose_file(src, (0,), chunk_bytes=20_000)
    whole = bnfast.diagnose(x)
    a, b = chunked.to_dict(), whole.to_dict()
    for key in ("n_samples", "n_features", "feature_shape", "dtype", "count", "nan_count",
                "inf_count", "min", "max", "constant", "scale_outliers", "has_nan", "has_inf",
                "looks_like_image_bytes", "looks_standardized", "warnings"):
        assert a[key] == b[key] or (key in ("min", "max") and np.allclose(
            a[key], b[key], equal_nan=True)), key
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(a["std"], b["std"], rtol=1e-12, equal_nan=True)

    code, out, err = cli(capsys, "diagnose", path, "--chunk-mb", "0.02")
    assert code == 0, err
    assert "bnfast.diagnose: 6000 samples x 6 features" in out
    rows = table_rows(out)
    assert [k for k in rows] == ["0", "1", "2", "3", "4", "5"]
    assert int(rows["2"]["inf"]) == 1
    for w in whole.warnings:
        assert f"! {w}" in out


def test_diagnose_plot(capsys, x2d, tmp_path):
    pytest.importorskip("matplotlib")
    _, path = x2d
    png = tmp_path / "d.png"
    code, out, err = cli(capsys, "diagnose", path, "--plot", png, "--chunk-mb", CHUNK)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "feature" in out and "..." in out  # 64 features: summarized table


def test_diagnose_image_bytes_flag(capsys, tmp_path):
    x = np.random.default_rng(7).integers(0, 256, size=(500, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "img.npy", x)
    code, out, err = cli(capsys, "diagnose", tmp_path / "img.npy", "--axis", "0,2,3",
                         "--chunk-mb", "0.001")
    assert code == 0, err
    assert "image bytes" in out
    assert list(table_rows(out)) == ["0", "1", "2"]


# --------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------
def test_progress_bar_and_no_progress(capsys, x2d, tmp_path, monkeypatch):
    pytest.importorskip("tqdm")
    _, path = x2d
    monkeypatch.setattr(_progress, "PROGRESS_DELAY", 0.0)  # show at once
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    assert code == 0
    assert "fit" in err and "normalize" in err and "100%" in err
    code, _, err = cli(capsys, "normalize", path, tmp_path / "z.npy", "--chunk-mb", CHUNK,
                       "--no-progress")
    assert code == 0
    assert err == ""
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "z.npy"))


# --------------------------------------------------------------------------
# entry points and real processes
# --------------------------------------------------------------------------
def test_main_functions(capsys, x2d, tmp_path):
    _, path = x2d
    assert _cli.main_stats([str(path), "--chunk-mb", CHUNK]) == 0
    assert "feature" in capsys.readouterr().out
    assert _cli.main_normalize([str(path), str(tmp_path / "y.npy")]) == 0
    assert _cli.main_diagnose([str(tmp_path / "y.npy")]) == 0
    assert "looks standardized" in capsys.readouterr().out
    assert _cli.main_stats([str(tmp_path / "missing.npy")]) == 1


def _child_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("BNFAST_")}


def test_subprocess_end_to_end(x2d, tmp_path):
    x, path = x2d
    stats = tmp_path / "s.npz"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "bnfast", *map(str, a)], capture_output=True, text=True,
        env=_child_env(), cwd=tmp_path, timeout=120)
    proc = run("stats", path, "--out", stats, "--chunk-mb", CHUNK)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert table_rows(proc.stdout)["0"]["count"] == str(x.shape[0])
    proc = run("normalize", "x.npy", "y.npy", "--stats", stats)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               bnfast.Standardizer().fit(x).transform(x), rtol=1e-6, atol=1e-6)
    proc = run("diagnose", "x.npy:member")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("bnfast: error: ")
    proc = run("stats", "x.npy", "--axis", "zero")
    assert proc.returncode == 2


# Peak resident memory of a real child: a ~200 MB file read with --chunk-mb 8
# must cost far less than the file size over a tiny file (the mapped pages of
# each chunk are dropped after use; the output is written, not mapped).
_PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run([sys.executable, '-m', 'bnfast'] + sys.argv[1:],"
    " stdout=subprocess.DEVNULL)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _peak_rss_mb(args, cwd):
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *map(str, args)],
                          capture_output=True, text=True, env=_child_env(), cwd=cwd, timeout=300)
    code, kb = proc.stdout.split()
    assert code == "0", proc.stderr
    return int(kb) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_peak_memory_bounded_by_chunk_size(tmp_path):
    rows, cols = 400_000, 128  # 195 MiB of float32
    rng = np.random.default_rng(8)
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                    shape=(rows, cols))
    block = rng.standard_normal((25_000, cols), dtype=np.float32)
    for i in range(0, rows, block.shape[0]):
        big[i:i + block.shape[0]] = block + (i // block.shape[0])
    big.flush()
    del big
    # The same size in Fortran order (a row chunk touches every column).
    bigf = np.lib.format.open_memmap(tmp_path / "bigf.npy", mode="w+", dtype=np.float32,
                                     shape=(rows, cols), fortran_order=True)
    block = rng.standard_normal((rows, 16), dtype=np.float32)
    for j in range(0, cols, 16):
        bigf[:, j:j + 16] = block * (j + 1)
    bigf.flush()
    del bigf, block
    np.save(tmp_path / "tiny.npy", np.ones((10, cols), np.float32))
    size_mb = os.path.getsize(tmp_path / "big.npy") / 2**20
    assert size_mb > 190

    runs = {
        "stats": ["stats", "{}.npy"],
        "normalize": ["normalize", "{}.npy", "out.npy", "--force"],
        "diagnose": ["diagnose", "{}.npy"],
        "stats (Fortran order)": ["stats", "{}.npy"],
    }
    peaks = {}
    for what, args in runs.items():
        for name in ("tiny", "bigf" if "Fortran" in what else "big"):
            argv = [a.format(name) for a in args] + ["--chunk-mb", "8"]
            peaks[what, name != "tiny"] = _peak_rss_mb(argv, tmp_path)
    report = ", ".join(f"{what} {peaks[what, False]:.0f} -> {peaks[what, True]:.0f} MB"
                       for what in runs)
    print(f"\npeak RSS, tiny file -> {size_mb:.0f} MiB file (--chunk-mb 8): {report}")
    for what in runs:
        assert peaks[what, True] - peaks[what, False] < 60, report

    out = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert out.shape == (rows, cols) and out.dtype == np.float32
    sample = np.asarray(out[::997, :4], np.float64)
    assert abs(sample.mean()) < 0.1 and 0.9 < sample.std() < 1.1
