"""grader.parsing.parse survives threads that parse at once (CPython 3.11's gh-106905).

The race needs a thread switch in the middle of the AST-to-object conversion; a
finaliser running Python code (here ``__del__`` of cyclic garbage, in the grader the
finalisers of subprocesses, files and sockets) gives the interpreter one.  With plain
``ast.parse`` this workload raised ``SystemError: AST constructor recursion depth
mismatch`` on Python 3.11.7 in every run tried; through the lock it never may.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from grader.parsing import parse

ROOT = Path(__file__).resolve().parents[1]


class _CyclicWithFinaliser:
    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(0)


def parse_from_threads(parse_fn, threads: int = 4, rounds: int = 60) -> list[BaseException]:
    """Errors raised while ``threads`` threads each parse a large module ``rounds`` times."""
    source = "\n".join((ROOT / p).read_text() for p in ("solutions/fcos.py", "solutions/rpn.py", "grader/grade.py"))
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(rounds):
            for _ in range(50):
                _CyclicWithFinaliser()
            try:
                parse_fn(source)
            except SystemError as error:
                errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    return errors


def test_parse_is_safe_from_several_threads():
    assert parse_from_threads(parse) == []


def test_parse_returns_the_tree_and_raises_what_ast_parse_raises():
    tree = parse("def f(x):\n    return x\n", "cell.py")
    assert [node.name for node in tree.body] == ["f"]
    with pytest.raises(SyntaxError) as raised:
        parse("def f(:\n", "cell.py")
    assert raised.value.filename == "cell.py"
