"""The runtime: configuration (bnfast.config, show_config), the thread count,
backend/capability dispatch and the environment variables read at import
(checked in fresh interpreters, including CPUs that lack a level, simulated
with BNFAST_DEBUG_HIDE_CAPABILITIES): their precedence, and a warning and the
default, never an import error, for a bad value. threadpoolctl's limits
(skipped without threadpoolctl)."""

import json
import os
import shutil
import subprocess
import sys
import threading
from importlib import metadata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import NATIVE_CHOICES, requires_native, runtime

NATIVE = NATIVE_CHOICES
KEYS = {
    "version",
    "backend",
    "capability",
    "compiled_capabilities",
    "supported_capabilities",
    "openmp",
    "threading",
    "num_threads",
    "usable_cores",
    "thread_limit",
    "hard_thread_limit",
}


# --------------------------------------------------------------------------
# config()
# --------------------------------------------------------------------------
def test_config_keys_and_types():
    cfg = bnfast.config()
    assert isinstance(cfg, dict)
    assert KEYS <= set(cfg)
    assert isinstance(cfg["version"], str) and cfg["version"]
    assert cfg["backend"] in ("native", "numpy")
    assert cfg["capability"] is None or isinstance(cfg["capability"], str)
    assert isinstance(cfg["compiled_capabilities"], list)
    assert isinstance(cfg["supported_capabilities"], list)
    assert all(
        isinstance(c, str) for c in cfg["compiled_capabilities"] + cfg["supported_capabilities"]
    )
    assert isinstance(cfg["openmp"], bool)
    assert isinstance(cfg["num_threads"], int) and not isinstance(cfg["num_threads"], bool)
    assert cfg["num_threads"] >= 1
    assert isinstance(cfg["threading"], str) and cfg["threading"]
    assert isinstance(cfg["usable_cores"], int) and cfg["usable_cores"] >= 1
    assert cfg["thread_limit"] is None  # no threadpool_limits block open
    assert cfg["hard_thread_limit"] is None or cfg["hard_thread_limit"] >= 1


def test_config_reports_the_runtime_honestly():
    cfg = bnfast.config()
    if runtime._core is None:
        assert cfg["threading"] == "none" and cfg["openmp"] is False
    else:
        assert cfg["threading"] == "bnfast pool"
        assert cfg["openmp"] is False  # the kernels no longer run on OpenMP
    assert cfg["usable_cores"] == len(os.sched_getaffinity(0))


def test_version_matches_distribution_metadata():
    assert bnfast.config()["version"] == metadata.version("bnfast")


def test_choices_are_consistent_with_config():
    choices = runtime.choices()
    assert "numpy" in choices
    assert set(choices) <= {"numpy", "scalar", "avx2", "avx512"}
    assert len(set(choices)) == len(choices)
    cfg = bnfast.config()
    for c in NATIVE:
        assert c in cfg["compiled_capabilities"]
        assert c in cfg["supported_capabilities"]


def test_config_follows_backend(backend):
    cfg = bnfast.config()
    if backend == "numpy":
        assert cfg["backend"] == "numpy"
        assert cfg["capability"] is None
    else:
        assert cfg["backend"] == "native"
        assert cfg["capability"] == backend


def test_using_restores_previous_backend():
    before = bnfast.config()
    with runtime.using("numpy"):
        assert bnfast.config()["backend"] == "numpy"
    after = bnfast.config()
    assert (after["backend"], after["capability"]) == (before["backend"], before["capability"])


def test_show_config_prints(capsys):
    bnfast.show_config()
    out = capsys.readouterr().out
    cfg = bnfast.config()
    assert cfg["version"] in out
    assert "backend" in out
    assert str(cfg["num_threads"]) in out


# --------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------
def test_set_get_num_threads():
    for n in (1, 3, 2):
        bnfast.set_num_threads(n)
        assert bnfast.get_num_threads() == n
        assert bnfast.config()["num_threads"] == n


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_set_num_threads_rejects_non_positive(bad):
    before = bnfast.get_num_threads()
    with pytest.raises(ValueError):
        bnfast.set_num_threads(bad)
    assert bnfast.get_num_threads() == before


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", None])
def test_set_num_threads_rejects_non_int(bad):
    before = bnfast.get_num_threads()
    with pytest.raises((TypeError, ValueError)):
        bnfast.set_num_threads(bad)
    assert bnfast.get_num_threads() == before


