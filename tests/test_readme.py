"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks():
    if not README.exists():
        return []
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize(
    "index",
    range(len(_python_blocks()))
    or [pytest.param(0, marks=pytest.mark.skip(reason="README.md not found next to tests/"))],
)
def test_readme_example_runs(index, capsys):
    code = _python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})
