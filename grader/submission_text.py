"""What the grader reads from a submission's extracted source: the names it
defines at top level and where its lines came from (the ``# --- cell N ---``
markers :func:`grader.notebook.extract_submission` writes).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from grader.parsing import parse as parse_python

#: What ``ast.parse`` raises on text it cannot turn into a tree: syntax errors, code nested
#: too deeply (a 20,000-term expression: RecursionError), null bytes (ValueError).
PARSE_ERRORS = (SyntaxError, RecursionError, MemoryError, ValueError)


def top_level_statements(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements that run at module level: the body and, recursively, the bodies of
    top-level ``if``/``try``/``with``/loops (a definition inside an ``if`` is a definition)."""
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.If, ast.For, ast.While, ast.With, ast.Try, getattr(ast, "TryStar", ast.Try))):
            children = list(node.body) + list(getattr(node, "orelse", [])) + list(getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                children += handler.body
            stack.extend(reversed(children))


def defined_names(source: str | ast.Module) -> set[str]:
    """Names a module defines at top level (:func:`top_level_statements`): functions, classes and
    plain ``name = ...`` assignments.  ``source`` is text or a parsed module; text that does not
    parse defines nothing."""
    if isinstance(source, str):
        try:
            source = parse_python(source)
        except PARSE_ERRORS:
            return set()
    names = set()
    for node in top_level_statements(source):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def locate(source: str, lineno: int) -> str:
    """``"cell 12, line 3"`` for a line of an extracted source (``"line N"`` without cell markers)."""
    lines = source.splitlines()
    for i in range(min(lineno, len(lines)) - 1, -1, -1):
        match = re.match(r"# --- (cell \d+|input \d+) ---$", lines[i])
        if match:
            return f"{match.group(1)}, line {lineno - i - 1}"
    return f"line {lineno}"


def relabel_lines(text: str, source: str) -> str:
    """Rewrite ``line N`` references of a traceback into notebook cell positions."""
    if "# --- " not in source:
        return text
    return re.sub(r"\bline (\d+)", lambda m: locate(source, int(m.group(1))), text)
