"""Library functions the notebooks forbid inside a graded function, and finding their use.

The notebooks say "Do not call ``torchvision.ops.nms``" (``nms``,
``class_spec_nms``) and "Do not call ``torchvision.ops.box_iou``" (``iou``):
those functions *are* the answer.  :data:`FORBIDDEN` is the one table of those
rules (``tests/test_grader_scoring_zoo.py`` checks that each rule is written in
its notebook's text).  They are enforced twice:

* in the grader's process, :func:`forbidden_uses` reads the submission's
  source (never runs it): names, attribute chains, ``import ... as`` and
  ``from ... import`` aliases, assignments of those (``tv = torchvision.ops``),
  ``getattr(module, "nms")``, ``importlib.import_module(...)``; inside the
  function, its defaults and decorators, and the submission's own helpers it
  mentions (transitively; not the functions the grader answers while it is
  checked).  A use costs the function's points, with a message;
* in the sandbox (defence in depth, for what a static reading misses:
  ``globals()`` tricks, computed names), the child replaces the forbidden
  callables -- and every alias of them it can find -- by ones that raise while
  the function's checks run (:func:`grader.harness.submission.forbid_callables`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from grader.parsing import parse as parse_python

_NMS = ("torchvision.ops.nms", "torchvision.ops.boxes.nms", "torchvision.ops.batched_nms",
        "torchvision.ops.boxes.batched_nms", "torchvision.ops.boxes._batched_nms_vanilla",
        "torchvision.ops.boxes._batched_nms_coordinate_trick", "torch.ops.torchvision.nms")
_IOU = tuple(f"torchvision.ops{sub}.{name}" for sub in ("", ".boxes")
             for name in ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou")) + \
    ("torchvision.ops.boxes._box_inter_union", "torchvision.ops.boxes._box_diou_iou")

#: ``{assignment: {function: (rule as the notebook states it, forbidden qualified names)}}``.
FORBIDDEN: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "one_stage": {
        "nms": ("Do not call `torchvision.ops.nms`", _NMS),
        "class_spec_nms": ("do not call `torchvision.ops.nms` or `batched_nms`", _NMS),
    },
    "two_stage": {
        "iou": ("Do not call `torchvision.ops.box_iou`", _IOU),
    },
}


def forbidden_names(assignment: str, function: str) -> tuple[str, ...]:
    """Qualified names the notebook forbids inside ``function`` (empty: none)."""
    return FORBIDDEN.get(assignment, {}).get(function, ("", ()))[1]


def rule(assignment: str, function: str) -> str:
    return FORBIDDEN.get(assignment, {}).get(function, ("", ()))[0]


# ---------------------------------------------------------------------------
# Reading the submission
# ---------------------------------------------------------------------------

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _shallow(nodes: Iterable[ast.AST]):
    """Every node under ``nodes`` except inside nested functions, lambdas and classes."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, _SCOPES):
                todo.append(child)


def _resolve(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The qualified name ``node`` denotes, when it is a chain of known names."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        first = node.args[0]
        if name == "getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and isinstance(node.args[1].value, str):
            base = _resolve(first, aliases)
            return f"{base}.{node.args[1].value}" if base else None
        if name in ("import_module", "__import__") and isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        base = _resolve(node.value, aliases)
        if base == "sys.modules":
            return node.slice.value
    return None


def _bind_aliases(nodes: Iterable[ast.AST], aliases: dict[str, str]) -> None:
    """Add the names ``nodes`` bind to qualified names (imports, ``x = a.b``), to a fixed point."""
    nodes = list(nodes)
    for _ in range(8):  # alias chains are short; a bound keeps hostile input cheap
        before = dict(aliases)
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        aliases[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        aliases[root] = root
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                target = _resolve(node.value, aliases)
                if target:
                    for t in targets:
                        if isinstance(t, ast.Name):
                            aliases[t.id] = target
        if aliases == before:
            return


def _uses(nodes: Iterable[ast.AST], aliases: dict[str, str], forbidden: tuple[str, ...]) -> set[str]:
    found = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
                name = _resolve(sub, aliases)
                if name and any(name == f or name.startswith(f + ".") for f in forbidden):
                    found.add(next(f for f in forbidden if name == f or name.startswith(f + ".")))
    return found


def forbidden_uses(source: str, assignment: str, function: str, answered: Iterable[str] = ()) -> list[str]:
    """Forbidden names ``function`` uses in ``source`` (directly, through an alias, or
    through the submission's own helpers it mentions, except the names in
    ``answered``, which the grader replaces while ``function`` is checked)."""
    forbidden = forbidden_names(assignment, function)
    if not forbidden:
        return []
    try:
        tree = parse_python(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # an unparsable submission fails elsewhere; the sandbox still blocks the calls
    top = list(_shallow(tree.body))
    # Top-level bindings of each name: definitions, assignments, imports.
    bindings: dict[str, list[ast.AST]] = {}
    for node in top:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bindings.setdefault(node.name, []).append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for name in ast.walk(t):
                    if isinstance(name, ast.Name):
                        bindings.setdefault(name.id, []).append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                bindings.setdefault(a.asname or a.name.split(".")[0], []).append(node)
    defined_last: set[str] = set()
    for name, nodes in bindings.items():
        # What the name holds when the checks run: bindings before its last `def` are overwritten.
        defs = [n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        if defs:
            last_def = max(n.lineno for n in defs)
            bindings[name] = [n for n in nodes if n.lineno >= last_def]
            if max(n.lineno for n in nodes) == last_def:
                defined_last.add(name)
    module_aliases: dict[str, str] = {}
    _bind_aliases(top, module_aliases)
    skip = set(answered) - {function}
    for name in defined_last | skip:  # the submission's own definition, or the grader's answer
        module_aliases.pop(name, None)
    found: set[str] = set()
    seen: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        target = module_aliases.get(name)
        if target:
            found |= {f for f in forbidden if target == f or target.startswith(f + ".")}
        for node in bindings.get(name, []):
            aliases = dict(module_aliases)
            _bind_aliases(ast.walk(node), aliases)  # imports and aliases inside the function
            found |= _uses([node], aliases, forbidden)
            todo.extend(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in bindings)
    return sorted(found)


def forbidden_message(assignment: str, function: str, uses: list[str]) -> str:
    return (f"`{function}` uses {', '.join(f'`{u}`' for u in uses)}: the notebook says \"{rule(assignment, function)}\" "
            f"here; write `{function}` with tensor operations (this costs all of its points)")
