"""Loading a submission and guarding what it may reach: the import hook refusing
:data:`BLOCKED_PACKAGES`, library callables a check forbids, and error records that show
only the submission's own frames.

Standard library only (torch and torchvision imported when a check forbids their callables).
"""

from __future__ import annotations

import sys
import traceback

BLOCKED_PACKAGES = ("solutions", "grader")
SUBMISSION_FILE = "<submission>"


class ImportBlocker:
    """``sys.meta_path`` hook refusing :data:`BLOCKED_PACKAGES` (records attempts).

    ``grader`` covers this harness too: the zygote loaded it as ``grader.harness.*``, and the
    child drops those modules from ``sys.modules`` before installing the hook, so an import of
    them reaches the hook instead of the loaded module."""

    def __init__(self):
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED_PACKAGES:
            self.attempts.append(fullname)
            raise ImportError(f"importing {fullname!r} is not allowed in a submission")
        return None

    def find_module(self, fullname, path=None):  # pragma: no cover - legacy protocol
        return None


class MissingName(NameError):
    pass


def load_submission(source: str, name: str = "submission", warnings: list | None = None) -> dict:
    """Execute ``source`` as a fresh module and return its namespace.

    Top-level statements run one by one: one that raises an ``Exception``
    (an import of a module the sandbox lacks, a bad constant) is skipped and
    noted in ``warnings``, so the other definitions are still graded.
    ``SystemExit``/``KeyboardInterrupt`` and syntax errors stop the load.
    """
    import ast
    import linecache
    import types

    module = types.ModuleType(name)
    module.__file__ = SUBMISSION_FILE
    sys.modules[name] = module
    linecache.cache[SUBMISSION_FILE] = (len(source), None, source.splitlines(True), SUBMISSION_FILE)
    tree = ast.parse(source, SUBMISSION_FILE)
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    flags = 0
    for node in future:
        for alias in node.names:
            import __future__

            feature = getattr(__future__, alias.name, None)
            flags |= getattr(feature, "compiler_flag", 0)
    for node in tree.body:
        code = compile(ast.Module(body=[node], type_ignores=[]), SUBMISSION_FILE, "exec", flags=flags, dont_inherit=True)
        try:
            exec(code, module.__dict__)
        except Exception as error:  # keep the rest of the submission (re-raised when not collecting)
            if warnings is None:
                raise
            first = (str(error).splitlines() or [""])[0][:200]
            warnings.append(f"line {node.lineno}: {type(error).__name__}: {first} (statement skipped)")
    return module.__dict__


def submission_traceback(error: BaseException, limit: int = 12) -> str:
    """The traceback of ``error`` restricted to frames of the submission."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == SUBMISSION_FILE]
    lines = []
    for frame in frames[-limit:]:
        lines.append(f'  line {frame.lineno}, in {frame.name}: {(frame.line or "").strip()}')
    if isinstance(error, SyntaxError) and error.filename == SUBMISSION_FILE:
        lines.append(f"  line {error.lineno}: {(error.text or '').strip()}")
    return "\n".join(lines)


def describe_error(error: BaseException) -> dict:
    if isinstance(error, SystemExit):
        return {"error_type": "SystemExit", "error": f"your code called sys.exit({error.code!r}) (or raised SystemExit)",
                "traceback": submission_traceback(error)}
    if isinstance(error, KeyboardInterrupt):
        return {"error_type": "KeyboardInterrupt", "error": "KeyboardInterrupt raised", "traceback": submission_traceback(error)}
    text = str(error)
    if len(text) > 2000:
        text = text[:2000] + " ..."
    return {"error_type": type(error).__name__, "error": text, "traceback": submission_traceback(error)}


def lookup(ns: dict, name: str):
    if name not in ns:
        raise MissingName(f"{name!r} is not defined in the submission")
    return ns[name]


class ForbiddenCall(RuntimeError):
    pass


def forbid_callables(ns: dict, names: list, function: str) -> None:
    """Make the library callables ``names`` (qualified, e.g. ``torchvision.ops.nms``) raise
    while ``function`` is checked: the notebook forbids them there (grader/forbidden.py
    reads the source; this catches what a static reading misses).  Replaces the
    attributes and every alias of the same objects in torch/torchvision modules and
    in the submission's namespace (this process is one check's fork: nothing is restored)."""
    import importlib

    originals: dict[int, object] = {}
    keep_alive = []  # ids stay unique only while the originals live
    for qualified in names:
        parts = qualified.split(".")
        try:
            owner = importlib.import_module(parts[0])
            for part in parts[1:-1]:
                owner = getattr(owner, part)
            original = getattr(owner, parts[-1])
        except Exception:  # noqa: BLE001 - not in this torchvision version
            continue

        def blocked(*args, _name=qualified, **kwargs):
            raise ForbiddenCall(f"{_name} is not allowed in `{function}` (the notebook asks you to write it yourself)")

        try:
            setattr(owner, parts[-1], blocked)
        except Exception:  # noqa: BLE001 - a read-only attribute: leave it
            continue
        originals.setdefault(id(original), blocked)  # the first (public) name in messages
        keep_alive.append(original)
    if not originals:
        return
    spaces = [ns] + [vars(m) for n, m in list(sys.modules.items())
                     if m is not None and n.split(".")[0] in ("torchvision", "torch") and hasattr(m, "__dict__")]
    for space in spaces:
        for key, value in list(space.items()):
            replacement = originals.get(id(value))
            if replacement is not None and not isinstance(value, (int, str, type(None))):
                try:
                    space[key] = replacement
                except Exception:  # noqa: BLE001 - a read-only namespace: leave it
                    pass
