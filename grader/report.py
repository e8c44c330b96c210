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
import html
import io
import re
from collections.abc import Iterable

from grader.functions import STUDENT_FUNCTIONS
from grader.results import PASSED, SKIPPED, CheckResult, GradeReport

ICONS = {"passed": "ok", "failed": "FAIL", "error": "ERROR", "timeout": "TIME", "skipped": "skip"}


#: Characters a student's text may not carry into a report: control characters (ANSI
#: escapes, carriage returns that overwrite a line), bidirectional overrides (text shown
#: in another order than it reads).
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: Everything ``str.splitlines`` splits on, besides ``\n``.
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def clean_text(text: str | None) -> str:
    """Student-influenced text made inert for every report: one kind of line break
    (``\n``), no control characters (shown as ``?``)."""
    return _CONTROL.sub("?", _LINE_BREAKS.sub("\n", text or ""))


def _first_line(text: str, limit: int = 140) -> str:
    text = clean_text(text).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: Prefix of every continuation line of a message in plain-text reports: a student's
#: exception text cannot start a line that looks like one of the grader's result lines.
CONTINUATION = "      | "


def _indented(text: str, limit_lines: int = 40) -> str:
    lines = clean_text(text).strip().splitlines()[:limit_lines]
    return ("\n" + CONTINUATION).join(lines)


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
        out.write(f"note: {_indented(note, 5)}\n")
    for error in report.errors:
        out.write(f"error: {_first_line(error, 300)}\n")
    width = max([len(c.id) for c in report.checks] + [20])
    for function, checks in _groups(report):
        earned, available = sum(c.points for c in checks), sum(c.max_points for c in checks)
        out.write(f"\n{function:<{width}}  {earned:6.2f} / {available:6.2f}\n")
        for c in checks:
            tag = "" if c.visible else " (hidden)"
            out.write(f"  {ICONS.get(c.status, c.status):<5} {c.points:5.2f}/{c.max_points:<5.2f} {c.id:<{width}}{tag}")
            message = _indented(c.message) if verbose else _first_line(c.message)
            if message and c.status != PASSED or (verbose and message):
                out.write(f"  {message}")
            out.write("\n")
    out.write(f"\nTOTAL {report.score:.2f} / {report.max_score:.2f}   ({report.seconds:.1f} s)\n")
    return out.getvalue()


def cell_summary(report: GradeReport, name: str, *, checks: list[CheckResult] | None = None,
                 footer: str = "", max_errors: int | None = None) -> str:
    """What a graded notebook cell prints: one line per check (hidden ones by title only), the
    submission's problems, then the points.  ``checks`` narrows the lines to one function's
    checks (nbgrader's grade cells; the points are then theirs); ``footer`` follows the points.
    Every student-derived line goes through :func:`clean_text` (no escape sequences)."""
    shown = report.checks if checks is None else checks
    lines = []
    for c in shown:
        kind = "visible" if c.visible else "hidden"
        line = f"  [{'pass' if c.passed else ('skip' if c.status == SKIPPED else 'FAIL')}] ({kind}) {c.title}"
        if not c.passed and c.message:
            line += f": {_first_line(c.message, 300)}"
        lines.append(line)
    if not shown:
        lines.append("  (the grader ran no check of this function)")
    for error in report.errors[:max_errors]:
        lines.append(f"  problem with the submission: {_first_line(error, 300)}")
    earned = sum(c.points for c in shown) if checks is not None else report.score
    available = sum(c.max_points for c in shown) if checks is not None else report.max_score
    lines.append(f"{name}: {earned:g} / {available:g} points{footer}")
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
            title = _md(c.title) + ("" if c.visible else " *(hidden)*")
            out.write(f"| {title} | {c.status} | {c.points:g} / {c.max_points:g} | {_md(c.message)} |\n")
        shown = [c for c in checks if c.visible and c.output.strip() and not c.passed]
        for c in shown:
            out.write(f"\nOutput of *{_md(c.title)}* (first lines):\n\n{_md_code_block(c.output.strip()[:1500])}\n")
        out.write("\n")
    out.write("Hidden checks compare your code with the reference on further inputs (other sizes, dtypes, edge cases); "
              "their messages say what differs without showing the inputs.\n")
    return out.getvalue()


def _md(text: str) -> str:
    """Text for one Markdown table cell or list item: HTML-escaped (no raw HTML), Markdown
    punctuation that could start a heading, a link, a fence or emphasis escaped, lines
    joined with ``<br>`` (so no line of it starts a block of its own)."""
    lines = clean_text(text).splitlines()[:8]
    out = []
    for line in lines:
        line = html.escape(line, quote=False)
        line = re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", line)
        out.append(line)
    return "<br>".join(out)


def _md_code_block(text: str) -> str:
    """``text`` verbatim in a fenced code block whose fence is longer than any run of
    backticks inside it, so that the text cannot close it (nor write headings or HTML)."""
    text = clean_text(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}\n"


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
            "output_format": "text",
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
        "output_format": "text",  # shown as plain text: no HTML or Markdown from a student's message
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


def _csv_safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def csv_row(student: str, report: GradeReport) -> dict:
    row = {"student": student, "assignment": report.assignment, "score": report.score, "max_score": report.max_score,
           "status": "graded" if not report.errors else "graded with problems", "seconds": report.seconds,
           "error": _csv_safe(_first_line(report.errors[0], 200)) if report.errors else ""}
    for function, checks in report.by_function().items():
        # A gate that could not run reads "skipped", never a 0 that looks like a failure.
        row[function] = "skipped" if all(c.status == SKIPPED for c in checks) else round(sum(c.points for c in checks), 4)
    return row
