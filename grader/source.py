"""Whole-assignment sources built from :mod:`solutions`: the reference-completed
submission and the release (stubs), as one module's text each.

Used by the tests, the benchmark, the notebook builder and the Gradescope bundle: the
reference-completed submission must score full marks and the release zero.
The notebook builder (``assignments/``) makes the real notebooks; these
sources are the same code without the notebook around it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from grader.parsing import parse as parse_python

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

#: Reference modules concatenated (in dependency order) for each assignment.
MODULES = {
    "one_stage": ["box_ops", "locations", "non_max_suppression", "backbone", "fcos_head", "fcos_targets", "fcos"],
    "two_stage": ["box_ops", "locations", "non_max_suppression", "backbone", "anchors", "rcnn_targets", "rpn", "faster_rcnn"],
}


def _strip_internal_imports(text: str) -> tuple[str, list[str]]:
    """Remove ``from __future__``/``from solutions... import``/``from data_utils.conventions import``
    statements; return the text and the convention imports, which the caller hoists into the one
    header of the concatenated source (each module repeats them; the submission needs them once, on top)."""
    tree = parse_python(text)
    lines = text.splitlines()
    drop: set[int] = set()
    replacements: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module in ("__future__", "data_utils.conventions") or node.module.split(".")[0] == "solutions"):
            drop.update(range(node.lineno - 1, node.end_lineno))
            if node.module == "data_utils.conventions":
                replacements.append("from data_utils.conventions import " + ", ".join(a.name for a in node.names))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop), replacements


def reference_source(assignment: str) -> str:
    """Every reference module of ``assignment`` as one module's text."""
    bodies, header = [], ["from __future__ import annotations"]
    for module in MODULES[assignment]:
        text, replacements = _strip_internal_imports((SOLUTIONS / f"{module}.py").read_text())
        header += [r for r in replacements if r not in header]
        bodies.append(f"# ---- solutions/{module}.py ----\n{text}")
    return "\n".join(header) + "\n\n" + "\n\n".join(bodies) + "\n"


def release_source(assignment: str, stub: str = "raise NotImplementedError()") -> str:
    """The reference source with every solution region replaced by ``stub``
    (what ``nbgrader generate_assignment`` does to the notebook)."""
    out, skipping = [], False
    for line in reference_source(assignment).splitlines():
        if line.strip().startswith(BEGIN):
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}{stub}"]
            skipping = True
        elif line.strip().startswith(END):
            skipping = False
        elif not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def solution_regions(assignment: str) -> dict[str, str]:
    """``{function or class name: its solution region text}`` (first region per name)."""
    text = reference_source(assignment)
    tree = parse_python(text)
    lines = text.splitlines()
    regions: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            segment = "\n".join(lines[node.lineno - 1:node.end_lineno])
            match = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), segment, flags=re.S)
            if match and node.name not in regions:
                regions[node.name] = match.group(1)
    return regions
