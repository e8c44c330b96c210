"""Running one check's jobs in the sandbox: the submission's code with the
reference answering the other functions (the oracle) and the harness supplying
classes the submission lacks.  Shared by the checks (:mod:`grader.grade`), the
overfit test (:mod:`grader.overfit`) and the mAP gate (:mod:`grader.map_gate`).
"""

from __future__ import annotations

from collections.abc import Sequence

from grader import checks as checks_module
from grader.forbidden import forbidden_names
from grader.functions import CLASSES, DEPENDENCIES
from grader.sandbox import Outcome, Sandbox
from grader.submission_text import relabel_lines


def oracle_and_given(assignment: str, function: str | None, isolate: bool, defined: set[str]) -> tuple[list[str], list[str]]:
    """Names answered by the reference while checking ``function``, and classes the harness supplies."""
    missing_deps = [n for n in DEPENDENCIES[assignment] if n not in defined]
    if isolate and function is not None:
        oracle = checks_module.oracle_names(assignment, function)
    else:
        oracle = [n for n in missing_deps if n not in CLASSES]
    given = [n for n in missing_deps if n in CLASSES]
    return oracle, given


def run_jobs(sandbox: Sandbox, source: str, assignment: str, function: str | None, specs: Sequence[dict], *,
             isolate: bool, defined: set[str], limits: dict) -> tuple[list | None, Outcome | None, str]:
    """Run specs in order; returns (values, failing outcome, captured output)."""
    oracle, given = oracle_and_given(assignment, function, isolate, defined)
    forbidden = forbidden_names(assignment, function) if function else ()
    values, output = [], []
    for spec in specs:
        if forbidden:  # the child makes them raise while this function runs (grader/forbidden.py)
            spec = {**spec, "forbidden": {"function": function, "names": list(forbidden)}}
        outcome = sandbox.run(source, spec, limits=limits, oracle=oracle, oracle_handler=checks_module.oracle_handler,
                              given_classes=given)
        if outcome.stdout:
            output.append(outcome.stdout)
        if outcome.blocked_imports:
            outcome.status, outcome.error_type = "error", "ImportError"
            outcome.error = f"your code tried to import {', '.join(sorted(set(outcome.blocked_imports)))}: not allowed"
            outcome.traceback = ""
            return None, outcome, "".join(output)
        if not outcome.ok:
            outcome.traceback = relabel_lines(outcome.traceback or "", source)
            outcome.error = relabel_lines(outcome.error or "", source) if outcome.error_type == "SyntaxError" else outcome.error
            return None, outcome, "".join(output)
        values.append(outcome.value)
    return values, None, "".join(output)
