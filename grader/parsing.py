"""``ast.parse`` that is safe to call from several threads at once.

CPython 3.11 keeps the recursion counter of its AST-to-Python-object conversion in
interpreter-wide state (cpython gh-106905).  Two threads parsing at the same time can
corrupt it, and ``ast.parse`` then raises ``SystemError: AST constructor recursion depth
mismatch`` on perfectly good source.  ``grader batch --jobs N`` and the course self-test
parse submissions and reference modules on worker threads, so every parse in the
project's own packages goes through :func:`parse`, which serialises them.  A parse takes
milliseconds; the lock costs nothing measurable.
"""

from __future__ import annotations

import ast
import threading

# Re-entrant: a parse triggered from a finaliser on the thread already holding the lock
# (the garbage collector can run one mid-parse) must not deadlock.
_LOCK = threading.RLock()


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source, filename)``, one thread at a time; raises what ``ast.parse`` raises."""
    with _LOCK:
        return ast.parse(source, filename=filename)
