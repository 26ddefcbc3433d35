"""The data files of the command line: .npy and .npz members (stored,\ncompressed, unaligned), Fortran order; every bad file or argument gives one\n``bnfast: error:`` line and exit code 1."""

import os
import zipfile

import numpy as np
import pytest
from cli_helpers import (
    CHUNK,
    MappedSource,
    StreamSource,
    assert_one_error,
    cli,
    make_features,
    open_data,
    table_rows,
)

import bnfast


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
    with open_data(f"{arch}:train") as src:
        want = StreamSource if compressed else MappedSource
        assert isinstance(src, want)
        assert src.shape == x.shape and src.dtype == x.dtype

    code, _, err = cli(capsys, "normalize", path, tmp_path / "ref.npy", "--chunk-mb", CHUNK)
    assert code == 0, err
    ref = np.load(tmp_path / "ref.npy")
    for data in (
        f"{arch}:train",
        f"{arch}:train.npy",
        tmp_path / "one.npz",
        f"{tmp_path / 'one.npz'}:arr_0",
    ):
        code, _, err = cli(
            capsys, "normalize", data, tmp_path / "y.npy", "--chunk-mb", CHUNK, "--force"
        )
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
    x = make_features(n=2000, f=3, dtype=np.float64)
    np.savez(tmp_path / "a.npz", x)
    with open_data(str(tmp_path / "a.npz")) as src:
        assert src.data_offset % 8 != 0
    stats = tmp_path / "s.npz"
    code, _, err = cli(capsys, "stats", tmp_path / "a.npz", "--chunk-mb", "0.01", "--out", stats)
    assert code == 0, err
    np.testing.assert_allclose(
        bnfast.Standardizer.load(stats).mean_, bnfast.Standardizer().fit(x).mean_, rtol=1e-12
    )


def test_fortran_order_file(capsys, x2d, tmp_path):
    x, path = x2d
    fpath = tmp_path / "f.npy"
    np.save(fpath, np.asfortranarray(x))
    with open_data(str(fpath)) as src:
        assert src.fortran_order
    for name, data in (("c", path), ("f", fpath)):
        code, _, err = cli(
            capsys, "normalize", data, tmp_path / f"y_{name}.npy", "--chunk-mb", CHUNK
        )
        assert code == 0, err
        code, _, err = cli(
            capsys, "stats", data, "--chunk-mb", CHUNK, "--out", tmp_path / f"s_{name}.npz"
        )
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
    code, _, err = cli(
        capsys, "normalize", f"{tmp_path / 'fs.npz'}:a", tmp_path / "y_fs.npy", "--chunk-mb", CHUNK
    )
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y_fs.npy"), y_f)


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
        raw[i : i + 10] = b"(9000, 10)"
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


BAD_KINDS = [
    "missing",
    "directory",
    "text",
    "empty",
    "bad-header",
    "truncated",
    "truncated-npz-member",
    "bad-zip",
    "unknown-member",
    "member-of-npy",
    "0-d",
    "object",
    "complex",
    "string",
    "bytes",
    "void",
    "datetime",
    "timedelta",
]


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
@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--axis", "1"], "include 0"),
        (["--axis", "0,2"], "out of range"),
        (["--axis", "-3"], "out of range"),
        (["--axis", "0,-2"], "repeated"),
        (["--chunk-mb", "0"], "--chunk-mb"),
        (["--chunk-mb", "-1"], "--chunk-mb"),
        (["--chunk-mb", "nan"], "--chunk-mb"),
        (["--chunk-mb", "inf"], "--chunk-mb"),
    ],
)
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
    np.save(tmp_path / "x.npy", make_features(n=100, f=3))
    assert cli(capsys, "stats", tmp_path / "x.npy", "--out", tmp_path / "s.npz")[0] == 0
    code, _, err = cli(
        capsys, "normalize", tmp_path / "e.npy", tmp_path / "y.npy", "--stats", tmp_path / "s.npz"
    )
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (0, 3) and y.dtype == np.float32


def test_negative_dimension_header_is_a_one_line_error(tmp_path, capsys):
    # Regression: a negative dimension in a .npy header gave a traceback.
    path = tmp_path / "neg.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (-1, 3)}
        )
        f.write(b"\0" * 24)
    for command in (["stats"], ["diagnose"], ["normalize"]):
        args = (
            command + [str(path)] + ([str(tmp_path / "o.npy")] if command == ["normalize"] else [])
        )
        code, _, err = cli(capsys, *args)
        assert code == 1 and err.startswith("bnfast: error:") and "negative dimension" in err
        assert err.count("\n") == 1
