"""Write bench/RESULTS.md from two ``python -m bnfast bench --json`` runs.

python -m bnfast bench --threads 2 --json t2.json
python -m bnfast bench --threads 1 --json t1.json
python bench/make_results.py t2.json t1.json > bench/RESULTS.md
"""

import json
import sys


def fmt(v, ratio=False):
    if v is None:
        return "-"
    if ratio:
        return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"
    if v < 0.1:  # microsecond calls: say so rather than print 0.003
        return f"{v * 1e3:.1f} µs"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def main(path_main: str, path_one: str) -> None:
    main_run = json.load(open(path_main))
    one = json.load(open(path_one))
    env = main_run["environment"]
    one_rows = {(r["op"], r["shape"], r["layout"], r["dtype"]): r for r in one["rows"]}
    print("# Benchmark results\n")
    print(
        "Produced by `python -m bnfast bench --threads 2 --json ...` and the same with "
        "`--threads 1`, then `python bench/make_results.py`. Every time is the median of "
        "repeated runs in one process (PyTorch in a child process with the same thread "
        "count); read the ratios, not the absolute times: this is a shared 2-core virtual "
        "machine and single runs vary by 10-30%.\n"
    )
    print("| | |\n|---|---|")
    for key in (
        "cpu",
        "cores",
        "threads",
        "capability",
        "compiler",
        "bnfast",
        "numpy",
        "torch",
        "python",
    ):
        print(f"| {key} | {env.get(key)} |")
    print(
        "\nColumns: times in ms; `bnfast/copy` is bnfast's time over `np.copyto` of the same "
        "bytes (the memory floor: 1.00x means as fast as a copy); `numpy/bnfast`, "
        "`torch/bnfast` and `sklearn/bnfast` are how many times slower the peer is "
        "(above 1 means bnfast is faster); `1→2 threads` is bnfast's speed-up from 1 to 2 "
        "threads.\n"
    )
    head = [
        "op",
        "shape",
        "layout",
        "dtype",
        "bnfast",
        "copy",
        "numpy",
        "torch",
        "sklearn",
        "bnfast/copy",
        "numpy/bnfast",
        "torch/bnfast",
        "sklearn/bnfast",
        "bnfast 1 thread",
        "1→2 threads",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in main_run["rows"]:
        b = r["bnfast_ms"]
        o = one_rows.get((r["op"], r["shape"], r["layout"], r["dtype"]))
        b1 = o["bnfast_ms"] if o else None
        cells = [
            r["op"],
            r["shape"],
            r["layout"],
            r["dtype"],
            fmt(b),
            fmt(r["copy_ms"]),
            fmt(r["numpy_ms"]),
            fmt(r["torch_ms"]),
            fmt(r["sklearn_ms"]),
            fmt(b / r["copy_ms"], True),
            fmt(r["numpy_ms"] / b if r["numpy_ms"] else None, True),
            fmt(r["torch_ms"] / b if r["torch_ms"] else None, True),
            fmt(r["sklearn_ms"] / b if r["sklearn_ms"] else None, True),
            fmt(b1),
            fmt(b1 / b if b1 else None, True),
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
