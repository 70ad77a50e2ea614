"""The code's structure, checked: one chain definition, one step table, no import cycles.

These are properties a refactoring can silently break (a module importing another that imports it back, a rule
naming a step nobody registered, a step defined twice), so they are asserted rather than left to review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from support.paths import PROJECT as ROOT

PKG = ROOT / "lib" / "voxflow"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the voxflow modules it imports (anywhere in the file: a lazy import inside a function is a
    dependency too)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t != "voxflow":
                    deps.add(t)
        graph[name] = deps
    return graph


def test_no_import_cycles_between_voxflow_modules():
    graph = _imports()
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_rule_step_is_in_the_one_table_and_resolves():
    from voxflow.pipeline.registry import STEPS, step_function

    rules_text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    named = set(re.findall(r'step_cmd\(\s*"([a-z_]+)"', rules_text))
    assert named, "no step_cmd(...) found in the rules"
    assert named <= set(STEPS), \
        f"rules run steps missing from voxflow.pipeline.registry.STEPS: {sorted(named - set(STEPS))}"
    for name in STEPS:
        assert callable(step_function(name)), name
    # the generated per-step rules are named after the chain's steps, which must all be in the table
    from voxflow.pipeline.chain import build_chain
    from voxflow.settings import ChainSettings

    import yaml

    from voxflow.settings import validate_config

    cfg = validate_config(yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8")),
                          ROOT / "lib" / "voxflow" / "settings" / "config.schema.yaml")
    for space in ("mni", "native"):
        pre = dict(cfg["preprocess"], space=space)
        steps = build_chain(ChainSettings.from_sections(cfg["input"], pre, True), "out")
        assert {st.name for st in steps} <= set(STEPS)


def test_no_registration_by_import_side_effect():
    """Steps are found through the table, never by a decorator filling a registry when a module is imported."""
    offenders = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
                 if re.search(r"^@step\b|STEPS\[[^\]]+\]\s*=", p.read_text(encoding="utf-8"), re.M)]
    assert not offenders, offenders


def test_the_chain_is_ordered_by_its_files():
    """Each step comes after every step that writes one of its inputs, whatever order they were listed in."""
    from voxflow.pipeline.chain import Step, order_by_files

    a = Step("a", inputs={}, outputs={"x": "x"}, config={})
    b = Step("b", inputs={"x": "x"}, outputs={"y": "y"}, config={})
    c = Step("c", inputs={"x": "x", "y": "y"}, outputs={"z": "z"}, config={})
    assert [s.name for s in order_by_files([c, b, a])] == ["a", "b", "c"]
    import graphlib

    with pytest.raises(graphlib.CycleError):
        order_by_files([Step("p", {"q": "q"}, {"p": "p"}, {}), Step("q", {"p": "p"}, {"q": "q"}, {})])
