"""Static checks, run with the tests so that CI (`make test`) fails when they fail.

* ruff over the Python of lib/, tests/, bench/ and workflow/ (rules: [tool.ruff] in pyproject.toml)
* mypy over lib/voxflow, the package that ships py.typed ([tool.mypy] in pyproject.toml)
* `snakemake --lint` on the default config (config/config.yaml)

Each tool is the one pinned in envs/requirements.txt, run from this interpreter's environment; a test
skips, with the reason, only where its tool is not installed. On failure the test prints the findings.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF_PATHS = ["lib", "tests", "bench", "workflow"]


def _run_module(module: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in {sys.prefix} (it is pinned in envs/requirements.txt)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=timeout, check=False)


def _fail_unless_clean(res: subprocess.CompletedProcess, what: str) -> None:
    if res.returncode != 0:
        pytest.fail(f"{what} found problems (exit code {res.returncode}):\n{res.stdout}\n{res.stderr}",
                    pytrace=False)


def test_ruff_is_clean():
    paths = [p for p in RUFF_PATHS if (ROOT / p).is_dir()]
    res = _run_module("ruff", "check", "--output-format", "concise", "--no-fix", *paths, timeout=300)
    _fail_unless_clean(res, f"ruff check {' '.join(paths)}")


def test_mypy_is_clean():
    # files, options and the third-party modules read as untyped: [tool.mypy] in pyproject.toml. The cache
    # (.mypy_cache, git-ignored) makes a second run take seconds instead of ~40 s.
    res = _run_module("mypy", "--config-file", str(ROOT / "pyproject.toml"), timeout=900)
    _fail_unless_clean(res, "mypy lib/voxflow")


def test_snakemake_lint_is_clean():
    # Snakemake 9 prints its lints as text on stderr (--lint json is ignored by its CLI) and exits 1 when it
    # has any, 0 with "Congratulations, your workflow is in a good condition!" when it has none.
    res = _run_module("snakemake", "--lint", "--configfile", "config/config.yaml", timeout=300)
    _fail_unless_clean(res, "snakemake --lint --configfile config/config.yaml")
