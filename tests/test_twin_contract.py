"""The NumPy twin and the native module expose the same kernels, each with
the same parameters (names, order, defaults), so that ``impl().NAME(...)``
means the same call under either backend.

The twin's parameters come from ``inspect.signature``; the native ones from
the signature pybind11 writes as the first line of each function's docstring
(pybind11 functions have no ``__text_signature__``).
"""

import ast
import inspect
import re

import pytest

from helpers import core, twin

pytestmark = pytest.mark.skipif(core is None, reason="the native module bnfast._core is not built")

# Native-only entry points: the runtime controls, and the fast entry points
# (C++ only; the general Python path is their specification).
NATIVE_ONLY = {
    "all_capabilities",
    "capability",
    "compiled_capabilities",
    "default_num_threads",
    "get_num_threads",
    "openmp",
    "set_capability",
    "set_num_threads",
    "supported_capabilities",
    "usable_cores",
    "get_thread_num_threads",
    "set_thread_num_threads",
    "get_thread_limit",
    "set_thread_limit",
    "get_hard_thread_limit",
    "set_hard_thread_limit",
    "get_interrupt_bytes",
    "set_interrupt_bytes",
    "l2_cache_bytes",
    "set_l2_cache_bytes",
    "batch_norm_fast",
    "batch_norm_backward_fast",
    "layer_norm_fast",
}
NO_DEFAULT = object()


def twin_kernels():
    return set(twin.__all__)


def native_kernels():
    if core is None:
        return set()
    return {
        n for n in dir(core) if not n.startswith("_") and callable(getattr(core, n))
    } - NATIVE_ONLY


def _split_top_level(text):
    """Split at the commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return [p.strip() for p in parts]


def native_parameters(name):
    """[(parameter name, default text or NO_DEFAULT)] from pybind11's
    docstring signature ``name(a: T, b: T = 0) -> R``."""
    doc = getattr(core, name).__doc__ or ""
    assert "Overloaded function" not in doc, f"_core.{name} is overloaded: {doc}"
    first = doc.strip().splitlines()[0]
    m = re.match(rf"{re.escape(name)}\((.*)\)\s*(->.*)?$", first)
    assert m, f"cannot read the signature of _core.{name} from {first!r}"
    params = []
    for part in _split_top_level(m.group(1)):
        if part in ("*", "/"):
            params.append((part, NO_DEFAULT))
            continue
        head, _, default = part.partition("=")
        pname = head.split(":", 1)[0].strip()
        params.append((pname, default.strip() if default else NO_DEFAULT))
    return params


def twin_parameters(name):
    sig = inspect.signature(getattr(twin, name))
    params = []
    for p in sig.parameters.values():
        assert p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD), (
            f"twin.{name}: parameter {p.name} is {p.kind.description}; the native kernels take "
            f"positional-or-keyword arguments"
        )
        params.append((p.name, NO_DEFAULT if p.default is p.empty else p.default))
    return params


def _same_default(native, twin_default):
    if native is NO_DEFAULT or twin_default is NO_DEFAULT:
        return native is twin_default
    try:
        return ast.literal_eval(native) == twin_default
    except (ValueError, SyntaxError):
        return native == repr(twin_default)


KERNELS = sorted(native_kernels() & twin_kernels())


def test_same_kernel_names():
    native, mine = native_kernels(), twin_kernels()
    assert native == mine, (
        f"kernels only in _core: {sorted(native - mine)}; only in the twin: {sorted(mine - native)}"
    )
    assert KERNELS, "no kernel found"


def test_native_only_entry_points_have_no_twin():
    # The runtime controls and the fast entry points are listed above as
    # native-only: a twin of one would mean the list is out of date.
    assert not (NATIVE_ONLY & set(dir(twin))), sorted(NATIVE_ONLY & set(dir(twin)))
    for name in ("batch_norm_fast", "batch_norm_backward_fast", "layer_norm_fast"):
        assert callable(getattr(core, name)), name


@pytest.mark.parametrize("name", KERNELS)
def test_same_parameters(name):
    # names, order, defaults
    native, mine = native_parameters(name), twin_parameters(name)
    assert [n for n, _ in native] == [n for n, _ in mine], (
        f"{name}: _core({', '.join(n for n, _ in native)}) vs twin({', '.join(n for n, _ in mine)})"
    )
    for (pname, nd), (_, td) in zip(native, mine):
        assert _same_default(nd, td), (
            f"{name}: parameter {pname} defaults to {nd!r} in _core, {td!r} in the twin"
        )
