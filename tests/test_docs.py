"""Docstrings of the public API follow numpydoc (issue 10: Parameters with
shapes and dtypes, Returns, Raises, a short example), checked with numpydoc's
own validator."""

from __future__ import annotations

import importlib
import inspect

import pytest

import bnfast
import bnfast.nn

validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is not installed").validate

# What every public docstring must get right: it exists, its summary is one
# capitalised sentence, every parameter is documented (and none that does not
# exist), and a function says what it returns.
REQUIRED = {
    "GL08",  # no docstring
    "GL02",
    "GL03",  # quotes and blank lines
    "SS01",
    "SS02",
    "SS03",
    "SS05",
    "SS06",  # the summary line
    "PR01",
    "PR02",
    "PR03",  # parameters missing / unknown / out of order
    "PR06",
    "PR07",
    "PR08",
    "PR09",  # parameter types and descriptions
    "RT01",
    "RT02",
    "RT03",  # the Returns section
}
# Top-level functions and classes also carry an Examples section.
EXAMPLES = {"EX01"}


def _public_objects() -> list[tuple[str, bool]]:
    """(dotted name, needs an example) for every public function, class and method."""
    names: list[tuple[str, bool]] = []

    def add_class(prefix: str, cls: type) -> None:
        names.append((prefix, True))
        # Inherited methods too: users see them on the public class.
        for member, value in inspect.getmembers(cls):
            if member.startswith("_") or not (inspect.isfunction(value) or inspect.ismethod(value)):
                continue
            if getattr(value, "__module__", "").startswith("bnfast"):
                names.append((f"{prefix}.{member}", False))

    for name in bnfast.__all__:
        if name in ("__version__", "nn"):
            continue
        obj = getattr(bnfast, name)
        if inspect.isclass(obj):
            add_class(f"bnfast.{name}", obj)
        else:
            names.append((f"bnfast.{name}", True))
    for name in bnfast.nn.__all__:
        add_class(f"bnfast.nn.{name}", getattr(bnfast.nn, name))
    try:
        sklearn_adapter = importlib.import_module("bnfast.sklearn")
    except ImportError:  # scikit-learn is optional
        pass
    else:
        add_class("bnfast.sklearn.Standardizer", sklearn_adapter.Standardizer)
    try:
        xarray_accessor = importlib.import_module("bnfast.xarray")
    except ImportError:  # xarray is optional
        pass
    else:
        for name in xarray_accessor.__all__:
            add_class(f"bnfast.xarray.{name}", getattr(xarray_accessor, name))
    return names


@pytest.mark.parametrize(("name", "needs_example"), _public_objects(), ids=lambda v: str(v))
def test_numpydoc(name: str, needs_example: bool) -> None:
    codes = REQUIRED | (EXAMPLES if needs_example else set())
    errors = [f"{code}: {msg}" for code, msg in validate(name)["errors"] if code in codes]
    assert not errors, f"{name}:\n  " + "\n  ".join(errors)
