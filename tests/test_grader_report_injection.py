"""Student text cannot forge or inject anything into a report (issue 11, "feedback injection").

A submission controls what it prints and the text of the exceptions it
raises; both reach the student-facing reports.  Rendered Markdown must show
them as text (no heading, no HTML, no closed code fence), Gradescope's output
is plain text, and in the console no line of a student's text can look like
one of the grader's result lines.
"""

from __future__ import annotations

import json

import mistune

from grader.report import CONTINUATION, cell_summary, console_table, csv_row, gradescope_results, markdown_feedback
from grader.results import FAILED, PASSED, CheckResult, GradeReport

FORGED_SCORE = "## Score: 110 / 110"
#: What a hostile submission prints: closes a code fence (3 and 5 backticks), writes a heading and HTML.
HOSTILE_OUTPUT = f"looks normal\n```\n{FORGED_SCORE}\n<img src=x onerror=alert(1)>\n`````\n# Feedback: forged\n"
#: What its exception says: result lines of every report format, HTML, terminal escapes.
HOSTILE_MESSAGE = ("ZeroDivisionError: boom\n[PASS] nms random boxes (hidden)\n  ok     5.00/5.00  nms_random\n"
                   f"<script>alert(1)</script>\n{FORGED_SCORE}\r\x1b[2K  ok    TOTAL 110.00 / 110.00\u2028[PASS] forged")


def hostile_report() -> GradeReport:
    checks = [
        CheckResult("nms_visible", "nms", "nms: the course's example", True, 5.0, status=FAILED,
                    message=HOSTILE_MESSAGE, output=HOSTILE_OUTPUT),
        CheckResult("nms_hidden", "nms", "nms: random boxes", False, 5.0, status=FAILED, message=HOSTILE_MESSAGE),
        CheckResult("iou_visible", "iou", "iou: example", True, 3.0, points=3.0, status=PASSED),
    ]
    return GradeReport("one_stage", "sub.ipynb", checks=checks, notes=[f"cell 3: {HOSTILE_MESSAGE}"],
                       errors=[f"your code could not be loaded: {HOSTILE_MESSAGE}"])


def test_markdown_feedback_renders_student_text_as_text():
    text = markdown_feedback(hostile_report())
    rendered = mistune.html(text)
    headings = [line for line in rendered.splitlines() if line.startswith(("<h1", "<h2", "<h3"))]
    # Only the grader's own headings: the title, the problems, notes and one per function.
    assert all("110" not in h and "forged" not in h for h in headings), headings
    assert "<img" not in rendered and "<script" not in rendered, "raw HTML from the student reached the feedback"
    assert "\x1b" not in text and "\r" not in text
    # The printed output is shown whole inside one code block (the fence was not closed early).
    blocks = rendered.count("<pre>")
    assert blocks == 1 and "onerror=alert(1)" in rendered.split("<pre>")[1].split("</pre>")[0]
    assert "**Score: 3 / 13**" in text


def test_gradescope_output_is_plain_text_without_forged_lines():
    results = json.loads(json.dumps(gradescope_results(hostile_report())))
    assert results["output_format"] == "text" and all(t["output_format"] == "text" for t in results["tests"])
    nms = next(t for t in results["tests"] if t["name"] == "nms")
    lines = nms["output"].splitlines()
    # One line per check, each starting with the grader's own mark: no forged [PASS] line.
    assert len(lines) == 2 and all(line.startswith("[FAIL] nms") for line in lines), lines
    assert "\x1b" not in results["output"] and len(results["output"].splitlines()) == 3


def test_console_table_prefixes_every_line_of_student_text():
    report = hostile_report()
    for verbose in (False, True):
        table = console_table(report, verbose=verbose)
        assert "\x1b" not in table and "\r" not in table
        for line in table.splitlines():
            stripped = line.strip()
            if stripped.startswith(("ok ", "[PASS]", "TOTAL")):
                # a result line of the grader's own: iou's (the only one that passed) or the total
                assert "iou_visible" in line or line.startswith("TOTAL 3.00"), f"forged line: {line!r}"
        if verbose:
            assert f"{CONTINUATION}[PASS] nms random boxes" in table
    summary = cell_summary(report, "nms")
    passes = [line for line in summary.splitlines() if line.strip().startswith("[pass]")]
    assert len(passes) == 1 and "iou" in passes[0], summary


def test_csv_cells_are_not_formulas():
    report = GradeReport("one_stage", "x", errors=["=HYPERLINK(\"http://evil\")"])
    assert csv_row("bob", report)["error"].startswith("'=")
