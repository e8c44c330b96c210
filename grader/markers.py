"""The nbgrader delimiters of the course's notebooks, defined once.

nbgrader's ``ClearHiddenTests`` finds a hidden-test region by the delimiter
words on a line (its ``begin_test_delimeter`` / ``end_test_delimeter``,
set from :data:`BEGIN_HIDDEN_WORDS` / :data:`END_HIDDEN_WORDS` in
``assignments/course/nbgrader_config.py``); the notebooks write them as
comments, :data:`BEGIN_HIDDEN_TESTS` and :data:`END_HIDDEN_TESTS`.  The
builder writes them, the grader and the feedback filter find them, the
self-test looks for leaks of them: all through these names.
"""

from __future__ import annotations

import re

__all__ = ["BEGIN_HIDDEN_WORDS", "END_HIDDEN_WORDS", "BEGIN_HIDDEN_TESTS", "END_HIDDEN_TESTS", "HIDDEN_REGION",
           "strip_hidden_tests"]

#: nbgrader's own default words (stated, so that a change here changes nbgrader's too).
BEGIN_HIDDEN_WORDS = "BEGIN HIDDEN TESTS"
END_HIDDEN_WORDS = "END HIDDEN TESTS"
#: The lines the notebooks hold.
BEGIN_HIDDEN_TESTS = f"### {BEGIN_HIDDEN_WORDS}"
END_HIDDEN_TESTS = f"### {END_HIDDEN_WORDS}"
#: A hidden region, delimiters included; group 1 is what lies between them.
HIDDEN_REGION = re.compile(re.escape(BEGIN_HIDDEN_TESTS) + r"(.*?)" + re.escape(END_HIDDEN_TESTS), flags=re.S)


def strip_hidden_tests(source: str) -> str:
    """``source`` without its hidden-test regions (delimiters included)."""
    return HIDDEN_REGION.sub("", source)
