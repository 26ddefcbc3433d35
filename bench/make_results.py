"""Write the measured part of bench/RESULTS.md from ``python -m bnfast bench
--json`` runs: for each capability, a run at the default thread count and
one at 1 thread.

    python -m bnfast bench --json avx512-t2.json --plot bench/RESULTS.png
    python -m bnfast bench --threads 1 --json avx512-t1.json
    BNFAST_CPU_CAPABILITY=avx2 python -m bnfast bench --json avx2-t2.json
    BNFAST_CPU_CAPABILITY=avx2 python -m bnfast bench --threads 1 --json avx2-t1.json
    python bench/make_results.py avx512-t2.json avx512-t1.json avx2-t2.json avx2-t1.json
"""

import json
import sys

ENV_KEYS = (
    "cpu",
    "cores",
    "threads",
    "capability",
    "l2_cache_bytes",
    "compiler",
    "bnfast",
    "numpy",
    "torch",
    "python",
)
BUSY_SPREAD = 1.3  # as bnfast.cli.bench.harness.BUSY_SPREAD


def fmt(v, ratio=False):
    if v is None:
        return "-"
    if ratio:
        return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"
    if v < 0.1:  # microsecond calls: say so rather than print 0.003
        return f"{v * 1e3:.1f} µs"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def over(a, b):
    return a / b if a is not None and b else None


def key(r):
    return (r["op"], r["shape"], r["layout"], r["dtype"])


def section(run, one):
    env = run["environment"]
    one_rows = {key(r): r for r in one["rows"]}
    print(f"\n## {env['capability']} ({env['cpu']})\n")
    print("| | |\n|---|---|")
    for k in ENV_KEYS:
        print(f"| {k} | {env.get(k)} |")
    head = [
        "op",
        "shape",
        "layout",
        "dtype",
        "bnfast",
        "min-p90",
        "floor",
        "floor passes",
        "bnfast/floor",
        "copy",
        "torch/bnfast",
        "numpy/bnfast",
        "sklearn/bnfast",
        "bnfast 1 thread",
        "/floor 1 thread",
        "torch/bnfast 1 thread",
        "1→N threads",
    ]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in run["rows"]:
        b = r["bnfast_ms"]
        o = one_rows.get(key(r), {})
        b1 = o.get("bnfast_ms")
        busy = r["bnfast_p90_ms"] > BUSY_SPREAD * r["bnfast_min_ms"]
        busy1 = o and o["bnfast_p90_ms"] > BUSY_SPREAD * o["bnfast_min_ms"]
        cells = [
            r["op"],
            r["shape"],
            r["layout"],
            r["dtype"],
            fmt(b) + (" (busy)" if busy else ""),
            f"{fmt(r['bnfast_min_ms'])}-{fmt(r['bnfast_p90_ms'])}",
            fmt(r["floor_ms"]),
            r["floor"],
            fmt(over(b, r["floor_ms"]), True),
            fmt(r["copy_ms"]),
            fmt(over(r["torch_ms"], b), True),
            fmt(over(r["numpy_ms"], b), True),
            fmt(over(r["sklearn_ms"], b), True),
            fmt(b1) + (" (busy)" if busy1 else ""),
            fmt(over(b1, o.get("floor_ms")), True),
            fmt(over(o.get("torch_ms"), b1), True),
            fmt(over(b1, b), True),
        ]
        print("| " + " | ".join(cells) + " |")


LARGE = 8 << 20  # values: arrays beyond the caches, where the floor targets apply
# Issue 12's targets: (label, which rows, limit of time / floor).
FLOOR_TARGETS = (
    (
        "`mean_var`/fit ≤ 1.2x read",
        lambda r: r["op"].startswith("mean_var") or r["op"] == "Standardizer fit",
        1.2,
    ),
    ("training ≤ 1.2x its floor", lambda r: r["op"] == "batch_norm train", 1.2),
    (
        "eval, layer, RMS, transform ≤ 1.1x read+write",
        lambda r: (
            r["op"] in ("batch_norm eval", "layer_norm", "rms_norm", "Standardizer transform")
        ),
        1.1,
    ),
    ("backward ≤ 1.2x its floor", lambda r: r["op"].endswith(" backward"), 1.2),
    (
        "group/instance norm ≤ 1.2x its floor",
        lambda r: r["op"].startswith(("group_norm", "instance_norm")),
        1.2,
    ),
)


