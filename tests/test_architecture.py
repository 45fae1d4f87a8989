"""The import graph of app/ and training/, read with ast (imports inside functions included): no cycles, and the
service's code imports nothing from training/ (only the CLI entry module registers training's commands)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).parent.parent
PACKAGES = ("app", "training")
# The CLI entry module may register training's commands; every other module of app/ serves.
SERVING_EXCEPTIONS = {"app.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module an import statement anywhere in the tree names (``from a import b`` names ``a`` and ``a.b``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges between project modules; package ``__init__`` modules are left out (they hold no code)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set(imported_names(tree, module, path.name == "__init__.py"))
        graph[module] = {
            target
            for target in targets
            if target in modules and target != module and modules[target].name != "__init__.py"
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_function_level_and_relative_imports() -> None:
    tree = ast.parse("def f():\n    from training.export import export_run\n    import app.artifact\nfrom . import x\n")
    names = set(imported_names(tree, "app.api.routes.y", is_package=False))
    assert {"training.export", "training.export.export_run", "app.artifact", "app.api.routes.x"} <= names


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_app_and_training() -> None:
    graph = import_graph(project_modules())
    assert {"training.evaluate", "training.model"} <= graph["training.train"]  # the reader sees the edges
    assert cycles(graph) == []


def test_serving_code_imports_nothing_from_training() -> None:
    graph = import_graph(project_modules())
    offenders = {
        module: sorted(target for target in targets if target.startswith("training"))
        for module, targets in graph.items()
        if module.startswith("app") and module not in SERVING_EXCEPTIONS
    }
    assert {module: targets for module, targets in offenders.items() if targets} == {}
    assert any(target.startswith("training") for target in graph["app.cli"])  # the reader sees the CLI's imports


def readme_layout() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Project layout") :]
    return section[section.index("```") + 3 : section.index("```", section.index("```") + 3)]


def test_the_readme_layout_matches_the_tree() -> None:
    import re

    layout = readme_layout()
    named = set(re.findall(r"[A-Za-z_0-9]+\.py", layout))
    modules = {path.name for package in (*PACKAGES, "bench") for path in (REPO / package).rglob("*.py")}
    modules |= {path.name for path in (REPO / "tests").glob("*.py")}
    missing = sorted(
        path.relative_to(REPO).as_posix()
        for package in (*PACKAGES, "bench")
        for path in (REPO / package).rglob("*.py")
        if path.name != "__init__.py" and path.name not in named
    )
    assert missing == [], "modules the README's project layout does not name"
    assert sorted(named - modules) == [], "modules the README's project layout names but the tree lacks"
