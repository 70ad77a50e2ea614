"""The package's layering, checked: one sub-package per stage, in the workflow's order, and no stage package
importing a later one (a lazy import inside a function counts: it is a dependency all the same).

The order is the workflow's, with the shared layers first: `core` (paths, atomic writes, the store reader,
metrics, labels, split) and `settings` (the resolved config) under every stage; `nn` (networks, sampler, DDP,
checkpoints, sliding window) under the stages that learn or predict; `training` after `inference` because a
fold's validation subjects are predicted with the inference stage's predictor, as nnU-Net's trainer does.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "lib" / "voxflow"

ORDER = ["errors", "core", "inputs", "settings", "pipeline", "qc", "preprocess", "nn", "planning", "synth",
         "postprocessing", "inference", "training", "evaluation", "report", "model_sharing", "demo", "cli"]
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "errors.py", "py.typed"}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "voxflow" else None


def _module(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layering_violations(pkg: Path = PKG) -> list[str]:
    found = []
    for path in sorted(pkg.rglob("*.py")):
        me = _stage(_module(path, pkg))
        if me in (None, "__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            for target in targets:
                other = _stage(target)
                if other is not None and ORDER.index(other) > ORDER.index(me):
                    found.append(f"{_module(path, pkg)}:{node.lineno} imports {target} ({other} comes after {me})")
    return found


def test_every_top_level_entry_is_a_stage_package_or_one_of_the_few_modules():
    entries = {p.name for p in PKG.iterdir() if p.name != "__pycache__"}
    packages = {n for n in entries if (PKG / n).is_dir()}
    assert entries - packages <= TOP_LEVEL, f"modules at the top of voxflow: {sorted(entries - packages - TOP_LEVEL)}"
    assert packages == set(ORDER) - {"errors", "cli"}, (
        f"packages not in the layering order: {sorted(packages - set(ORDER))}; "
        f"in the order but missing: {sorted(set(ORDER) - {'errors', 'cli'} - packages)}")
    for p in packages:
        doc = (PKG / p / "__init__.py").read_text(encoding="utf-8").strip()
        assert doc.startswith('"""'), f"{p}/__init__.py: no docstring"


def test_no_stage_package_imports_a_later_stage():
    bad = layering_violations()
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_the_layering_check_finds_a_violation(tmp_path):
    """The check itself can fail: an early package importing a late one is reported with its line."""
    pkg = tmp_path / "voxflow"
    (pkg / "core").mkdir(parents=True)
    (pkg / "report").mkdir()
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "paths.py").write_text("def f():\n    from voxflow.report.build import report\n")
    (pkg / "report" / "build.py").write_text("from voxflow.core.paths import f\n")
    assert layering_violations(pkg) == ["voxflow.core.paths:2 imports voxflow.report.build (report comes after core)"]
