"""No import cycles among hana_server and hana_protocol modules, nor between their packages, so
no module's import order ever matters (read from the source with `ast`, nothing is imported).

An import counts if it runs when the module is imported: module level, including inside `if`,
`try` and class bodies, but not inside functions or `if TYPE_CHECKING:` blocks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {
    "hana_server": REPO / "server_ext" / "hana_server",
    "hana_protocol": REPO / "hana_protocol",
}

Graph = dict[str, set[str]]


def module_files() -> dict[str, Path]:
    modules = {}
    for name, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [name, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run at import time."""
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.ClassDef):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo += getattr(node, field, [])
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body


def import_graph() -> Graph:
    """module -> the project modules importing it runs (a target's packages included, except
    those the importer is already inside of)."""
    files = module_files()
    graph: Graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                name = ".".join(parts[:n])
                inside = module == name or module.startswith(name + ".")
                if name in files and not inside:
                    edges.add(name)
        graph[module] = edges
    return graph


def package_of(module: str) -> str:
    """The unit a package-level cycle is counted in: `hana_server.api.native` -> `hana_server.api`,
    top-level modules stay themselves."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph(graph: Graph) -> Graph:
    packages: Graph = {}
    for module, targets in graph.items():
        source = package_of(module)
        packages.setdefault(source, set()).update(
            package_of(t) for t in targets if package_of(t) != source
        )
    return packages


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycle_between_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycle_between_packages() -> None:
    cycle = find_cycle(package_graph(import_graph()))
    assert cycle is None, "package import cycle: " + " -> ".join(cycle or [])


def test_the_neutral_layer_imports_neither_side() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("hana_protocol"):
            assert not {t for t in targets if not t.startswith("hana_protocol")}, module


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_find_cycle_finds_them(graph: Graph, cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


def test_the_graph_sees_the_imports_that_run() -> None:
    source = ast.parse(
        "import x\nfrom y import z\nif TYPE_CHECKING:\n    import hidden\n"
        "try:\n    import w\nexcept ImportError:\n    import v\n"
        "def f():\n    import lazy\n"
    )
    found = {ast.unparse(node) for node in runtime_imports(source)}
    assert found == {"import x", "from y import z", "import w", "import v"}


def test_the_old_api_generation_cycle_would_be_found() -> None:
    """The cycle issue 10 names (api.native -> generation -> api.schemas) is one this test sees."""
    graph = import_graph()
    graph["hana_server.generation"] = graph["hana_server.generation"] | {"hana_server.api.base"}
    assert find_cycle(package_graph(graph)) is not None
