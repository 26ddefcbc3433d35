"""Fork safety: after the parent has run bnfast on its threads (a call on
more than 32,768 elements with 2 threads), children made by ``os.fork``, a
fork ``multiprocessing.Pool``, a fork ``ProcessPoolExecutor`` and
DataLoader-style workers compute the parent's bits and never block.

Each scenario runs in a fresh interpreter in its own session, under a
timeout: a child that hangs (as every one did with libgomp) fails its test
and the whole process group is killed, instead of the suite hanging.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from helpers import runtime

pytestmark = pytest.mark.skipif(
    runtime._core is None, reason="no native module: nothing runs on threads"
)

TIMEOUT = 90  # seconds per scenario; each takes a few on a loaded 2-core machine

# The driver run in the fresh interpreter: `python -c DRIVER SCENARIO`. It
# prints one JSON line: the parent's digest before and after the children,
# and each child's digest and thread count.
DRIVER = textwrap.dedent(
    """
    import hashlib, json, os, sys, threading
    import numpy as np
    import bnfast

    bnfast.set_num_threads(2)
    rng = np.random.default_rng(7)
    # 131,072 elements (4x the size above which the kernels use threads)
    X = (rng.standard_normal((16, 8, 32, 32)) * 2 + 3).astype(np.float32)
    DY = rng.standard_normal(X.shape).astype(np.float32)
    X64 = X.astype(np.float64)


    def digest(seed=0):
        # Results of the main kernel families, hashed; `seed` varies the input.
        x = X + np.float32(seed)
        rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
        y, mean, invstd = bnfast.batch_norm(x, training=True, return_stats=True)
        outs = [
            *bnfast.mean_var(x, axis=(0, 2, 3)),
            *bnfast.mean_var(X64 + seed, axis=None),
            bnfast.batch_norm(x, rm, rv, training=True), rm, rv,
            y, *bnfast.batch_norm_backward(DY, x, mean, invstd),
            bnfast.layer_norm(x, axis=(1, 2, 3)),
            bnfast.rms_norm(x, axis=-1),
            bnfast.group_norm(x, 4),
            bnfast.instance_norm(x),
            bnfast.Standardizer(axis=(0, 2, 3)).fit(x).transform(x),
        ]
        h = hashlib.sha256()
        for out in outs:
            h.update(np.ascontiguousarray(out).tobytes())
        return h.hexdigest()


    def child_result(seed=0):
        return {"digest": digest(seed), "threads": bnfast.get_num_threads(),
                "pid": os.getpid()}


    class Dataset:
        # A map-style dataset (torch's protocol) whose items run bnfast.
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return json.dumps(child_result(i % 3))


    def run_os_fork():
        results = []
        for _ in range(2):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child
                code = 1
                try:
                    os.close(r)
                    os.write(w, json.dumps(child_result()).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(w)
            with os.fdopen(r) as f:
                data = f.read()
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
            results.append(json.loads(data))
        return results


    def run_pool():
        import multiprocessing as mp
        with mp.get_context("fork").Pool(2) as pool:
            return pool.map_async(child_result, [0, 1, 2, 0]).get(60)


    def run_executor():
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
            return [f.result(60) for f in [ex.submit(child_result, s) for s in (0, 1, 2, 0)]]


    def run_joblib():
        import multiprocessing as mp

        import joblib

        assert mp.get_start_method() == "fork"
        return joblib.Parallel(n_jobs=2, backend="multiprocessing", timeout=60)(
            joblib.delayed(child_result)(s) for s in (0, 1, 2, 0)
        )

    def run_worker_loop():
        # DataLoader-style: forked workers loop over indices from a queue and
        # send items back, until told to stop.
        import multiprocessing as mp
        ctx = mp.get_context("fork")
        tasks, done = ctx.Queue(), ctx.Queue()
        dataset = Dataset()

        def worker():
            while (i := tasks.get()) is not None:
                done.put((i, dataset[i]))

        workers = [ctx.Process(target=worker, daemon=True) for _ in range(2)]
        for w in workers:
            w.start()
        for i in range(len(dataset)):
            tasks.put(i)
        items = dict(done.get(timeout=60) for _ in range(len(dataset)))
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.join(60)
            assert w.exitcode == 0, w.exitcode
        return [json.loads(items[i]) for i in sorted(items)]


    def run_torch_dataloader():
        import torch.utils.data as tud

        class TorchDataset(Dataset, tud.Dataset):
            pass

        loader = tud.DataLoader(TorchDataset(), batch_size=None, num_workers=2,
                                multiprocessing_context="fork", timeout=60)
        return [json.loads(item) for item in loader]


    def run_fork_during_calls():
        # Fork while another thread is inside bnfast calls (the pool busy).
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                digest(1)

        t = threading.Thread(target=busy)
        t.start()
        try:
            return [r for _ in range(3) for r in run_os_fork()]
        finally:
            stop.set()
            t.join()


    scenario = sys.argv[1]
    seeds = {"pool": [0, 1, 2, 0], "executor": [0, 1, 2, 0], "joblib": [0, 1, 2, 0],
             "worker_loop": [i % 3 for i in range(6)],
             "torch_dataloader": [i % 3 for i in range(6)]}
    before = {s: digest(s) for s in (0, 1, 2)}  # in the parent, on 2 threads
    children = globals()["run_" + scenario]()
    after = digest(0)
    print(json.dumps({"before": before, "after": after, "children": children,
                      "seeds": seeds.get(scenario, [0] * len(children)),
                      "parent_pid": os.getpid()}))
    """
)


def run_scenario(scenario, tmp_path):
    """Run DRIVER's scenario in a fresh interpreter of its own session; its
    JSON output. A hang fails (after killing the session's processes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNFAST_", "OMP_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, scenario],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and any child it forked
        out, err = proc.communicate()
        pytest.fail(f"{scenario}: hung (no result within {TIMEOUT} s)\n{err[-3000:]}")
    finally:
        try:  # children a failed driver left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"{scenario} failed:\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def check_children(result, n_children):
    children = result["children"]
    assert len(children) == n_children
    assert result["after"] == result["before"]["0"], "the parent changed after forking"
    for child, seed in zip(children, result["seeds"]):
        assert child["pid"] != result["parent_pid"], "computed in the parent, not a child"
        assert child["threads"] == 2, "the child should keep the parent's thread count"
        assert child["digest"] == result["before"][str(seed)], (
            "a child computed other bits than the parent"
        )


def test_os_fork(tmp_path):
    check_children(run_scenario("os_fork", tmp_path), 2)


def test_multiprocessing_fork_pool(tmp_path):
    check_children(run_scenario("pool", tmp_path), 4)


def test_process_pool_executor_fork(tmp_path):
    check_children(run_scenario("executor", tmp_path), 4)


def test_joblib_multiprocessing_backend(tmp_path):
    pytest.importorskip("joblib", reason="joblib is not installed")
    if multiprocessing.get_all_start_methods()[0] != "fork":  # a fresh interpreter's default
        pytest.skip("joblib's multiprocessing backend does not fork here (not the default)")
    check_children(run_scenario("joblib", tmp_path), 4)


def test_dataloader_style_fork_workers(tmp_path):
    check_children(run_scenario("worker_loop", tmp_path), 6)


def test_torch_dataloader_fork_workers(tmp_path):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    check_children(run_scenario("torch_dataloader", tmp_path), 6)


def test_fork_while_another_thread_runs_bnfast(tmp_path):
    check_children(run_scenario("fork_during_calls", tmp_path), 6)
