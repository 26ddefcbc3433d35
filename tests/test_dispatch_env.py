"""Capability selection at import, including CPUs that lack a level
(simulated with BNFAST_DEBUG_HIDE_CAPABILITIES, since this CPU may have all)."""

import json
import os
import subprocess
import sys

import pytest

import bnfast

pytestmark = pytest.mark.skipif(
    bnfast.config()["compiled_capabilities"] == [], reason="native module not built"
)

SNIPPET = "import bnfast, json; print(json.dumps(bnfast.config()))"


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNFAST_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True)


def test_default_is_best_supported():
    proc = _run({})
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["capability"] == cfg["supported_capabilities"][-1]


def test_hidden_level_is_not_chosen_by_default():
    supported = bnfast.config()["supported_capabilities"]
    if "avx512" not in supported:
        pytest.skip("this CPU has no AVX-512 to hide")
    proc = _run({"BNFAST_DEBUG_HIDE_CAPABILITIES": "avx512"})
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["capability"] == "avx2"
    assert "avx512" not in cfg["supported_capabilities"]


@pytest.mark.parametrize("level", ["avx512", "avx2"])
def test_forcing_a_level_the_cpu_lacks_fails_at_import(level):
    hide = "avx512" if level == "avx512" else "avx2,avx512"
    proc = _run({"BNFAST_DEBUG_HIDE_CAPABILITIES": hide, "BNFAST_CPU_CAPABILITY": level})
    assert proc.returncode != 0
    assert "BNFAST_CPU_CAPABILITY" in proc.stderr and level in proc.stderr
    assert "Segmentation" not in proc.stderr


def test_scalar_can_always_be_forced():
    proc = _run({"BNFAST_DEBUG_HIDE_CAPABILITIES": "avx2,avx512", "BNFAST_CPU_CAPABILITY": "scalar"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["capability"] == "scalar"


def test_set_capability_rejects_unknown_names():
    from bnfast import _runtime

    with pytest.raises(ValueError, match="unknown CPU capability"):
        with _runtime.using("sse9"):
            pass
