"""The modules of ``zoo`` import each other without a cycle, deferred (function-level) imports included.

An edge is an ``import zoo.x`` or ``from zoo.x import y`` anywhere in a module (``y`` counts as the
module ``zoo.x.y`` when that is a module); imports under ``if TYPE_CHECKING:`` are annotations only and
do not count, nor does a module's import of its own ancestor package (``import zoo`` in ``zoo.engine.utils``),
which Python has initialised before the module itself.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import statement outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (ROOT / "zoo").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in runtime_imports(ast.parse(path.read_text())):
            if not target.startswith("zoo"):
                continue
            subs = {f"{target}.{n}" for n in names} & modules.keys()
            graph[name] |= {t for t in (subs or {target}) if t != name and not name.startswith(f"{t}.")}
    return graph


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "zoo.data.types" in graph["zoo.data.sources"] and "zoo.registry" in graph["zoo.data.types"]
    assert "zoo.data.augment" in graph["zoo.data.build"]  # a deferred import counts
    assert not any(m.startswith("zoo.data") for m in graph["zoo.data.types"] | graph["zoo.registry"])


def test_zoo_has_no_import_cycle() -> None:
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None
