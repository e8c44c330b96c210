"""Grading one submission: every check of every function, the overfit test, the mAP gate.

The submission's code only ever runs in the sandbox (:mod:`grader.sandbox`);
this module prepares inputs and reference outputs, sends jobs, and judges
the returned data.  Scoring rules:

* a check earns its rubric points when its verdict passes (some checks give a
  fraction, e.g. the overfit test), nothing otherwise;
* a function's minor checks (visible cases, edge cases, shapes, dtypes,
  no-mutation) count only when its main value checks pass
  (``[<assignment>.gates]`` in the rubric, :mod:`grader.gates`);
* hidden checks' messages say what is wrong, never by how much (no relative
  errors or sizes derived from the reference's outputs);
* a function that is missing, or whose definition does not parse, fails
  each of its checks with that reason, without running anything;
* after a time-out, the function's remaining checks are not run (they fail
  with a note) so an infinite loop costs one time limit, not ten;
* a check during which the code tried to import ``solutions`` or ``grader``
  fails whatever it returned;
* a function that uses a library function its notebook forbids there
  (``torchvision.ops.nms`` in ``nms``, :mod:`grader.forbidden`) fails each of
  its checks with that reason (and the sandbox makes those calls raise);
* checks that need something the machine lacks (CUDA, the VOC data, a GPU
  for retraining) are *skipped*: reported with the reason, worth 0 of 0
  points (never silently passed, never counted against the student).
"""

from __future__ import annotations

import ast
import os
import time
import traceback
from collections.abc import Callable, Sequence

import torch

from grader import checks as checks_module
from grader import suites
from grader.compare import Verdict, hidden_feedback, redact_hidden
from grader.errors import EXIT_CANNOT_GRADE, GraderInfrastructureError  # noqa: F401  (re-exported for the CLI, batch, tests)
from grader.forbidden import forbidden_message
from grader.forbidden import forbidden_uses as find_forbidden
from grader.functions import DEPENDENCIES, STUDENT_FUNCTIONS, check_assignment
from grader.gates import apply_gates
from grader.jobs import oracle_and_given, run_jobs
from grader.parsing import parse as parse_python
from grader.results import ERROR, FAILED, PASSED, SKIPPED, TIMEOUT, CheckResult, GradeReport
from grader.rubric import limits_for, load_rubric, split_points
from grader.sandbox import Outcome, Sandbox
from grader.submission_text import defined_names, relabel_lines

Progress = Callable[[CheckResult], None]

#: Runs in a fresh sandbox child before any student code: if this fails, the
#: sandbox itself is broken (torch missing inside it, bubblewrap failing, ...).
CANARY_SOURCE = "import torch\n_canary = float((torch.arange(4.0) * 2).sum())\nassert _canary == 12.0, _canary\n"


def check_sandbox_works(sandbox: Sandbox) -> None:
    """Run the grader's own probe in the sandbox; raise :class:`GraderInfrastructureError` if it fails.

    Without this, a broken sandbox makes every check of every student fail
    "with an error" and a whole class would be recorded with zeros.
    """
    from grader.sandbox import SandboxError

    try:
        outcome = sandbox.run(CANARY_SOURCE, {"op": "load"}, limits={"wall_seconds": 120.0})
    except SandboxError as error:
        raise GraderInfrastructureError(f"the grader's sandbox ({sandbox.mode}) does not start: {error}") from error
    if not outcome.ok:
        raise GraderInfrastructureError(
            f"the grader's sandbox ({sandbox.mode}) cannot run the grader's own probe (import torch, add numbers): "
            f"{outcome.describe()}. Fix the installation (e.g. `python -m grader sandbox-info`) before grading.")


def _is_stub_body(body: list[ast.stmt]) -> bool:
    """A body that always ends in the release's ``raise NotImplementedError`` (no ``return`` before it)."""
    for node in body:
        if isinstance(node, ast.Return):
            return False
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id == "NotImplementedError":
                return True
    return False


def stub_names(source: str, names: Sequence[str]) -> list[str]:
    """Which of ``names`` are still the release's stubs in ``source`` (the last definition counts).

    A function is a stub when its body reaches nbgrader's ``raise
    NotImplementedError()`` unconditionally; a class when one of its methods is.
    """
    try:
        tree = parse_python(source)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return []
    last: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names:
            last[node.name] = node
    stubs = []
    for name, node in last.items():
        if isinstance(node, ast.ClassDef):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
            if any(_is_stub_body(m.body) for m in methods):
                stubs.append(name)
        elif _is_stub_body(node.body):
            stubs.append(name)
    return sorted(stubs, key=list(names).index)