def test_threads_context_restores():
    bnfast.set_num_threads(2)
    with bnfast.threads(3):
        assert bnfast.get_num_threads() == 3
        with bnfast.threads(1):
            assert bnfast.get_num_threads() == 1
        assert bnfast.get_num_threads() == 3
    assert bnfast.get_num_threads() == 2


def test_threads_context_restores_on_exception():
    bnfast.set_num_threads(2)
    with pytest.raises(RuntimeError):
        with bnfast.threads(4):
            raise RuntimeError("boom")
    assert bnfast.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -2])
def test_threads_context_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        with bnfast.threads(bad):
            pass


def test_absurd_thread_counts_are_refused():
    # Regression: any count was passed on to OpenMP (capped at 1024 since).
    before = bnfast.get_num_threads()
    for n in (2**31, 10**6):
        with pytest.raises(ValueError, match="between 1 and"):
            bnfast.set_num_threads(n)
    assert bnfast.get_num_threads() == before


# --------------------------------------------------------------------------
# environment variables (read at import: checked in fresh interpreters)
# --------------------------------------------------------------------------
def _run(code, env_extra, tmp_path, args=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNFAST_")}
    env.update(env_extra)
    cmd = [sys.executable] + (args if args is not None else ["-c", code])
    return subprocess.run(
        cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )


PRINT_CFG = "import json, bnfast; print(json.dumps(bnfast.config()))"


def _cfg(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_env_default(tmp_path):
    cfg = _cfg(_run(PRINT_CFG, {}, tmp_path))
    if NATIVE:
        assert cfg["backend"] == "native"
        assert cfg["capability"] in NATIVE


def test_env_backend_numpy(tmp_path):
    cfg = _cfg(_run(PRINT_CFG, {"BNFAST_BACKEND": "numpy"}, tmp_path))
    assert cfg["backend"] == "numpy"
    assert cfg["capability"] is None


@pytest.mark.parametrize(
    "cap", NATIVE or [pytest.param("scalar", marks=pytest.mark.skip(reason="no native build"))]
)
def test_env_cpu_capability(tmp_path, cap):
    cfg = _cfg(_run(PRINT_CFG, {"BNFAST_CPU_CAPABILITY": cap}, tmp_path))
    assert cfg["backend"] == "native"
    assert cfg["capability"] == cap


def test_env_cpu_capability_scalar_computes(tmp_path):
    if "scalar" not in NATIVE:
        pytest.skip("scalar capability not available")
    code = (
        "import bnfast, numpy as np; m, v = bnfast.mean_var(np.arange(10.0));"
        "print(float(m), float(v))"
    )
    proc = _run(code, {"BNFAST_CPU_CAPABILITY": "scalar"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4.5", "8.25"]


# A bad value read at import is a RuntimeWarning naming the variable, the
# value and what is used instead -- never an import error (a program may
# import bnfast without knowing it). The child records the warnings of the
# import and prints them with the configuration.
RECORD = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import bnfast
print(json.dumps({"cfg": bnfast.config(),
                  "warnings": [[w.category.__name__, str(w.message), w.filename]
                               for w in caught if "bnfast" in str(w.message)]}))
"""


def _record(env_extra, tmp_path):
    """(config, [(category, message, filename)]) of a fresh import."""
    out = _cfg(_run(RECORD, env_extra, tmp_path))
    return out["cfg"], out["warnings"]


def _only_warning(warned, *words):
    assert len(warned) == 1, warned
    category, message, filename = warned[0]
    assert category == "RuntimeWarning"
    assert filename == "<string>", "the warning should point at the import, not into bnfast"
    for word in words:
        assert word in message, (word, message)
    return message


def test_env_cpu_capability_bogus_warns(tmp_path):
    cfg, warned = _record({"BNFAST_CPU_CAPABILITY": "bogus"}, tmp_path)
    if NATIVE:
        _only_warning(
            warned,
            "BNFAST_CPU_CAPABILITY",
            "'bogus'",
            f"using {cfg['supported_capabilities'][-1]!r} instead",
        )
        assert cfg["capability"] == cfg["supported_capabilities"][-1]
    else:
        _only_warning(warned, "BNFAST_CPU_CAPABILITY", "'bogus'", "ignored")


@pytest.mark.parametrize("value", ["gpu", "1", "NumPyy"])
def test_env_backend_bogus_warns(tmp_path, value):
    cfg, warned = _record({"BNFAST_BACKEND": value}, tmp_path)
    default = "native" if runtime._core is not None else "numpy"
    _only_warning(warned, "BNFAST_BACKEND", repr(value), f"using {default!r} instead")
    assert cfg["backend"] == default


def test_env_backend_is_case_insensitive(tmp_path):
    cfg, warned = _record({"BNFAST_BACKEND": " NumPy "}, tmp_path)
    assert warned == [] and cfg["backend"] == "numpy"


def test_env_num_threads(tmp_path):
    code = "import bnfast; print(bnfast.get_num_threads(), bnfast.config()['num_threads'])"
    proc = _run(code, {"BNFAST_NUM_THREADS": "3"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "3"]


CORES = len(os.sched_getaffinity(0))
NO_THREAD_ENV = {"OMP_NUM_THREADS": "", "OMP_THREAD_LIMIT": ""}  # empty: not set


@pytest.mark.parametrize("value", ["0", "abc", "-2", "1.5", "100000", "2**31", "3 threads"])
def test_env_num_threads_invalid_warns_and_uses_the_default(tmp_path, value):
    # Regression: BNFAST_NUM_THREADS=0 (or abc) made `import bnfast` raise.
    cfg, warned = _record({**NO_THREAD_ENV, "BNFAST_NUM_THREADS": value}, tmp_path)
    _only_warning(
        warned, "BNFAST_NUM_THREADS", repr(value), f"using {CORES} (the usable cores) instead"
    )
    assert cfg["num_threads"] == CORES


# The precedence of the process setting read at import:
# BNFAST_NUM_THREADS > OMP_NUM_THREADS > usable cores, capped by OMP_THREAD_LIMIT.
@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, CORES),
        ({"OMP_NUM_THREADS": "3"}, 3),
        ({"OMP_NUM_THREADS": "3,2"}, 3),  # OpenMP's per-level list: the first level
        ({"OMP_NUM_THREADS": " 5 "}, 5),
        ({"BNFAST_NUM_THREADS": "4", "OMP_NUM_THREADS": "3"}, 4),
        ({"OMP_NUM_THREADS": "3", "OMP_THREAD_LIMIT": "2"}, 2),
        ({"BNFAST_NUM_THREADS": "4", "OMP_THREAD_LIMIT": "1"}, 1),
        ({"BNFAST_NUM_THREADS": "2", "OMP_THREAD_LIMIT": "7"}, 2),
    ],
)
def test_env_precedence(tmp_path, env, expected):
    cfg, warned = _record({**NO_THREAD_ENV, **env}, tmp_path)
    assert warned == []
    assert cfg["num_threads"] == expected
    limit = env.get("OMP_THREAD_LIMIT")
    assert cfg["hard_thread_limit"] == (int(limit) if limit else None)


def test_env_bad_bnfast_count_falls_back_to_omp_num_threads(tmp_path):
    cfg, warned = _record(
        {**NO_THREAD_ENV, "BNFAST_NUM_THREADS": "0", "OMP_NUM_THREADS": "3"}, tmp_path
    )
    _only_warning(warned, "BNFAST_NUM_THREADS", "'0'", "using 3 (OMP_NUM_THREADS) instead")
    assert cfg["num_threads"] == 3


def test_env_bad_omp_values_warn(tmp_path):
    cfg, warned = _record({"OMP_NUM_THREADS": "many", "OMP_THREAD_LIMIT": "0"}, tmp_path)
    messages = sorted(m for _, m, _ in warned)
    assert len(messages) == 2, warned
    assert "OMP_NUM_THREADS='many'" in messages[0] and f"using {CORES}" in messages[0]
    assert "OMP_THREAD_LIMIT='0'" in messages[1] and "no limit" in messages[1]
    assert cfg["num_threads"] == CORES and cfg["hard_thread_limit"] is None


def test_env_thread_limit_caps_every_later_setting(tmp_path):
    code = (
        "import bnfast, threading\n"
        "bnfast.set_num_threads(4)\n"
        "with bnfast.threads(3):\n"
        "    inner = bnfast.get_num_threads()\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(bnfast.get_num_threads()))\n"
        "t.start(); t.join()\n"
        "print(bnfast.get_num_threads(), inner, out[0])"
    )
    proc = _run(code, {**NO_THREAD_ENV, "OMP_THREAD_LIMIT": "1"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1", "1"]


def test_env_warnings_do_not_break_an_indirect_import(tmp_path):
    # A module that imports bnfast (the user may not even know it does).
    (tmp_path / "uses_bnfast.py").write_text("import bnfast.nn\nOK = 1\n")
    proc = _run(
        "import uses_bnfast; print(uses_bnfast.OK)",
        {
            "BNFAST_NUM_THREADS": "abc",
            "BNFAST_BACKEND": "gpu",
            "BNFAST_CPU_CAPABILITY": "avx9",
            "OMP_THREAD_LIMIT": "-1",
        },
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1"]
    assert proc.stderr.count("RuntimeWarning") == 4, proc.stderr


# --------------------------------------------------------------------------
# capability selection at import
# --------------------------------------------------------------------------
SNIPPET = "import bnfast, json; print(json.dumps(bnfast.config()))"


def _run_snippet(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNFAST_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True)


@requires_native
def test_default_is_best_supported():
    proc = _run_snippet({})
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["capability"] == cfg["supported_capabilities"][-1]


@requires_native
def test_hidden_level_is_not_chosen_by_default():
    supported = bnfast.config()["supported_capabilities"]
    if "avx512" not in supported:
        pytest.skip("this CPU has no AVX-512 to hide")
    proc = _run_snippet({"BNFAST_DEBUG_HIDE_CAPABILITIES": "avx512"})
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["capability"] == "avx2"
    assert "avx512" not in cfg["supported_capabilities"]


@requires_native
@pytest.mark.parametrize("level", ["avx512", "avx2"])
def test_forcing_a_level_the_cpu_lacks_warns_and_uses_the_best(level, tmp_path):
    hide = "avx512" if level == "avx512" else "avx2,avx512"
    cfg, warned = _record(
        {"BNFAST_DEBUG_HIDE_CAPABILITIES": hide, "BNFAST_CPU_CAPABILITY": level}, tmp_path
    )
    best = "avx2" if level == "avx512" and "avx2" in NATIVE else "scalar"
    _only_warning(
        warned, "BNFAST_CPU_CAPABILITY", repr(level), "not available", f"using {best!r} instead"
    )
    assert cfg["capability"] == best


@requires_native
def test_scalar_can_always_be_forced():
    proc = _run_snippet(
        {"BNFAST_DEBUG_HIDE_CAPABILITIES": "avx2,avx512", "BNFAST_CPU_CAPABILITY": "scalar"}
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["capability"] == "scalar"


@requires_native
def test_set_capability_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown CPU capability"):
        with runtime.using("sse9"):
            pass


# --------------------------------------------------------------------------
# get_num_threads(): what the next call on this thread uses (more, across
# threads, in test_concurrency.py)
# --------------------------------------------------------------------------
def test_threads_block_rejects_types_without_changing_anything():
    bnfast.set_num_threads(2)
    for bad in (True, 1.0, "2", None):
        with pytest.raises(TypeError):
            with bnfast.threads(bad):
                pass
    assert bnfast.get_num_threads() == 2


# --------------------------------------------------------------------------
# threadpoolctl
# --------------------------------------------------------------------------
def _threadpoolctl():
    tpc = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    if not hasattr(tpc, "register"):
        pytest.skip("threadpoolctl < 3.5 takes no controllers of other libraries")
    if runtime._core is None:
        pytest.skip("no native module: no thread pool for threadpoolctl to limit")
    return tpc


def _bnfast_entries(tpc):
    return [i for i in tpc.threadpool_info() if i["internal_api"] == "bnfast"]


def test_threadpool_info_lists_bnfast():
    tpc = _threadpoolctl()
    entries = _bnfast_entries(tpc)
    assert len(entries) == 1, entries
    info = entries[0]
    assert info["user_api"] == "openmp"
    assert os.path.samefile(info["filepath"], runtime._core.__file__)
    assert info["version"] == bnfast.__version__
    assert info["num_threads"] == bnfast.get_num_threads()


@pytest.mark.parametrize("user_api", [None, "openmp"])
def test_threadpool_limits_caps_and_restores(user_api):
    # Regression: threadpool_limits(1) left bnfast at 2 threads.
    tpc = _threadpoolctl()
    bnfast.set_num_threads(2)
    with tpc.threadpool_limits(1, user_api=user_api):
        assert bnfast.get_num_threads() == 1
        assert bnfast.config()["thread_limit"] == 1
        with bnfast.threads(3):  # the limit caps blocks too...
            assert bnfast.get_num_threads() == 1
        other = []  # ...and every thread
        t = threading.Thread(target=lambda: other.append(bnfast.get_num_threads()))
        t.start()
        t.join(60)
        assert other == [1]
        bnfast.set_num_threads(4)
        assert bnfast.get_num_threads() == 1
    # Leaving restores "no limit", not a limit at the count read on entry.
    assert bnfast.config()["thread_limit"] is None
    assert bnfast.get_num_threads() == 4


def test_threadpool_limits_of_another_api_leave_bnfast_alone():
    tpc = _threadpoolctl()
    bnfast.set_num_threads(2)
    with tpc.threadpool_limits(1, user_api="blas"):
        assert bnfast.get_num_threads() == 2


def test_threadpool_limits_nest_and_restore_on_exceptions():
    tpc = _threadpoolctl()
    bnfast.set_num_threads(3)
    with pytest.raises(KeyError):
        with tpc.threadpool_limits(2):
            assert bnfast.get_num_threads() == 2
            with tpc.threadpool_limits(1):
                assert bnfast.get_num_threads() == 1
            assert bnfast.get_num_threads() == 2
            raise KeyError("boom")
    assert bnfast.config()["thread_limit"] is None
    assert bnfast.get_num_threads() == 3


def test_threadpool_limits_as_a_call_then_restore():
    tpc = _threadpoolctl()
    bnfast.set_num_threads(2)
    limiter = tpc.threadpool_limits(limits=1)
    try:
        assert bnfast.get_num_threads() == 1
    finally:
        limiter.restore_original_limits()
    assert bnfast.get_num_threads() == 2 and bnfast.config()["thread_limit"] is None


def test_threadpoolctl_does_not_claim_other_core_modules(tmp_path):
    # Another package's extension module named _core (here: a copy of bnfast's,
    # loaded as a plain shared library) must not be listed as bnfast.
    _threadpoolctl()
    other = tmp_path / "otherpkg" / os.path.basename(runtime._core.__file__)
    other.parent.mkdir()
    shutil.copy(runtime._core.__file__, other)
    code = (
        "import ctypes, sys, json, bnfast, threadpoolctl\n"
        "ctypes.CDLL(sys.argv[1])\n"
        "print(json.dumps([(i['internal_api'], i['filepath'])\n"
        "                  for i in threadpoolctl.threadpool_info() if i['prefix'] == '_core']))"
    )
    proc = _run(None, {}, tmp_path, args=["-c", code, str(other)])
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(listed) == 1, listed
    assert listed[0][0] == "bnfast"
    assert os.path.samefile(listed[0][1], runtime._core.__file__)


# --------------------------------------------------------------------------
# The Python copy of the thread settings (used without _core) decides as
# _core does
# --------------------------------------------------------------------------
SETTERS = ("set_num_threads", "set_thread_num_threads", "set_thread_limit", "set_hard_thread_limit")
OPTIONAL = st.one_of(st.none(), st.integers(1, 16))


@requires_native
@settings(max_examples=100)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("set_num_threads"), st.integers(1, 16)),
            st.tuples(st.sampled_from(SETTERS[1:]), OPTIONAL),
        ),
        max_size=12,
    )
)
def test_python_settings_decide_as_core_does(ops):
    core, py = runtime._core, runtime._threads.PySettings()
    saved = (
        core.get_num_threads(),
        core.get_thread_num_threads(),
        core.get_thread_limit(),
        core.get_hard_thread_limit(),
    )
    core.set_thread_num_threads(None)
    core.set_num_threads(1)
    try:
        for name, value in [("set_thread_limit", None), ("set_hard_thread_limit", None), *ops]:
            getattr(core, name)(value)
            getattr(py, name)(value)
            assert py.get_num_threads() == core.get_num_threads(), (name, value)
            assert py.get_thread_num_threads() == core.get_thread_num_threads()
            assert py.get_thread_limit() == core.get_thread_limit()
            assert py.get_hard_thread_limit() == core.get_hard_thread_limit()
    finally:
        core.set_thread_num_threads(None)
        core.set_thread_limit(saved[2])
        core.set_hard_thread_limit(saved[3])
        core.set_num_threads(saved[0])
        core.set_thread_num_threads(saved[1])


@pytest.mark.skipif(not NATIVE_CHOICES, reason="the native module bnfast._core is not built")
def test_l2_cache_bytes_reads_the_os_and_can_be_set_for_tests():
    core = runtime.core() if runtime.native_active() else None
    if core is None:
        pytest.skip("the numpy backend is active")
    os_answer = core.l2_cache_bytes()
    assert os_answer >= 0
    getconf = shutil.which("getconf")
    if sys.platform.startswith("linux") and getconf:  # glibc's sysconf, as the kernels read it
        out = subprocess.run(
            [getconf, "LEVEL2_CACHE_SIZE"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out.isdigit():
            assert os_answer == int(out)
    try:
        core.set_l2_cache_bytes(12345)
        assert core.l2_cache_bytes() == 12345
    finally:
        core.set_l2_cache_bytes(-1)
    assert core.l2_cache_bytes() == os_answer
