"""Reports of a grading run: console table, JSON, Markdown feedback, Gradescope
``results.json``, batch CSV.

Student-facing outputs (Markdown, Gradescope, the notebook summary) show for
each check its title, result, points and message.  Messages never contain
hidden inputs or reference outputs (see :mod:`grader.compare`); what a hidden
check's run printed (which could echo its inputs) stays in ``detail``, which
only the JSON report (for staff) contains.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from grader.functions import STUDENT_FUNCTIONS
from grader.results import PASSED, SKIPPED, CheckResult, GradeReport

ICONS = {"passed": "ok", "failed": "FAIL", "error": "ERROR", "timeout": "TIME", "skipped": "skip"}


def _first_line(text: str, limit: int = 140) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _groups(report: GradeReport) -> list[tuple[str, list[CheckResult]]]:
    order = STUDENT_FUNCTIONS.get(report.assignment, []) + ["overfit", "map"]
    groups = report.by_function()
    return sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


def console_table(report: GradeReport, verbose: bool = False) -> str:
    out = io.StringIO()
    out.write(f"{report.assignment}: {report.submission}\n")
    if report.sandbox:
        out.write(f"sandbox: {report.sandbox}\n")
    for note in report.notes:
        out.write(f"note: {note}\n")
    for error in report.errors:
        out.write(f"error: {_first_line(error, 300)}\n")
    width = max([len(c.id) for c in report.checks] + [20])
    for function, checks in _groups(report):
        earned, available = sum(c.points for c in checks), sum(c.max_points for c in checks)
        out.write(f"\n{function:<{width}}  {earned:6.2f} / {available:6.2f}\n")
        for c in checks:
            tag = "" if c.visible else " (hidden)"
            out.write(f"  {ICONS.get(c.status, c.status):<5} {c.points:5.2f}/{c.max_points:<5.2f} {c.id:<{width}}{tag}")
            message = c.message if verbose else _first_line(c.message)
            if message and c.status != PASSED or (verbose and message):
                out.write(f"  {message}")
            out.write("\n")
    out.write(f"\nTOTAL {report.score:.2f} / {report.max_score:.2f}   ({report.seconds:.1f} s)\n")
    return out.getvalue()


def cell_summary(report: GradeReport, name: str) -> str:
    """What a graded notebook cell prints (hidden checks by title only)."""
    lines = []
    for c in report.checks:
        kind = "visible" if c.visible else "hidden"
        line = f"  [{'pass' if c.passed else ('skip' if c.status == SKIPPED else 'FAIL')}] ({kind}) {c.title}"
        if not c.passed and c.message:
            line += f": {_first_line(c.message, 300)}"
        lines.append(line)
    for error in report.errors:
        lines.append(f"  error: {_first_line(error, 300)}")
    lines.append(f"{name}: {report.score:g} / {report.max_score:g} points")
    return "\n".join(lines)


def markdown_feedback(report: GradeReport) -> str:
    """Feedback for the student (no hidden inputs, no reference outputs, no hidden-check output)."""
    out = io.StringIO()
    out.write(f"# Feedback: {report.assignment}\n\n**Score: {report.score:g} / {report.max_score:g}**\n\n")
    if report.errors:
        out.write("## Problems with the submission\n\n")
        for error in report.errors:
            out.write(f"- {_md(error)}\n")
        out.write("\n")
    if report.notes:
        out.write("## Notes\n\n")
        for note in report.notes:
            out.write(f"- {_md(note)}\n")
        out.write("\n")
    for function, checks in _groups(report):
        earned, available = sum(c.points for c in checks), sum(c.max_points for c in checks)
        out.write(f"## `{function}`: {earned:g} / {available:g}\n\n| check | result | points | details |\n|---|---|---|---|\n")
        for c in checks:
            title = c.title + ("" if c.visible else " *(hidden)*")
            out.write(f"| {_md(title)} | {c.status} | {c.points:g} / {c.max_points:g} | {_md(c.message)} |\n")
        shown = [c for c in checks if c.visible and c.output.strip() and not c.passed]
        for c in shown:
            out.write(f"\nOutput of *{_md(c.title)}* (first lines):\n\n```\n{c.output.strip()[:1500]}\n```\n")
        out.write("\n")
    out.write("Hidden checks compare your code with the reference on further inputs (other sizes, dtypes, edge cases); "
              "their messages say what differs without showing the inputs.\n")
    return out.getvalue()


def _md(text: str) -> str:
    text = (text or "").replace("|", "\\|").replace("\r", "")
    return "<br>".join(line for line in text.splitlines()[:8])


def gradescope_results(report: GradeReport) -> dict:
    """Gradescope's ``results.json``: one test per function (plus overfit / mAP)."""
    tests = []
    for function, checks in _groups(report):
        earned, available = sum(c.points for c in checks), sum(c.max_points for c in checks)
        lines = []
        for c in checks:
            mark = {"passed": "PASS", "skipped": "SKIP"}.get(c.status, "FAIL")
            line = f"[{mark}] {c.title}{'' if c.visible else ' (hidden)'}"
            if c.status != PASSED and c.message:
                line += f": {_first_line(c.message, 400)}"
            lines.append(line)
        skipped = all(c.status == SKIPPED for c in checks)
        test = {
            "name": function,
            "score": round(earned, 4),
            "max_score": round(available, 4),
            "status": "passed" if earned >= available - 1e-9 else "failed",
            "output": "\n".join(lines),
            "visibility": "visible",
        }
        if skipped:
            # Skipped is not passed: no status (Gradescope shows neither a pass nor a fail), the reason first.
            del test["status"]
            test["name"] = f"{function} (skipped)"
            test["output"] = "SKIPPED (not counted): " + "\n".join(_first_line(c.message, 400) for c in checks)
        tests.append(test)
    summary = [f"Score {report.score:g} / {report.max_score:g}."]
    summary += [f"Problem: {_first_line(e, 400)}" for e in report.errors]
    summary += [f"Note: {_first_line(n, 400)}" for n in report.notes]
    return {
        "score": report.score,
        "output": "\n".join(summary),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


CSV_BASE = ["student", "assignment", "score", "max_score", "status", "seconds", "error"]


def csv_text(rows: Iterable[dict], assignment: str | None = None) -> str:
    rows = list(rows)
    functions = list(STUDENT_FUNCTIONS.get(assignment, [])) + ["overfit", "map"] if assignment else []
    extra = sorted({k for r in rows for k in r if k not in CSV_BASE and k not in functions})
    columns = CSV_BASE + functions + extra
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in columns})
    return buffer.getvalue()


def csv_row(student: str, report: GradeReport) -> dict:
    row = {"student": student, "assignment": report.assignment, "score": report.score, "max_score": report.max_score,
           "status": "graded" if not report.errors else "graded with problems", "seconds": report.seconds,
           "error": _first_line(report.errors[0], 200) if report.errors else ""}
    for function, checks in report.by_function().items():
        # A gate that could not run reads "skipped", never a 0 that looks like a failure.
        row[function] = "skipped" if all(c.status == SKIPPED for c in checks) else round(sum(c.points for c in checks), 4)
    return row
