"""bnfast on Dask against dask's own reductions and dask-ml (issue 15).

Three parts, each printing Markdown rows for bench/RESULTS.md and writing
JSON with ``--json``:

``throughput``
    A persisted float32 dask array (``--gb`` GB, (N, 64), 16 chunks of rows)
    on a ``distributed.LocalCluster`` of 2 worker processes x 1 thread:
    ``bnfast.mean_var(x, axis=0)`` vs ``dask.compute(x.mean(0), x.var(0))``
    vs dask-ml ``StandardScaler().fit(x)``; the floor reads every byte once
    (NumPy's contiguous float32 sum per block, the same graph shape: memory
    floor plus scheduling overhead); "scheduling only" is that graph with
    tasks that read nothing. Medians of ``--repeats`` runs, with min-max.
``precision``
    float32 data with |mean|/std = 1e4 (2**22 values of 4 features), chunked
    several ways: relative error of the variance against an exact float64
    two-pass reference, for bnfast and for dask's ``x.var(0)``.
``cli``
    A ``--cli-gb`` GB float32 Zarr array standardized by ``python -m bnfast
    normalize DATA.zarr OUT.zarr --scheduler processes``; the resident memory
    of the command and of every worker process is sampled every 0.1 s.

Usage: ``python bench/dask_bench.py [throughput|precision|cli ...] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np


def _median_spread(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _fmt(t: dict[str, float]) -> str:
    return f"{t['median']:.3f} s ({t['min']:.3f}-{t['max']:.3f})"


def _read_once(block: np.ndarray) -> np.ndarray:
    return np.add.reduce(block.reshape(-1), dtype=np.float32).reshape(1, 1)


def _nothing(block: np.ndarray) -> np.ndarray:
    return np.zeros((1, 1), np.float32)


def _read_once(block: np.ndarray) -> np.ndarray:
    return np.add.reduce(block.reshape(-1), dtype=np.float32).reshape(1, 1)


def _nothing(block: np.ndarray) -> np.ndarray:
    return np.zeros((1, 1), np.float32)


def throughput(gb: float, repeats: int) -> dict:
    import dask
    import dask.array as da
    import distributed

    import bnfast

    n_features = 64
    n = int(gb * 2**30 / (4 * n_features))
    n -= n % 16
    out: dict = {"shape": [n, n_features], "bytes": n * n_features * 4, "chunks": 16}
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit="8GiB",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        x = da.random.default_rng(0).standard_normal((n, n_features), chunks=(n // 16, n_features))
        x = (x * 3 + 10).astype(np.float32).persist()
        distributed.wait(x)
        out["worker_threads"] = client.run(bnfast.get_num_threads)

        def bnfast_mean_var() -> object:
            return dask.compute(*bnfast.mean_var(x, axis=0))

        def dask_mean_var() -> object:
            return dask.compute(x.mean(axis=0), x.var(axis=0))

        nb = x.numblocks[0]
        tiny = ((1,) * nb, (1,))

        def floor() -> object:
            # Every byte read once by NumPy's fastest reduction (contiguous
            # float32 sum), one task per block: the memory floor plus the
            # scheduling overhead of a graph of the same shape.
            return x.map_blocks(_read_once, chunks=tiny, dtype=np.float32).sum().compute()

        def overhead() -> object:
            return x.map_blocks(_nothing, chunks=tiny, dtype=np.float32).sum().compute()

        cases = {
            "bnfast.mean_var": bnfast_mean_var,
            "dask mean+var": dask_mean_var,
            "floor: read once": floor,
            "scheduling only": overhead,
        }
        try:
            from dask_ml.preprocessing import StandardScaler

            cases["dask-ml StandardScaler.fit"] = lambda: StandardScaler().fit(x)
            cases["bnfast Standardizer.fit"] = lambda: bnfast.Standardizer().fit(x)
        except ImportError:
            pass
        for fn in cases.values():  # warm up: imports, first task of each kind
            fn()
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(repeats):
            for name, fn in cases.items():  # interleaved: drift hits all alike
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        out["times"] = {k: _median_spread(v) for k, v in times.items()}
        # Cluster memory (process memory of both workers, summed) during one
        # more run of each case, against the persisted array's size.
        from distributed.diagnostics import MemorySampler

        sampler = MemorySampler()
        for name, fn in cases.items():
            with sampler.sample(name, interval=0.05):
                fn()
        frame = sampler.to_pandas()
        out["cluster_memory_peak"] = {k: float(frame[k].max()) for k in frame.columns}
        out["cluster_memory_min"] = {k: float(frame[k].min()) for k in frame.columns}
        mem = client.run(lambda: __import__("psutil").Process().memory_info().rss)
        out["worker_rss_after"] = mem
    return out


def precision() -> dict:
    import dask
    import dask.array as da

    import bnfast

    rng = np.random.default_rng(1)
    n = 2**22
    x = (1e4 + rng.standard_normal((n, 4))).astype(np.float32)  # |mean|/std = 1e4
    x64 = x.astype(np.float64)
    exact = ((x64 - x64.mean(axis=0)) ** 2).mean(axis=0)  # two-pass float64 of the float32 data
    rows = []
    with dask.config.set(scheduler="threads"):
        for chunks in [n, n // 7 + 3, 65536, 4099, 1000]:
            d = da.from_array(x, chunks=(chunks, 4))
            _, ours = dask.compute(*bnfast.mean_var(d, axis=0))
            theirs = d.var(axis=0).compute()
            rows.append(
                {
                    "chunk_rows": chunks,
                    "blocks": d.numblocks[0],
                    "bnfast": float(np.max(np.abs(ours.astype(np.float64) / exact - 1))),
                    "dask": float(np.max(np.abs(theirs.astype(np.float64) / exact - 1))),
                }
            )
    return {"n": n, "rows": rows}


def _tree_rss(root: int) -> tuple[int, int]:
    """(sum, max) of the resident memory of ``root`` and its descendants."""
    import psutil

    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = []
    for p in procs:
        try:
            rss.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(rss), max(rss, default=0)


def cli(gb: float, workdir: str | None) -> dict:
    import zarr

    n_features = 64
    n = int(gb * 2**30 / (4 * n_features))
    chunk_rows = 65536  # 16 MiB store chunks
    tmp = tempfile.mkdtemp(prefix="bnfast-dask-bench-", dir=workdir)
    try:
        src = os.path.join(tmp, "big.zarr")
        z = zarr.create_array(
            src,
            shape=(n, n_features),
            chunks=(chunk_rows, n_features),
            dtype="float32",
            compressors=None,
        )
        rng = np.random.default_rng(2)
        t0 = time.perf_counter()
        for start in range(0, n, chunk_rows * 16):
            stop = min(n, start + chunk_rows * 16)
            z[start:stop] = (rng.standard_normal((stop - start, n_features)) * 2 + 5).astype(
                np.float32
            )
        write_s = time.perf_counter() - t0
        out = os.path.join(tmp, "out.zarr")
        cmd = [
            sys.executable,
            "-m",
            "bnfast",
            "normalize",
            src,
            out,
            "--scheduler",
            "processes",
            "--chunk-mb",
            "64",
        ]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak_sum = peak_one = 0
        stop_flag = threading.Event()

        def sample() -> None:
            nonlocal peak_sum, peak_one
            while not stop_flag.is_set():
                s, m = _tree_rss(proc.pid)
                peak_sum, peak_one = max(peak_sum, s), max(peak_one, m)
                time.sleep(0.1)

        t = threading.Thread(target=sample)
        t.start()
        stdout, stderr = proc.communicate()
        stop_flag.set()
        t.join()
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(stderr)
        y = zarr.open_array(out, mode="r")
        sample_rows = np.asarray(y[:100000])
        return {
            "bytes": n * n_features * 4,
            "shape": [n, n_features],
            "write_s": write_s,
            "normalize_s": elapsed,
            "peak_rss_sum": peak_sum,
            "peak_rss_one_process": peak_one,
            "out_mean_first_rows": float(sample_rows.mean()),
            "out_std_first_rows": float(sample_rows.std()),
            "stdout": stdout.strip(),
            "progress_shown": "%" in stderr or "[" in stderr,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def machine() -> dict:
    import dask
    import distributed

    import bnfast

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "bnfast": bnfast.__version__,
        "capability": bnfast.config()["capability"],
        "numpy": np.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "python": platform.python_version(),
    }
    try:
        import dask_ml

        info["dask_ml"] = dask_ml.__version__
    except ImportError:
        pass
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("parts", nargs="*", default=["throughput", "precision", "cli"])
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--cli-gb", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    results: dict = {"machine": machine()}
    print(json.dumps(results["machine"]))
    if "precision" in args.parts:
        results["precision"] = precision()
        print("| chunk rows | blocks | bnfast rel. var error | dask rel. var error |")
        print("|---|---|---|---|")
        for r in results["precision"]["rows"]:
            print(f"| {r['chunk_rows']} | {r['blocks']} | {r['bnfast']:.1e} | {r['dask']:.1e} |")
    if "throughput" in args.parts:
        r = throughput(args.gb, args.repeats)
        results["throughput"] = r
        if args.json:  # before printing: a long run is never lost
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        floor = r["times"]["floor: read once"]["median"]
        print(f"array {r['shape']} float32, {r['bytes'] / 2**30:.2f} GiB, {r['chunks']} chunks")
        print("| case | time (median, min-max) | vs floor | GB/s | cluster memory peak |")
        print("|---|---|---|---|---|")
        for k, t in r["times"].items():
            print(
                f"| {k} | {_fmt(t)} | {t['median'] / floor:.2f}x | "
                f"{r['bytes'] / t['median'] / 1e9:.2f} | "
                f"{r['cluster_memory_peak'].get(k, float('nan')) / 2**30:.2f} GiB |"
            )
    if "cli" in args.parts:
        r = cli(args.cli_gb, args.workdir)
        results["cli"] = r
        print(json.dumps({k: v for k, v in r.items() if k != "stdout"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