def _is_fatal(outcome: Outcome) -> bool:
    """Failures that would repeat in every check of the function (and cost a limit each time)."""
    if outcome.status in ("timeout", "output_limit"):
        return True
    if outcome.status == "crashed" and (outcome.error == "the sandbox process died" or outcome.signal is not None):
        return True
    text = f"{outcome.error_type} {outcome.error}"
    return "MemoryError" in text or "can't allocate memory" in text


def _status_of(outcome: Outcome) -> str:
    return TIMEOUT if outcome.status == "timeout" else ERROR


def grade_source(
    source: str,
    assignment: str,
    *,
    functions: Sequence[str] | None = None,
    include_overfit: bool = True,
    include_map: bool = True,
    only_overfit: bool = False,
    sandbox: Sandbox | None = None,
    sandbox_mode: str | None = None,
    notes: Sequence[str] = (),
    defined: set[str] | None = None,
    broken: dict[str, str] | None = None,
    submission: str = "<source>",
    weights: str | os.PathLike | None = None,
    voc_root: str | os.PathLike | None = None,
    retrain: bool = False,
    device: str | None = None,
    retrain_iters: int | None = None,
    rubric: dict | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    unreadable: str | None = None,
) -> GradeReport:
    """Grade ``source`` (the submission's code) for ``assignment``; see the module docstring."""
    check_assignment(assignment)
    started = time.monotonic()
    rubric = rubric or load_rubric()
    defined = set(defined) if defined is not None else defined_names(source)
    broken = dict(broken or {})
    report = GradeReport(assignment, submission, notes=list(notes))
    # Code reused from the other assignment is not graded here: a reused
    # function still left as the release's stub is replaced by the reference's,
    # so that it costs points only where it is graded (its own assignment).
    for name in stub_names(source, [n for n in DEPENDENCIES[assignment] if n in defined]):
        defined.discard(name)
        report.notes.append(f"`{name}` is still the release's stub; it is graded in the other assignment, "
                            "so the reference's is used here")
    if unreadable is not None:
        # Nothing to run: every check fails with the reason, without starting a sandbox.
        report.errors.append(unreadable)
        failure = Outcome("error", error_type="SubmissionError", error=unreadable)
        _grade_functions(report, None, "", assignment, list(functions or STUDENT_FUNCTIONS[assignment]), set(), {}, rubric,
                         failure, progress)
        if include_overfit:
            from grader.overfit import overfit_results

            report.checks += overfit_results(None, "", assignment, rubric, defined=set(), load_failure=failure, threads=1)
        if include_map and not only_overfit:
            from grader.map_gate import map_results

            report.checks += map_results(None, "", assignment, rubric, weights=weights, voc_root=voc_root, retrain=retrain,
                                         defined=set(), load_failure=failure, threads=1)
        report.seconds = round(time.monotonic() - started, 2)
        return report
    own_sandbox = sandbox is None
    threads = threads or int(os.environ.get("GRADER_THREADS", "0")) or min(2, os.cpu_count() or 1)
    if own_sandbox:
        from grader.sandbox import SandboxError

        try:
            sandbox = Sandbox(sandbox_mode, threads=1, limits=limits_for(rubric))
            sandbox.start()  # boots while the references are prepared
        except SandboxError as error:
            raise GraderInfrastructureError(f"the grader's sandbox cannot be set up: {error}") from error
    report.sandbox = f"{sandbox.mode}: {sandbox.mode_note}"
    wanted = list(functions) if functions is not None else list(STUDENT_FUNCTIONS[assignment])
    try:
        check_sandbox_works(sandbox)
        load_failure = None
        if not only_overfit or include_overfit:
            probe = sandbox.run(source, {"op": "load"}, limits={"wall_seconds": float(limits_for(rubric).get("load_seconds", 60))})
            if not probe.ok:
                load_failure = probe
                report.errors.append("your code could not be loaded: " + relabel_lines(probe.describe(), source))
            else:
                # What the child returns is untrusted: only strings, few and short.
                value = probe.value if isinstance(probe.value, dict) else {}
                warnings = value.get("warnings") if isinstance(value.get("warnings"), list) else []
                for warning in warnings[:50]:
                    if isinstance(warning, str):
                        report.notes.append(relabel_lines(warning[:500], source))
        if not only_overfit:
            _grade_functions(report, sandbox, source, assignment, wanted, defined, broken, rubric, load_failure, progress)
        if include_overfit:
            from grader.overfit import failed_functions, overfit_results

            for result in overfit_results(sandbox, source, assignment, rubric, defined=defined, load_failure=load_failure,
                                          threads=threads, failed=failed_functions(report.checks)):
                report.checks.append(result)
                if progress:
                    progress(result)
        if include_map and not only_overfit:
            from grader.map_gate import map_results

            for result in map_results(sandbox, source, assignment, rubric, weights=weights, voc_root=voc_root,
                                      retrain=retrain, defined=defined, load_failure=load_failure, threads=threads,
                                      device=device, retrain_iters=retrain_iters, submission=submission):
                report.checks.append(result)
                if progress:
                    progress(result)
    finally:
        if own_sandbox:
            sandbox.close()
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _grade_functions(report: GradeReport, sandbox: Sandbox, source: str, assignment: str, wanted: list[str],
                     defined: set[str], broken: dict[str, str], rubric: dict, load_failure: Outcome | None,
                     progress: Progress | None) -> None:
    cuda = torch.cuda.is_available() and (sandbox is None or sandbox.cuda)
    base_limits = limits_for(rubric)
    timed_out: set[str] = set()
    selected = [c for c in suites.registry(assignment) if c.function in wanted]
    skipped = {c.id for c in selected if c.cuda and not cuda}
    points = split_points(rubric, assignment, selected, skipped)
    pending: list[CheckResult] = []  # one function's results, released once its gates are applied
    uses: dict[str, list[str]] = {}

    def forbidden_uses(check) -> list[str]:
        """Library functions the notebook forbids that the submission's ``check.function`` uses (read, not run)."""
        if check.function not in uses:
            answered = oracle_and_given(assignment, check.function, check.isolate, defined)[0]
            uses[check.function] = find_forbidden(source, assignment, check.function, answered)
        return uses[check.function]

    def release() -> None:
        apply_gates(rubric, assignment, pending)
        for done in pending:
            report.checks.append(done)
            if progress:
                progress(done)
        pending.clear()

    for check in selected:
        if pending and pending[-1].function != check.function:
            release()
        result = CheckResult(check.id, check.function, check.title, check.visible, points[check.id])
        t0 = time.monotonic()
        if check.id in skipped:
            result.status, result.max_points = SKIPPED, 0.0
            result.message = "skipped: no CUDA device on the grading machine (this check runs only where one is present)"
        elif load_failure is not None:
            result.status = _status_of(load_failure)
            if load_failure.error_type == "SubmissionError":
                result.message = f"not graded: {load_failure.error}"
            else:
                result.message = "not run: your code could not be loaded (" + load_failure.describe().splitlines()[0] + ")"
        elif check.function not in defined:
            result.status = FAILED
            result.message = f"`{check.function}` is not defined" + (f": {broken[check.function]}" if check.function in broken else
                                                                    " in your submission")
        elif forbidden_uses(check):
            result.status = FAILED
            result.message = forbidden_message(assignment, check.function, forbidden_uses(check))
        elif check.function in timed_out:
            result.status = TIMEOUT
            result.message = ("not run: an earlier check of this function hit a limit (time, memory, output) "
                              "or killed the sandbox")
        else:
            try:
                job = checks_module.cached_job(assignment, check)
            except Exception as error:  # noqa: BLE001 - a grader bug must not cost the student points
                result.status, result.max_points = ERROR, 0.0
                result.message = "internal grader error (not counted): please tell the course staff"
                result.detail = traceback.format_exc()
                report.errors.append(f"{check.id}: grader error {type(error).__name__}: {error}")
            else:
                limits = dict(base_limits)
                limits.update(check.limits)
                if job.wall_seconds:
                    limits["wall_seconds"] = job.wall_seconds
                values, failure, output = run_jobs(sandbox, source, assignment, check.function, job.specs,
                                                   isolate=check.isolate, defined=defined, limits=limits)
                if check.visible:
                    result.output = output[-4000:]
                else:
                    result.detail = output[-4000:]
                if failure is not None:
                    result.status = _status_of(failure)
                    result.message = failure.describe()
                    explained = job.explain(result.message) if job.explain and failure.status == "error" else None
                    if explained:
                        result.message = f"{explained} ({result.message.splitlines()[0][:200]})"
                    if _is_fatal(failure):
                        timed_out.add(check.function)
                else:
                    try:
                        # Hidden checks say what is wrong, never by how much (see grader.compare.hidden_feedback).
                        with hidden_feedback(not check.visible):
                            verdict = job.judge(values)
                    except Exception as error:  # noqa: BLE001 - odd outputs must not crash the grader
                        verdict = Verdict(False, f"unexpected output structure ({type(error).__name__}: {str(error)[:200]})")
                    if not check.visible:
                        verdict.message = redact_hidden(verdict.message)
                    if verdict.passed:
                        result.status, result.points = PASSED, result.max_points
                    else:
                        result.status = FAILED
                        if verdict.fraction:
                            result.points = round(result.max_points * max(0.0, min(1.0, verdict.fraction)), 4)
                    result.message = verdict.message
        result.seconds = round(time.monotonic() - t0, 3)
        pending.append(result)
    release()
