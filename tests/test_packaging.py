"""What a user installing bnfast gets: metadata, the license, the console
script and ``--version``, optional dependencies kept optional, and README
links that work on a package index."""

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

import bnfast

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _metadata():
    try:
        return importlib.metadata.metadata("bnfast")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("bnfast is not installed (imported from a source tree)")


def test_license_metadata_and_file():
    meta = _metadata()
    assert meta["License-Expression"] == "BSD-3-Clause"
    files = importlib.metadata.files("bnfast") or []
    licenses = [f for f in files if f.name == "LICENSE"]
    assert licenses, "LICENSE is not in the installed distribution"
    assert "BSD 3-Clause License" in licenses[0].read_text()


def test_required_dependencies_are_only_numpy():
    requires = _metadata().get_all("Requires-Dist") or []
    required = [r for r in requires if "extra ==" not in r]
    assert [re.split(r"[<>=!~ ;\[]", r)[0] for r in required] == ["numpy"]
    assert any(r.startswith("tqdm") and 'extra == "progress"' in r for r in requires)


def test_console_script_entry_point():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    ours = [ep for ep in scripts if ep.name == "bnfast"]
    if not ours:
        _metadata()  # skips when not installed
    assert [ep.value for ep in ours] == ["bnfast.cli:main"]


def test_version_option():
    proc = subprocess.run(
        [sys.executable, "-m", "bnfast", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bnfast {bnfast.__version__}"


def test_importing_bnfast_does_not_import_tqdm():
    code = "import sys, bnfast, bnfast.cli; print('tqdm' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def _repository_url():
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("pyproject.toml not found next to tests/")
    match = re.search(r'^Repository = "([^"]+)"', pyproject.read_text(), flags=re.M)
    assert match, "pyproject.toml has no [project.urls] Repository"
    return match.group(1)


def test_readme_links_work_on_an_index_page():
    """No relative links (dead on PyPI); links into the repository start with
    pyproject's Repository URL and, in a source checkout (not the copy of
    tests/ that tests an installed wheel), name a file of this tree."""
    repo = _repository_url()
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not found next to tests/")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme.read_text())
    relative = [t for t in targets if not re.match(r"(https?://|#|mailto:)", t)]
    assert relative == [], "relative links are dead on an index page"
    into_repo = [t for t in targets if t.startswith(repo + "/")]
    assert into_repo, f"no README link starts with {repo} (pyproject's Repository URL)"
    for target in into_repo:
        match = re.fullmatch(re.escape(repo) + r"/(?:blob|tree)/main/([^#]+)(?:#.*)?", target)
        assert match, f"{target} does not point into {repo}/blob/main/"
        if (ROOT / "cpp").is_dir():
            assert (ROOT / match.group(1)).exists(), f"{target}: no such file in the tree"
