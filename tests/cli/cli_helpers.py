"""Shared helpers of the command-line tests (``python -m bnfast ...``).

This module is the only place in ``tests/cli/`` that imports a private
bnfast module (the command line's own modules): a rename of one is a
one-line change below.
"""

import hashlib
import os
import subprocess
import sys
import warnings

import numpy as np

# --------------------------------------------------------------------------
# the command line's private modules (the only imports of them in tests/cli/)
# --------------------------------------------------------------------------
from bnfast import cli as _cli
from bnfast.__main__ import main  # the ``python -m bnfast`` entry point
from bnfast.cli import commands, datafiles, progress

# The chunked reader of .npy / .npz data and its two kinds of source.
open_data = datafiles.open_data
MappedSource = datafiles._MappedSource  # a stored member or .npy file, memory-mapped
StreamSource = datafiles._StreamSource  # a compressed member, read as a stream
# The chunked diagnose behind ``python -m bnfast diagnose``.
diagnose_file = commands.diagnose_file
# The module whose PROGRESS_DELAY (seconds before a bar shows) tests patch.
progress_settings = progress
# The per-command entry points.
main_stats = _cli.main_stats
main_normalize = _cli.main_normalize
main_diagnose = _cli.main_diagnose

CHUNK = "0.2"  # MiB per chunk in the in-process tests (x2d is 2 MiB: 10 chunks)


def cli(capsys, *args):
    """Run ``python -m bnfast ARGS`` in process -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def child_env():
    """The environment of a child ``python -m bnfast``: no BNFAST_ overrides."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BNFAST_")}


def run_child(args, cwd, timeout=120, env_extra=None):
    """Run ``python -m bnfast ARGS`` in a fresh interpreter."""
    env = child_env()
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "bnfast", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error(code, err, *fragments):
    """Exit code 1 and one ``bnfast: error: ...`` line holding every fragment."""
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
    for line in lines[start + 1 :]:
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


def make_features(seed=0, n=8191, f=64, dtype=np.float32):
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
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
