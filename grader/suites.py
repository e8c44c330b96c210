"""Every check of an assignment, in grading order: the visible sanity cases
first, then the hidden ones, function by function.

The suites register themselves in :data:`grader.registry.CHECK_SUITES` when
their modules are imported; this module imports them (:data:`SUITE_MODULES`),
so nothing below it needs to know where a check is defined.
"""

from __future__ import annotations

from grader import checks_one_stage, checks_two_stage, sanity
from grader.checks import Check
from grader.functions import STUDENT_FUNCTIONS, check_assignment
from grader.registry import CHECK_SUITES

#: The modules whose import registers the check suites.
SUITE_MODULES = (sanity, checks_one_stage, checks_two_stage)
#: The parts of an assignment's checks, in the order they are listed (per function).
PARTS = ("visible", "hidden")


def registry(assignment: str) -> list[Check]:
    """Every check of ``assignment``: per function (in the notebook's order), its visible sanity
    cases first, then its hidden checks.  Check ids are unique (a RuntimeError names duplicates)."""
    check_assignment(assignment)
    checks = [check for part in PARTS for check in CHECK_SUITES.get(f"{assignment}/{part}")()]
    order = {name: i for i, name in enumerate(STUDENT_FUNCTIONS[assignment])}
    checks.sort(key=lambda c: (order.get(c.function, 99), not c.visible))
    ids = [c.id for c in checks]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise RuntimeError(f"duplicate check ids: {sorted(duplicates)}")
    return checks
