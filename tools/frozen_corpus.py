"""Frozen corpus of public-API calls, for restructures that must not change
any result.

    python tools/frozen_corpus.py record DIR   # before the change
    python tools/frozen_corpus.py check DIR    # after it: every output bitwise equal

Each backend/capability runs in its own process (``BNFAST_BACKEND`` /
``BNFAST_CPU_CAPABILITY`` are read at import), at 1 and 2 threads. Only the
public API is called, so the script runs unchanged on both sides of a
restructure. Outputs are compared bit for bit (dtype, shape and bytes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

LAYOUTS = ("nchw", "nhwc", "2d", "fortran", "strided", "negative")


def _data(rng, layout, dtype, big):
    n, c, h, w = (8, 16, 20, 20) if big else (4, 6, 3, 5)
    if layout == "nchw":
        return rng.standard_normal((n, c, h, w)).astype(dtype) * 3 + 1, 1
    if layout == "nhwc":
        return rng.standard_normal((n, h, w, c)).astype(dtype) * 3 + 1, -1
    if layout == "2d":
        return rng.standard_normal((n * h * w, c)).astype(dtype) - 2, 1
    if layout == "fortran":
        return np.asfortranarray(rng.standard_normal((n, c, h, w)).astype(dtype)), 1
    if layout == "strided":
        return rng.standard_normal((n, 2 * c, h, w)).astype(dtype)[:, ::2], 1
    return rng.standard_normal((n, c, h, w)).astype(dtype)[::-1, :, :, ::-1], 1


def _cases(bnfast):
    """Yields (name, outputs) pairs; outputs is a tuple of arrays."""
    for dtype in (np.float32, np.float64):
        dn = np.dtype(dtype).name
        for big in (False, True):
            size = "big" if big else "small"
            for layout in LAYOUTS:
                rng = np.random.default_rng(zlib.crc32(f"{dn}{size}{layout}".encode()))
                x, axis = _data(rng, layout, dtype, big)
                c = x.shape[axis]
                key = f"{dn}/{size}/{layout}"
                red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
                dy = rng.standard_normal(x.shape).astype(dtype)
                wt = (rng.standard_normal(c) + 1).astype(dtype)
                bs = rng.standard_normal(c).astype(dtype)

                yield f"mean_var/{key}", bnfast.mean_var(x, axis=red)
                yield f"mean_var_ddof/{key}", bnfast.mean_var(x, axis=axis, ddof=1, keepdims=True)
                m = bnfast.moments(x, axis=red)
                yield f"moments/{key}", (m.count, m.mean, m.m2)

                rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
                y, mean, invstd = bnfast.batch_norm(
                    x, rm, rv, wt, bs, training=True, momentum=0.3, axis=axis, return_stats=True
                )
                yield f"bn_train_stats/{key}", (y, mean, invstd, rm, rv)
                rm2, rv2 = np.zeros(c, dtype), np.ones(c, dtype)
                yield (
                    f"bn_train_fast/{key}",
                    (bnfast.batch_norm(x, rm2, rv2, wt, bs, training=True, axis=axis), rm2, rv2),
                )
                yield f"bn_train_plain/{key}", bnfast.batch_norm(x, training=True, axis=axis)
                yield f"bn_eval/{key}", bnfast.batch_norm(x, rm, rv, wt, bs, axis=axis)
                yield (
                    f"bn_eval_stats/{key}",
                    bnfast.batch_norm(x, rm, rv, None, bs, axis=axis, return_stats=True),
                )
                for training in (True, False):
                    yield (
                        f"bn_backward_{training}/{key}",
                        bnfast.batch_norm_backward(
                            dy, x, mean, invstd, wt, axis=axis, training=training
                        ),
                    )
                yield (
                    f"bn_backward_now/{key}",
                    bnfast.batch_norm_backward(dy, x, mean, invstd, None, axis=axis),
                )

                if layout in ("nchw", "fortran", "strided", "negative"):
                    g = 2
                    y, gm, gr = bnfast.group_norm(x, g, wt, bs, return_stats=True)
                    yield f"group_norm/{key}", (y, gm, gr)
                    yield (
                        f"group_norm_backward/{key}",
                        bnfast.group_norm_backward(dy, x, gm, gr, g, wt),
                    )
                    rmi, rvi = np.zeros(c, dtype), np.ones(c, dtype)
                    y, im, ir = bnfast.instance_norm(
                        x,
                        wt,
                        bs,
                        running_mean=rmi,
                        running_var=rvi,
                        momentum=0.2,
                        return_stats=True,
                    )
                    yield f"instance_norm/{key}", (y, im, ir, rmi, rvi)
                    yield (
                        f"instance_norm_backward/{key}",
                        bnfast.instance_norm_backward(dy, x, im, ir, wt),
                    )
                    yield (
                        f"instance_norm_eval/{key}",
                        bnfast.instance_norm(
                            x, wt, bs, running_mean=rmi, running_var=rvi, use_input_stats=False
                        ),
                    )
                if layout == "nhwc":
                    y, gm, gr = bnfast.group_norm(x, c // 2, wt, bs, axis=-1, return_stats=True)
                    yield f"group_norm_last/{key}", (y, gm, gr)
                    yield (
                        f"group_norm_backward_last/{key}",
                        bnfast.group_norm_backward(dy, x, gm, gr, c // 2, wt, axis=-1),
                    )

                d = x.shape[-1]
                lw = (rng.standard_normal(d) + 1).astype(dtype)
                lb = rng.standard_normal(d).astype(dtype)
                y, lm, lr = bnfast.layer_norm(x, lw, lb, return_stats=True)
                yield f"layer_norm/{key}", (y, lm, lr)
                yield f"layer_norm_fast/{key}", bnfast.layer_norm(x, lw, lb)
                yield f"layer_norm_backward/{key}", bnfast.layer_norm_backward(dy, x, lm, lr, lw)
                y, lm2, lr2 = bnfast.layer_norm(x, axis=(-2, -1), return_stats=True)
                yield f"layer_norm_2axes/{key}", (y, lm2, lr2)
                yield (
                    f"layer_norm_backward_2axes/{key}",
                    bnfast.layer_norm_backward(dy, x, lm2, lr2, axis=(-2, -1)),
                )
                y, rr = bnfast.rms_norm(x, lw, return_stats=True)
                yield f"rms_norm/{key}", (y, rr)
                yield f"rms_norm_fast/{key}", bnfast.rms_norm(x, lw, eps=1e-6)
                yield f"rms_norm_backward/{key}", bnfast.rms_norm_backward(dy, x, rr, lw)

                yield from _stateful(bnfast, key, x, dy, axis, dtype)

            # Standardizer and diagnose on awkward 2-D data.
            rng = np.random.default_rng(7 if big else 8)
            rows = 5000 if big else 37
            X = (rng.standard_normal((rows, 9)) * [1, 1e-3, 1e3, 0, 1, 1, 5, 2, 1] + 1e4).astype(
                dtype
            )
            X[3, 4] = np.nan
            key = f"{dn}/{size}"
            for policy in ("omit", "propagate"):
                s = bnfast.Standardizer(nan_policy=policy).fit(X)
                t = s.transform(X)
                yield (
                    f"standardizer_{policy}/{key}",
                    (
                        s.mean_,
                        s.var_,
                        s.scale_,
                        np.asarray(s.n_samples_seen_),
                        t,
                        s.inverse_transform(t),
                    ),
                )
            s = bnfast.Standardizer(ddof=1, with_mean=False)
            for chunk in np.array_split(X, 3):
                s.partial_fit(chunk, sample_weight=np.arange(len(chunk), dtype=float) % 3)
            yield f"standardizer_weighted/{key}", (s.var_, s.scale_, s.transform(X))
            u8 = rng.integers(0, 256, size=(rows, 4, 3), dtype=np.uint8)
            s = bnfast.Standardizer(axis=(0, 1)).fit(u8)
            yield f"standardizer_uint8/{key}", (s.mean_, s.scale_, s.transform(u8))
            rep = bnfast.diagnose(X).to_dict()
            numeric = (np.asarray(v) for _, v in sorted(rep.items()))
            yield f"diagnose/{key}", tuple(a for a in numeric if a.dtype.kind in "biuf")
            try:
                from bnfast.sklearn import Standardizer as SkStandardizer
            except ImportError:
                continue
            sk = SkStandardizer().fit(np.nan_to_num(X))
            yield (
                f"sklearn_standardizer/{key}",
                (sk.mean_, sk.scale_, sk.transform(np.nan_to_num(X))),
            )


def _stateful(bnfast, key, x, dy, axis, dtype):
    nn = bnfast.nn
    c = x.shape[axis]
    layers = [("BatchNorm", nn.BatchNorm(c, axis=axis, dtype=dtype, momentum=None))]
    if axis == 1 and x.ndim > 2:
        layers += [
            (
                "InstanceNorm",
                nn.InstanceNorm(c, affine=True, track_running_stats=True, dtype=dtype),
            ),
            ("GroupNorm", nn.GroupNorm(2, c, dtype=dtype)),
        ]
    layers += [
        ("LayerNorm", nn.LayerNorm(x.shape[-1], dtype=dtype)),
        ("RMSNorm", nn.RMSNorm(x.shape[-1], dtype=dtype)),
    ]
    for name, layer in layers:
        if layer.weight is not None:
            layer.weight[...] = np.linspace(0.5, 1.5, layer.weight.size).reshape(layer.weight.shape)
        outs = []
        for _ in range(2):
            layer.train()
            outs.append(layer(x))
            outs.append(layer.backward(dy))
        outs += [g for g in (layer.grad_weight, layer.grad_bias) if g is not None]
        outs += [np.asarray(v) for _, v in sorted(layer.state_dict().items())]
        layer.eval()
        outs.append(layer(x))
        yield f"nn_{name}/{key}", tuple(outs)


def _flatten(value):
    # None (an absent gradient) is recorded as an empty marker array.
    items = value if isinstance(value, tuple) else (value,)
    return [np.zeros(0, np.int8) if v is None else np.asarray(v) for v in items]


def run_one(out_path: str) -> None:
    import bnfast

    arrays = {}
    for threads in (1, 2):
        bnfast.set_num_threads(threads)
        for name, value in _cases(bnfast):
            for i, arr in enumerate(_flatten(value)):
                arrays[f"t{threads}/{name}/{i}"] = arr
    np.savez(out_path, **arrays)
    print(f"{out_path}: {len(arrays)} arrays", file=sys.stderr)


def _choices() -> list:
    env = dict(os.environ, BNFAST_BACKEND="native")
    code = "import bnfast; print(','.join(bnfast.config()['supported_capabilities']))"
    caps = (
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .split(",")
    )
    return ["numpy"] + [c for c in caps if c]


def record(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for choice in _choices():
        env = dict(os.environ)
        env.pop("BNFAST_NUM_THREADS", None)
        if choice == "numpy":
            env["BNFAST_BACKEND"] = "numpy"
        else:
            env["BNFAST_BACKEND"] = "native"
            env["BNFAST_CPU_CAPABILITY"] = choice
        subprocess.run(
            [sys.executable, __file__, "_one", str(directory / f"{choice}.npz")],
            env=env,
            check=True,
        )


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check(directory: Path) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
        differ = 0
        total = 0
        for before_path in sorted(directory.glob("*.npz")):
            after_path = Path(tmp) / before_path.name
            before, after = np.load(before_path), np.load(after_path)
            missing = sorted(set(before.files) ^ set(after.files))
            for name in missing:
                print(f"{before_path.stem}: {name} only on one side")
            for name in sorted(set(before.files) & set(after.files)):
                total += 1
                if not _same(before[name], after[name]):
                    differ += 1
                    print(f"{before_path.stem}: {name} differs")
            differ += len(missing)
        print(f"{total} arrays compared, {differ} differ")
        return 1 if differ else 0


def main(argv: list) -> int:
    if len(argv) == 3 and argv[1] == "_one":
        run_one(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "record":
        record(Path(argv[2]))
        return 0
    if len(argv) == 3 and argv[1] == "check":
        return check(Path(argv[2]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
