"""Feedback that never shows hidden tests.

nbgrader's ``generate_feedback`` renders the *autograded* notebook, in which
the hidden test regions were put back and executed: by default the HTML shows
their source, and a failing hidden test shows its traceback (with the test's
code and values in it).  :class:`StripHiddenTests` runs before the HTML export
and, in every grade cell that holds a hidden test region,

* replaces the region with one comment line,
* drops every error output and, if there was one, adds a short message with
  the cell's score instead (no exception text, no traceback),
* drops everything the hidden tests printed: outputs from the line
  ``[hidden tests]`` (printed first thing in the hidden region) on; the
  visible sanity check's printout is kept.

Scores are untouched (they are read from the gradebook, not from the cell).
Enable it in ``nbgrader_config.py``::

    c.GenerateFeedback.preprocessors = [GetGrades, StripHiddenTests, CSSHTMLHeaderPreprocessor]
"""

from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Unicode

from grader import markers

#: A hidden region with the blanks around it on its lines.
HIDDEN_REGION = re.compile(r"[ \t]*" + markers.HIDDEN_REGION.pattern + r"[ \t]*", flags=re.S)
#: Printed by the hidden-test helpers before they run (see grader.notebook);
#: outputs from that point on are dropped.
HIDDEN_OUTPUT_MARKER = "[hidden tests]"


def has_hidden_tests(source: str) -> bool:
    return markers.BEGIN_HIDDEN_WORDS in source


class StripHiddenTests(Preprocessor):
    """Remove hidden test sources and their tracebacks from grade cells (see module docstring)."""

    #: nbconvert only runs preprocessors that are enabled (nbgrader registers them as classes).
    enabled = Bool(True).tag(config=True)

    replacement = Unicode("# (hidden tests were run here when your notebook was graded)").tag(config=True)
    failure_message = Unicode(
        "This cell's tests failed. The visible check above shows what it could check; "
        "the hidden tests compare your code with the reference on further inputs. "
        "Score for this cell: {score} / {max_score}."
    ).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not has_hidden_tests(cell.source):
            return cell, resources
        cell.source = HIDDEN_REGION.sub(self.replacement, cell.source)
        outputs = cell.get("outputs", [])
        failed = any(output.output_type == "error" for output in outputs)
        kept = []
        for output in outputs:
            if output.output_type == "error":
                continue  # replaced by one message below: no exception text, no traceback
            if output.output_type == "stream" and HIDDEN_OUTPUT_MARKER in output.get("text", ""):
                before = output.text.split(HIDDEN_OUTPUT_MARKER, 1)[0]
                if before.strip():
                    output.text = before
                    kept.append(output)
                break  # everything from the marker on was printed by the hidden tests
            kept.append(output)
        if failed:
            grade = cell.metadata.get("nbgrader", {})
            kept.append(_node({
                "output_type": "stream", "name": "stderr",
                "text": self.failure_message.format(score=grade.get("score", 0),
                                                    max_score=grade.get("points", "?")) + "\n",
            }))
        cell.outputs = kept
        return cell, resources


def _node(output: dict):
    from nbformat import NotebookNode, from_dict

    node = from_dict(output)
    return node if isinstance(node, NotebookNode) else NotebookNode(output)