def values(shape):
    n = 1
    for part in shape.split("x"):
        n *= int(part) if part.isdigit() else 1
    return n


def mark(ok):
    return "" if ok else " ✗"


def busy(r):
    """The busy mark after a row whose spread says the machine was busy."""
    return " (busy)" if r["bnfast_p90_ms"] > BUSY_SPREAD * r["bnfast_min_ms"] else ""


def status(run, one):
    """The rows of the status table of one capability: each target with the
    rows it covers, ✗ after a ratio that misses it."""
    cap = run["environment"]["capability"]
    one_rows = {key(r): r for r in one["rows"]}
    large = [r for r in run["rows"] if values(r["shape"]) >= LARGE]
    for label, covers, limit in FLOOR_TARGETS:
        cells = []
        for r in large:
            ratio = over(r["bnfast_ms"], r["floor_ms"])
            if covers(r) and ratio is not None:
                cells.append(
                    f"{r['op']} {r['shape']} {r['layout']} {r['dtype']} "
                    f"{fmt(ratio, True)}{mark(ratio <= limit)}{busy(r)}"
                )
        if cells:
            print(f"| {label} | {cap} | {', '.join(cells)} |")
    cells = []
    for r in large:
        t = over(r["torch_ms"], r["bnfast_ms"])
        if r["op"] == "batch_norm train" and r["layout"] == "NCHW" and t is not None:
            cells.append(f"{r['shape']} {fmt(t, True)}{mark(t >= 5)}{busy(r)}")
    if cells:
        print(f"| training ≥ 5x PyTorch, large NCHW | {cap} | {', '.join(cells)} |")
    cells = []
    for r in run["rows"]:
        o = one_rows.get(key(r))
        if o is None or values(r["shape"]) >= LARGE or r["op"] != "batch_norm train":
            continue
        if r["layout"] != "NCHW":
            continue
        t = over(o.get("torch_ms"), o["bnfast_ms"])
        if t is not None:
            cells.append(f"{r['shape']} {fmt(t, True)}{mark(t >= 3)}{busy(o)}")
    if cells:
        print(f"| training ≥ 3x PyTorch in cache (NCHW), 1 thread | {cap} | {', '.join(cells)} |")
    cells = []
    for r in run["rows"]:
        if r["layout"] == "tiny":
            us = r["bnfast_ms"] * 1e3
            cells.append(f"{r['op']} {r['shape']} {us:.1f} µs{mark(us <= 3)}{busy(r)}")
    if cells:
        print(f"| tiny calls ≤ 3 µs | {cap} | {', '.join(cells)} |")


def main(paths):
    if not paths or len(paths) % 2:
        sys.exit("usage: make_results.py MAIN.json ONE_THREAD.json [MAIN.json ONE_THREAD.json ...]")
    print(
        "Columns: times in ms. `bnfast` is the median of repeated runs in one process, "
        "`min-p90` its spread; a row marked busy had p90 over "
        f"{BUSY_SPREAD}x its min (the shared machine was busy: read its ratios with care). "
        "`floor` is what the passes in `floor passes` cost on this machine at the same thread "
        "count: bnfast's own read pass and read + streaming-write pass over the same numbers "
        "of bytes (units of the input array: `2 reads+write` reads x and dy and writes dx "
        "once). `bnfast/floor` is the number to read: 1.00x is the hardware's floor. "
        "`copy` is `np.copyto` of the input (one thread, plain stores: familiar, not the "
        "floor). `torch/bnfast`, `numpy/bnfast`, `sklearn/bnfast`: how many times slower the "
        "peer is (PyTorch in a child process at the same thread count). The 1-thread columns "
        "come from a second run with `--threads 1`."
    )
    pairs = []
    for i in range(0, len(paths), 2):
        with open(paths[i]) as fh:
            run = json.load(fh)
        with open(paths[i + 1]) as fh:
            one = json.load(fh)
        pairs.append((run, one))
    print(
        "\n## Status against the targets of issue 12\n\n"
        f"Arrays of {LARGE >> 20}M values and more against the floor (time / floor at the "
        "run's thread count; ✗ marks a miss, (busy) a row whose spread says the machine "
        "was busy), PyTorch ratios, tiny calls.\n"
    )
    print("| target | capability | rows |\n|---|---|---|")
    for run, one in pairs:
        status(run, one)
    for run, one in pairs:
        section(run, one)


if __name__ == "__main__":
    main(sys.argv[1:])
