"""No import circles inside the project: dependencies point one way along the data flow.

The graph is read from the source with :mod:`ast` (nothing is imported), and counts every import a module can run:
top-level ones, those inside functions (lazy imports) and those under ``if TYPE_CHECKING:``. A lazy import hides a
circle from the interpreter but not from a reader, who still has to hold both modules in mind at once.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crops_ray", "serve", "pipelines")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}


def owning_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` lies in (``crops_ray.schema.VIDEO`` -> ``crops_ray.schema``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def absolute_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` reads from, relative imports resolved against ``module``'s package."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    anchor = package[: len(package) - node.level + 1]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports_of(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports anywhere in its body: at the top, inside functions, under
    ``if TYPE_CHECKING:``. ``from x import y`` is an edge to ``x.y`` when that is a module, else to ``x``."""
    is_package = path.name == "__init__.py"
    named: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            named.update(owning_module(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute_base(node, module, is_package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                named.add(submodule if submodule in modules else owning_module(base, modules))
    return {m for m in named if m is not None and m != module}


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (a package's ``__init__`` imports are the package's edges)."""
    modules = project_modules(root, packages)
    return {module: imports_of(path, module, modules) for module, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative: the sets of modules that import each other, directly or around a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
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
                members = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.add(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(frozenset(members))
    return found


def one_cycle(graph: dict[str, set[str]], members: frozenset[str]) -> list[str]:
    """A shortest circle through the component's first module, as a path that ends where it starts."""
    start = min(members)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = previous[node]
                    return [start, *reversed(path[1:]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{sorted(members)} is not a circle")


def describe(graph: dict[str, set[str]], cycles: list[frozenset[str]]) -> str:
    return "\n".join(f"{sorted(c)}: {' -> '.join(one_cycle(graph, c))}" for c in cycles)


def test_the_project_has_no_import_cycles():
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + describe(graph, cycles)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """A circle made only of a lazy import, a TYPE_CHECKING import, a submodule named in ``from``, a relative import
    and a package's re-export is found; a module that only imports from the circle is not in it."""
    package = tmp_path / "crops_ray"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from crops_ray import b\n",  # lazy, and b is a submodule named in ``from``
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from crops_ray.sub import Thing\n",
        "sub/__init__.py": "from .thing import Thing\n",  # the package's re-export, relative
        "sub/thing.py": "import crops_ray.a\nThing = 1\n",
        "reader.py": "from crops_ray.a import f\nimport numpy\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(tmp_path, ("crops_ray",))
    assert graph["crops_ray.reader"] == {"crops_ray.a"}
    assert graph["crops_ray.sub"] == {"crops_ray.sub.thing"}
    circle = frozenset({"crops_ray.a", "crops_ray.b", "crops_ray.sub", "crops_ray.sub.thing"})
    assert strongly_connected(graph) == [circle]
    path = one_cycle(graph, circle)
    assert path[0] == path[-1] and set(path) == circle
    (package / "a.py").write_text("def f():\n    pass\n")
    assert strongly_connected(import_graph(tmp_path, ("crops_ray",))) == []
