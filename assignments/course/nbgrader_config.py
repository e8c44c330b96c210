"""nbgrader configuration of the detection course (works out of the box).

Run every nbgrader command from this folder (``assignments/course``), e.g.::

    nbgrader generate_assignment one_stage --force
    nbgrader autograde one_stage
    nbgrader generate_feedback one_stage

Environment variables (all optional):

NBGRADER_DB_URL
    SQLAlchemy URL of the gradebook.  Default: ``sqlite:///<this folder>/gradebook.db``,
    fine for one grader.  Several graders at once: a server database, e.g.
    ``postgresql+psycopg://grader:secret@db.example.edu/detection_course``
    (install the driver, ``pip install "psycopg[binary]"``).
COURSE_CELL_TIMEOUT
    Seconds one notebook cell may run while validating/autograding (default 180;
    see below).

While nbgrader executes a notebook (validate, autograde) it sets
NBGRADER_EXECUTION; the notebooks then train with their smallest settings (a
few iterations on a few images), as with COURSE_SMALL=1: training is not
graded, only the test cells are.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the repository: makes `assignments` importable for the feedback filter
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Kernels nbgrader starts (validate) and the grader it runs (autograde) use
# this repository's grader and solutions, not whichever checkout an editable
# install in the environment points at.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                         if p and p != str(ROOT)])

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402  (sys.path and PYTHONPATH must name this repository first)
from nbgrader.preprocessors import (  # noqa: E402  (sys.path and PYTHONPATH must name this repository first)
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from assignments.autograde import GradeWithGrader, QuietOverwriteCells  # noqa: E402  (sys.path and PYTHONPATH must name this repository first)
from assignments.feedback import StripHiddenTests  # noqa: E402  (sys.path and PYTHONPATH must name this repository first)
from grader.markers import BEGIN_HIDDEN_WORDS, END_HIDDEN_WORDS  # noqa: E402  (sys.path and PYTHONPATH must name this repository first)

c = get_config()  # noqa: F821  (traitlets defines get_config when it loads this file)

c.CourseDirectory.root = str(HERE)
c.CourseDirectory.course_id = "detection-course"
c.CourseDirectory.db_url = os.environ.get("NBGRADER_DB_URL") or f"sqlite:///{HERE / 'gradebook.db'}"
c.CourseDirectory.assignment_id = ""
# Files of an assignment folder that are never released or collected.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*_submission.zip",
                             "*_checkpoint_*.pt"]  # training checkpoints: large, never graded

# Per-cell time limit while validating / autograding.  The longest cells are
# the hidden tests of the full detectors (a few seconds each on a 2-core CPU)
# and the training cells, which the notebooks shrink to a few iterations under
# nbgrader (it sets NBGRADER_EXECUTION, which the notebooks read).  A student
# notebook stuck in an infinite loop costs at most this much per cell.
c.Execute.timeout = int(os.environ.get("COURSE_CELL_TIMEOUT", "180"))
c.Execute.interrupt_on_timeout = True

# The student release: stubs in place of solutions, hidden tests removed,
# no outputs.  (These are nbgrader's defaults, stated here on purpose.)
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.enforce_metadata = True
c.ClearHiddenTests.enforce_metadata = True
c.ClearHiddenTests.begin_test_delimeter = BEGIN_HIDDEN_WORDS  # one definition: grader/markers.py
c.ClearHiddenTests.end_test_delimeter = END_HIDDEN_WORDS
c.GenerateAssignment.create_assignment = True

# Autograde: the points come from `python -m grader grade`, run on the
# submitted notebook in a separate process (the student's code runs only in
# the grader's sandbox), never from executing the notebook in a kernel the
# student's code could patch (assignments/autograde.py).  The same command
# grades the CLI, `grader batch` and Gradescope paths: one score per notebook.
# QuietOverwriteCells restores locked cells like nbgrader's OverwriteCells but
# does not warn about the hidden-test regions every release lacks.
c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, QuietOverwriteCells,
                                      CheckCellMetadata]
c.Autograde.autograde_preprocessors = [GradeWithGrader, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
# More options for the grader, e.g. COURSE_GRADER_ARGS="--sandbox bwrap --voc-root /data/VOCdevkit".
c.GradeWithGrader.extra_args = os.environ.get("COURSE_GRADER_ARGS", "").split()
c.GradeWithGrader.timeout = float(os.environ.get("COURSE_GRADE_TIMEOUT", "3600"))

# Feedback: nbgrader's HTML shows hidden tests and their tracebacks by
# default; StripHiddenTests removes both (see assignments/feedback.py).
c.GenerateFeedback.preprocessors = [GetGrades, StripHiddenTests, CSSHTMLHeaderPreprocessor]

# A release needs the student package next to each notebook; git ignores the
# wheel, so generating an assignment builds it (or stops, naming the command).
if any(arg in ("generate_assignment", "assign") for arg in sys.argv[1:]):
    from assignments.build import ensure_release_files_or_exit

    ensure_release_files_or_exit(HERE / "source")
