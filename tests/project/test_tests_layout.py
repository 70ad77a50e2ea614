"""The tests' own layout, checked: the test modules mirror the package (tests/unit/<stage>/ for each sub-package of
lib/voxflow, tests/workflow/ for the Snakemake runs, tests/project/ for the project checks), share helpers only
through tests/support (never by importing another test module or conftest), and import no private name from
tests/. `pytest tests/unit` runs no workflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import PROJECT

TESTS = PROJECT / "tests"
PKG = PROJECT / "lib" / "voxflow"
STAGES = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file())


def _test_modules() -> list[Path]:
    """What pytest collects (its default python_files: test_*.py and *_test.py)."""
    return sorted(p for p in TESTS.rglob("*.py") if p.name.startswith("test_") or p.name.endswith("_test.py"))


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import in the file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def test_every_test_module_is_in_a_stage_workflow_or_project_folder():
    assert STAGES and "preprocess" in STAGES and "training" in STAGES
    misplaced = []
    for path in _test_modules():
        parts = path.relative_to(TESTS).parts
        ok = (len(parts) == 3 and parts[0] == "unit" and parts[1] in STAGES) or \
            (len(parts) == 2 and parts[0] in ("workflow", "project"))
        if not ok:
            misplaced.append(str(path.relative_to(TESTS)))
    assert not misplaced, f"test modules outside unit/<stage>/ ({', '.join(STAGES)}), workflow/, project/: {misplaced}"
    unit_folders = {p.name for p in (TESTS / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert unit_folders <= set(STAGES), f"tests/unit folders that are no stage package: {unit_folders - set(STAGES)}"


def test_test_module_names_are_unique():
    """No __init__.py in the test folders: pytest imports each test module by its basename."""
    names = [p.name for p in _test_modules()]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    assert not [p for p in TESTS.rglob("__init__.py") if TESTS / "support" not in p.parents]


def test_no_test_module_imports_another_test_module_or_conftest():
    test_names = {p.stem for p in _test_modules()} | {"conftest"}
    offenders = [f"{path.relative_to(TESTS)}:{line}: {module}"
                 for path in _python_files() for line, module, _ in _imports(path)
                 if module.split(".")[0] in test_names]
    assert not offenders, "helpers shared by test modules belong in tests/support:\n" + "\n".join(offenders)


def test_no_private_name_is_imported_from_the_tests():
    local = {p.stem for p in _test_modules()} | {"conftest", "support"}
    offenders = [f"{path.relative_to(TESTS)}:{line}: from {module} import {name}"
                 for path in _python_files() for line, module, names in _imports(path)
                 if module.split(".")[0] in local
                 for name in names + [p for p in module.split(".") if p != "__init__"] if name.startswith("_")]
    assert not offenders, "\n".join(offenders)


def _runs_snakemake(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if any(a == "-m" and b == "snakemake" for a, b in zip(words, words[1:])):
                return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and \
                isinstance(node.right, ast.Constant) and node.right.value == "snakemake":
            return True
    return False


def test_unit_tests_run_no_workflow():
    """`pytest tests/unit` is the fast suite: the Snakemake runs (support/workflow.py) are tests/workflow's."""
    offenders = []
    for path in sorted((TESTS / "unit").rglob("*.py")):
        if any(module == "support.workflow" for _, module, _ in _imports(path)) or \
                _runs_snakemake(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(str(path.relative_to(TESTS)))
    assert not offenders, offenders
