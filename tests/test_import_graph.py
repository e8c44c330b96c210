"""The project's own modules import each other without cycles or private names.

Every ``import`` of the packages below is collected with :mod:`ast` -- at
module level and inside functions, relative ones resolved -- into a module
graph.  A cycle held together only by imports inside functions still is a
cycle: it means two modules cannot be read (or tested) one without the other.
A module that imports another module's ``_private`` name depends on what that
module promised to keep free to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("grader", "data_utils", "solutions", "assignments")

#: ``(importer, "module._name")`` pairs allowed to cross a privacy boundary, with why.
PRIVATE_IMPORTS_ALLOWED: dict[tuple[str, str], str] = {}


def module_files(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of ``packages`` under ``root``.

    Generated copies under ``assignments/course/`` (nbgrader's folders) are not modules of the package."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "course" in parts[1:-1] or not all(p.isidentifier() for p in parts):
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module an ``ImportFrom`` of ``level`` dots names, seen from ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, modules: set[str]) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` for every import in ``path`` (functions included).

    ``from a import b`` where ``a.b`` is itself a module counts as an import of ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in modules else (target, alias.name, node.lineno))
    return found


def _owner(module: str, modules: set[str]) -> str | None:
    """The project module ``module`` names (``a.b.c`` -> ``a.b`` when only that one exists), else None."""
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module or None


def import_graph(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """importer -> {imported project module: first line}; a package's own ``__init__`` counts like any module."""
    modules = set(files)
    graph: dict[str, dict[str, int]] = {name: {} for name in files}
    for name, path in files.items():
        for target, _, line in imports_of(name, path, modules):
            owner = _owner(target, modules)
            if owner is not None and owner != name:
                graph[name].setdefault(owner, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
            elif colour.get(child, BLACK) == GREY:
                return path[path.index(child):] + [child]
            elif colour.get(child) == WHITE:
                colour[child] = GREY
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def tangles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (every group of mutually dependent
    modules shows up, not only the first cycle found)."""
    reach = {node: set() for node in graph}
    for node in graph:  # reachability by depth-first search: the graph has ~120 nodes
        todo = list(graph[node])
        while todo:
            child = todo.pop()
            if child in graph and child not in reach[node]:
                reach[node].add(child)
                todo.extend(graph[child])
    groups, seen = [], set()
    for node in sorted(graph):
        if node in seen or node not in reach[node]:
            continue
        group = {node} | {other for other in reach[node] if node in reach[other]}
        seen |= group
        sub = {a: {b: line for b, line in graph[a].items() if b in group} for a in group}
        groups.append(find_cycle(sub))
    return groups


def private_imports(files: dict[str, Path]) -> list[tuple[str, str, int]]:
    """``(importer, "module._name", line)`` for every import of another module's ``_private`` name."""
    modules = set(files)
    out = []
    for name, path in files.items():
        for target, imported, line in imports_of(name, path, modules):
            owner = _owner(target, modules)
            if owner is None or owner == name:
                continue
            private_module = next((p for p in target.split(".") if p.startswith("_") and not p.startswith("__")), None)
            # Importing a private module is fine inside its own package (grader._given from grader.sandbox).
            if private_module and target.split(".")[0] != name.split(".")[0]:
                out.append((name, target, line))
            if imported and imported.startswith("_") and not imported.startswith("__"):
                out.append((name, f"{target}.{imported}", line))
    return out


def _describe(cycle: list[str], graph: dict[str, dict[str, int]], files: dict[str, Path]) -> str:
    steps = [f"  {a} imports {b} ({files[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_the_project_has_no_import_cycle():
    files = module_files()
    assert {"grader.grade", "data_utils.data.voc", "solutions.fcos", "assignments.build"} <= set(files)
    graph = import_graph(files)
    found = tangles(graph)
    assert not found, "\n".join(_describe(cycle, graph, files) for cycle in found)


def test_no_module_imports_another_modules_private_name():
    found = [(importer, target, line) for importer, target, line in private_imports(module_files())
             if (importer, target) not in PRIVATE_IMPORTS_ALLOWED]
    assert not found, "imports of private names (make them public, or move them to a shared module):\n" + "\n".join(
        f"  {importer}:{line} imports {target}" for importer, target, line in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_the_cycle_check_sees_imports_inside_functions_and_relative_ones(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n",
                      "pkg/b.py": "def f():\n    from .c import g\n    return g\n",
                      "pkg/c.py": "def g():\n    import pkg.a\n"})
    files = module_files(tmp_path, ("pkg",))
    assert find_cycle(import_graph(files)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert tangles(import_graph(files)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (tmp_path / "pkg/c.py").write_text("def g():\n    import os\n")
    assert find_cycle(import_graph(module_files(tmp_path, ("pkg",)))) is None
    assert tangles(import_graph(module_files(tmp_path, ("pkg",)))) == []


def test_the_privacy_check_sees_private_names(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "_x = 1\ny = 2\n",
                      "pkg/b.py": "from pkg.a import y\ndef f():\n    from .a import _x\n"})
    assert private_imports(module_files(tmp_path, ("pkg",))) == [("pkg.b", "pkg.a._x", 3)]


def reference_imports(files: dict[str, Path], student: str = "data_utils",
                      reference: str = "solutions") -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of a ``reference`` module by a ``student`` module
    (functions included)."""
    graph = import_graph(files)
    return [(importer, target, line) for importer, targets in sorted(graph.items())
            if importer.split(".")[0] == student
            for target, line in sorted(targets.items()) if target.split(".")[0] == reference]


def test_the_student_package_imports_nothing_of_the_reference():
    """``data_utils`` is the wheel students install, and they have no ``solutions``: an import of it
    anywhere in ``data_utils`` -- even inside a function -- is code the wheel ships that cannot run."""
    found = reference_imports(module_files())
    assert not found, "data_utils imports the reference (move that code next to it, into solutions/):\n" + "\n".join(
        f"  {importer}:{line} imports {target}" for importer, target, line in found)


def test_the_reference_import_check_sees_an_import_inside_a_function(tmp_path):
    _write(tmp_path, {"data_utils/__init__.py": "", "data_utils/a.py": "def f():\n    from solutions.x import y\n",
                      "data_utils/b.py": "import os\n", "solutions/__init__.py": "", "solutions/x.py": "y = 1\n",
                      "solutions/z.py": "from data_utils.b import os\n"})
    files = module_files(tmp_path, ("data_utils", "solutions"))
    assert reference_imports(files) == [("data_utils.a", "solutions.x", 2)]


#: What each part of the student package may not import (a module or a package, and everything under it), so
#: that the folders tell the truth about what depends on what: the data reach the model without the training
#: loop or the evaluator, the evaluator judges detections without knowing how they were trained, and the shared
#: modules at the top sit beneath all three.
STUDENT_LAYERS: dict[str, tuple[str, ...]] = {
    "data_utils.data": ("data_utils.training", "data_utils.evaluation"),
    "data_utils.evaluation": ("data_utils.training",),
    **{f"data_utils.{shared}": ("data_utils.data", "data_utils.training", "data_utils.evaluation")
       for shared in ("conventions", "types", "errors", "atomic", "cli_options")},
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(files: dict[str, Path],
                     layers: dict[str, tuple[str, ...]] = STUDENT_LAYERS) -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import (functions included) that ``layers`` forbids."""
    graph = import_graph(files)
    return [(importer, target, line) for importer, targets in sorted(graph.items())
            for part, forbidden in layers.items() if _within(importer, part)
            for target, line in sorted(targets.items()) if any(_within(target, f) for f in forbidden)]


def test_the_student_package_folders_depend_one_way():
    files = module_files()
    assert {part for part in STUDENT_LAYERS if part in files} == set(STUDENT_LAYERS), "a layer names no module"
    found = layer_violations(files)
    assert not found, "data_utils imports against its layering (see STUDENT_LAYERS):\n" + "\n".join(
        f"  {importer}:{line} imports {target}" for importer, target, line in found)


def test_the_layer_check_sees_an_import_inside_a_function(tmp_path):
    _write(tmp_path, {"data_utils/__init__.py": "", "data_utils/data/__init__.py": "",
                      "data_utils/data/voc.py": "def f():\n    from data_utils.training.engine import g\n",
                      "data_utils/training/__init__.py": "", "data_utils/training/engine.py": "g = 1\n",
                      "data_utils/evaluation/__init__.py": "",
                      "data_utils/evaluation/voc_eval.py": "from data_utils.data import voc\n"})
    files = module_files(tmp_path, ("data_utils",))
    assert layer_violations(files) == [("data_utils.data.voc", "data_utils.training.engine", 2)]
