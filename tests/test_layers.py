"""The package's import graph: layered, without circles, and Prefect only in orchestration.

Every ``import`` counts, at module level, inside functions and under ``TYPE_CHECKING``: a lazy import
is still an arrow a later change can turn into a circle. The layers, lowest first:

    kernel < storage < ocr < domain < steps < services < orchestration < cli

A module may import its own layer and the layers below it, never one above. Only orchestration
(and the CLI, lazily, to run flows) imports Prefect.
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent / "sohoa"
LAYERS = ("kernel", "storage", "ocr", "domain", "steps", "services", "orchestration", "cli")
PREFECT_FREE = ("kernel", "storage", "ocr", "domain", "steps", "services")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement in the file, relative imports resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the sohoa modules it imports (a name imported from a package counts as the package)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "package"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_circles():
    assert cycles(graph()) == []


def test_no_layer_imports_a_layer_above_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{a} -> {b}" for a, targets in graph().items() for b in sorted(targets)
              if layer(a) in rank and layer(b) in rank and rank[layer(b)] > rank[layer(a)]]
    assert upward == []


def test_prefect_is_imported_only_by_orchestration_and_the_cli():
    offenders = [module_name(p) for p in ROOT.rglob("*.py") if layer(module_name(p)) in PREFECT_FREE
                 and any(m == "prefect" or m.startswith("prefect.") for m in imports_of(p))]
    assert offenders == []


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The checks above would pass on a checker that sees nothing: show it sees both kinds of fault."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    edges = graph()
    assert "sohoa.kernel.errors" in edges["sohoa.steps.capture"] or "sohoa.kernel.models" in edges["sohoa.steps.capture"]
    assert any(layer(b) == "services" for b in edges["sohoa.orchestration.process"])
