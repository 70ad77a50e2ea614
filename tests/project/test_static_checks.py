"""Static checks, run with the tests so that CI (`make test`) fails when they fail.

* ruff over the Python of lib/, tests/, bench/ and workflow/ (rules: [tool.ruff] in pyproject.toml)
* mypy over lib/voxflow, the package that ships py.typed ([tool.mypy] in pyproject.toml)
* `snakemake --lint` on the default config (config/config.yaml)
* `snakefmt --check` of the Snakefile and workflow/rules/*.smk ([tool.snakefmt] in pyproject.toml: line length 120)

Each tool is the one pinned in envs/requirements.txt, run from this interpreter's environment; a test
skips, with the reason, only where its tool is not installed. On failure the test prints the findings.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from support.paths import PROJECT as ROOT

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


def test_snakefmt_is_clean():
    # Formatting only: snakefmt leaves the shell commands (step_cmd calls) alone, and the `run:` blocks it would
    # rewrap are fenced with `# fmt: off` (a run block's text is its rule's code rerun trigger).
    paths = [p for p in ("Snakefile", "workflow/rules") if (ROOT / p).exists()]
    res = _run_module("snakefmt", "--check", "--compact-diff", *paths, timeout=300)
    _fail_unless_clean(res, f"snakefmt --check {' '.join(paths)} (run `snakefmt {' '.join(paths)}` to format)")


def test_mypy_is_clean():
    # files, options and the third-party modules read as untyped: [tool.mypy] in pyproject.toml. The cache
    # (.mypy_cache, git-ignored) makes a second run take seconds instead of ~40 s.
    res = _run_module("mypy", "--config-file", str(ROOT / "pyproject.toml"), timeout=900)
    _fail_unless_clean(res, "mypy lib/voxflow")


# The `snakemake --lint` findings the project keeps, each with its reason. Anything else fails the test.
ACCEPTED_LINTS = {
    # Snakemake's check is a regex over the file (a `def` and any text like "rule x:"): each rule file keeps the
    # input functions of its own rules next to them (how Snakemake's docs show input functions); moving ~25
    # one-rule functions into common.smk would separate every rule from the code that computes its inputs.
    "Mixed rules and functions in same snakefile.": "*",
    # Local bookkeeping rules (`localrule: True`, a `run:` of one or two lines writing one small JSON file):
    # they run inside the Snakemake process itself, so their messages and errors are in Snakemake's own log.
    "No log directive defined": {"cohort_status", "training_stores", "model_settings", "predicted_subjects",
                                 "report_subjects", "validation_table", "subject_status"},
}


def _lints(text: str) -> list[tuple[str, str]]:
    """(where, title) of each lint in `snakemake --lint`'s text output: where is a rule name or a file."""
    import re

    found, where = [], None
    for line in text.splitlines():
        m = re.match(r"Lints for (?:rule (\S+) \(|snakefile (\S+):)", line)
        if m:
            where = m.group(1) or m.group(2)
        m = re.match(r"\s{4}\* (.+?):?$", line)
        if m and where:
            found.append((where, m.group(1).rstrip(":")))
    return found


def test_snakemake_lint_is_clean_but_for_justified_findings():
    # Snakemake 9 prints its lints as text on stderr (--lint json is ignored by its CLI) and exits 1 when it
    # has any, 0 with "Congratulations, your workflow is in a good condition!" when it has none.
    res = _run_module("snakemake", "--lint", "--configfile", "config/config.yaml", timeout=300)
    text = res.stdout + res.stderr
    lints = _lints(text)
    if res.returncode != 0:
        assert lints, f"snakemake --lint failed without lints:\n{text}"
    unjustified = [(w, t) for w, t in lints
                   if not (t in ACCEPTED_LINTS and (ACCEPTED_LINTS[t] == "*" or w in ACCEPTED_LINTS[t]))]
    assert not unjustified, "snakemake --lint findings without a justification " \
        "(tests/project/test_static_checks.py):\n" + "\n".join(f"  {w}: {t}" for w, t in unjustified) + f"\n\n{text}"
