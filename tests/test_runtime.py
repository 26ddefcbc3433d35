"""The runtime: configuration (bnfast.config, show_config), the thread count,
backend/capability dispatch and the environment variables read at import
(checked in fresh interpreters, including CPUs that lack a level, simulated
with BNFAST_DEBUG_HIDE_CAPABILITIES)."""
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

import bnfast
from helpers import NATIVE_CHOICES, requires_native, runtime

NATIVE = NATIVE_CHOICES
KEYS = {"version", "backend", "capability", "compiled_capabilities",
        "supported_capabilities", "openmp", "num_threads"}


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
    assert all(isinstance(c, str) for c in cfg["compiled_capabilities"] + cfg["supported_capabilities"])
    assert isinstance(cfg["openmp"], bool)
    assert isinstance(cfg["num_threads"], int) and not isinstance(cfg["num_threads"], bool)
    assert cfg["num_threads"] >= 1


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
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


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


@pytest.mark.parametrize("cap", NATIVE or [pytest.param("scalar", marks=pytest.mark.skip(reason="no native build"))])
def test_env_cpu_capability(tmp_path, cap):
    cfg = _cfg(_run(PRINT_CFG, {"BNFAST_CPU_CAPABILITY": cap}, tmp_path))
    assert cfg["backend"] == "native"
    assert cfg["capability"] == cap


def test_env_cpu_capability_scalar_computes(tmp_path):
    if "scalar" not in NATIVE:
        pytest.skip("scalar capability not available")
    code = ("import bnfast, numpy as np; m, v = bnfast.mean_var(np.arange(10.0));"
            "print(float(m), float(v))")
    proc = _run(code, {"BNFAST_CPU_CAPABILITY": "scalar"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4.5", "8.25"]


def test_env_cpu_capability_bogus_fails(tmp_path):
    proc = _run("import bnfast", {"BNFAST_CPU_CAPABILITY": "bogus"}, tmp_path)
    assert proc.returncode != 0
    assert "BNFAST_CPU_CAPABILITY" in proc.stderr + proc.stdout


def test_env_num_threads(tmp_path):
    code = "import bnfast; print(bnfast.get_num_threads(), bnfast.config()['num_threads'])"
    proc = _run(code, {"BNFAST_NUM_THREADS": "3"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "3"]


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_env_num_threads_invalid_fails(tmp_path, value):
    proc = _run("import bnfast", {"BNFAST_NUM_THREADS": value}, tmp_path)
    assert proc.returncode != 0
    assert "BNFAST_NUM_THREADS" in proc.stderr + proc.stdout


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
def test_forcing_a_level_the_cpu_lacks_fails_at_import(level):
    hide = "avx512" if level == "avx512" else "avx2,avx512"
    proc = _run_snippet({"BNFAST_DEBUG_HIDE_CAPABILITIES": hide, "BNFAST_CPU_CAPABILITY": level})
    assert proc.returncode != 0
    assert "BNFAST_CPU_CAPABILITY" in proc.stderr and level in proc.stderr
    assert "Segmentation" not in proc.stderr


@requires_native
def test_scalar_can_always_be_forced():
    proc = _run_snippet({"BNFAST_DEBUG_HIDE_CAPABILITIES": "avx2,avx512", "BNFAST_CPU_CAPABILITY": "scalar"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["capability"] == "scalar"


@requires_native
def test_set_capability_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown CPU capability"):
        with runtime.using("sse9"):
            pass
