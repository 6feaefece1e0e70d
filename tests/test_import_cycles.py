"""No import cycles between the project's modules, counting the imports made inside functions.

An import inside a function is how a cycle usually hides: it works because
it runs late, but the two modules still cannot be understood, tested or
moved apart, and the first caller that runs it early breaks. So the graph
here has one edge per ``import`` anywhere in a module's source (module level,
functions, methods), read with ``ast`` rather than by importing anything.

What is not an edge:

- an import under ``if TYPE_CHECKING:``: it never runs, it names a type;
- a module importing one of its own ancestor packages (``gateway.storage.
  sqlite`` taking a name from ``gateway.storage``): a package's ``__init__``
  importing its own submodules and those reaching back to the package is
  how a package is built, and the ancestor is already being imported
  whenever the submodule is.

Importing ``a.b.c`` also runs ``a/b/__init__.py``, so it is an edge to
``a.b`` as well, unless that package is the importer's own ancestor.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "clients", "rules", "tags")

Graph = dict[str, set[str]]


def modules_under(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> its file, for every ``.py`` file of the packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skipped.update(id(n) for body in node.body for n in ast.walk(body))
    return skipped


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The known modules an import statement runs: what it names, and a name that is a submodule."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [target]
    names += [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    """module -> the modules of ``packages`` it imports anywhere in its source (see the module docstring)."""
    known = modules_under(root, packages)
    graph: Graph = {name: set() for name in known}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = _type_checking_only(tree)
        is_package = path.name == "__init__.py"
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skipped:
                continue
            for target in _imported(node, module, is_package, known):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # a.b.c runs a, a.b and a.b.c
                    runs = ".".join(parts[:i])
                    if runs in known and runs != module and runs not in ancestors:
                        graph[module].add(runs)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so a long chain cannot exceed the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(_one_cycle(graph, set(component)))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def _one_cycle(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, to name in the failure."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    raise AssertionError("a strongly connected component without a cycle")


def test_the_project_has_no_import_cycles() -> None:
    graph = import_graph(ROOT, PACKAGES)
    found = [" -> ".join(cycle) for cycle in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_graph_covers_the_packages_and_their_function_level_imports() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert {"gateway.app", "clients.ga4", "rules.conditions", "tags.ga4"} <= graph.keys()
    assert "gateway.storage" in graph["gateway.app"] or "gateway.storage.base" in graph["gateway.app"]
    assert sum(len(targets) for targets in graph.values()) > len(graph)  # edges were read, not an empty graph


def _write(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import helper\n",
        "pkg/b.py": "def helper():\n    from pkg import a\n    return a\n",
    })
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_cycle_through_a_package_init_and_a_relative_import_is_found(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/collect.py": "def build():\n    from pkg.debug.middleware import Trace\n    return Trace\n",
        "pkg/debug/__init__.py": "from .routes import ROUTES\n",
        "pkg/debug/routes.py": "from ..collect import build\nROUTES = []\n",
        "pkg/debug/middleware.py": "class Trace: ...\n",
    })
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.collect", "pkg.debug", "pkg.debug.routes", "pkg.collect"]]


def test_a_package_importing_its_own_submodules_and_type_only_imports_are_not_cycles(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.store import Store\n",
        "pkg/store/__init__.py": "from pkg.store.sqlite import Store\n",
        "pkg/store/base.py": "class Base: ...\n",
        "pkg/store/sqlite.py": "from pkg.store import base\nfrom pkg import store\nclass Store(base.Base): ...\n",
        "pkg/app.py": "from typing import TYPE_CHECKING\nfrom pkg.store import Store\n",
        "pkg/views.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.app import App\n",
        "pkg/tool.py": "import pkg.views\n",
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert cycles(graph) == []
    assert graph["pkg.store"] == {"pkg.store.sqlite"}
    assert graph["pkg.store.sqlite"] == {"pkg.store.base"}
    assert graph["pkg.views"] == set()
    assert graph["pkg.tool"] == {"pkg.views"}
