"""The grader against zoos of submissions (see tests/grader_zoo/zoo.py).

Bad submissions (hostile or broken code, unreadable notebooks) must lose the
points of what they broke, keep the points of their honest parts, and never
crash, hang or fool the grader.  Plausible bugs must lose points in the
check that targets them, with a message naming the mistake.
"""

from __future__ import annotations

import copy

import pytest

from grader.grade import grade_source
from grader.notebook import grade_path
from grader.rubric import load_rubric
from grader.sandbox import Sandbox, probe_bwrap
from tests.grader_zoo.zoo import Entry, bad_submissions, bug_submissions

#: Each entry is short, but the zoos together take minutes: `-m "not slow"` leaves them out (CI runs them).
pytestmark = pytest.mark.slow

FAST = copy.deepcopy(load_rubric())
# Short limits so that the hanging entries cost little; generous enough for a loaded 2-core machine.
FAST["limits"]["check"].update(wall_seconds=15.0, load_seconds=15.0, cpu_seconds=60.0)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(limits=FAST["limits"]["check"]) as sb:
        yield sb


def grade_entry(entry: Entry, folder, sandbox) -> object:
    functions = entry.functions or [f for f in (entry.target, entry.honest) if f and f != "*"]
    kwargs = dict(functions=functions, include_overfit=False, include_map=False, sandbox=sandbox, rubric=FAST)
    if entry.file:
        return grade_path(entry.build(folder), entry.assignment, **kwargs)
    return grade_source(entry.build(), entry.assignment, **kwargs)


def check_entry(entry: Entry, report) -> None:
    text = "\n".join([c.message for c in report.checks] + report.errors + report.notes).lower()
    if entry.target == "*":
        assert report.score == 0, f"{entry.name}: an unreadable/unloadable submission must score 0"
        assert report.errors, f"{entry.name}: the report must say why"
    elif entry.target:
        target = [c for c in report.checks if c.function == entry.target]
        assert target, f"{entry.name}: no check of {entry.target} ran"
        if entry.check:
            chosen = [c for c in target if c.id == entry.check]
            assert chosen and not chosen[0].passed, f"{entry.name}: {entry.check} should fail: {[(c.id, c.status) for c in target]}"
        else:
            ran = [c for c in target if c.status != "skipped"]
            failed = [c for c in ran if not c.passed]
            assert len(failed) * 2 >= len(ran), \
                f"{entry.name}: most checks of {entry.target} should fail: {[(c.id, c.status) for c in target]}"
        assert sum(c.points for c in target) < sum(c.max_points for c in target)
        if entry.status:
            assert any(c.status == entry.status for c in target), [(c.id, c.status) for c in target]
    if entry.words:
        assert any(w in text for w in entry.words), f"{entry.name}: expected one of {entry.words} in:\n{text[:2000]}"
    if entry.honest:
        honest = [c for c in report.checks if c.function == entry.honest]
        assert honest and all(c.passed or c.status == "skipped" for c in honest), \
            f"{entry.name}: the honest function {entry.honest} must keep its points: {[(c.id, c.status, c.message) for c in honest]}"


@pytest.mark.parametrize("entry", bad_submissions(), ids=lambda e: e.name)
def test_bad_submission_zoo(entry, sandbox, tmp_path):
    report = grade_entry(entry, tmp_path, sandbox)
    check_entry(entry, report)


def test_written_result_files_change_nothing(sandbox, tmp_path):
    target = tmp_path / "forged.json"
    entry = next(e for e in bad_submissions(write_target=target) if e.name == "write_result_files")
    report = grade_entry(entry, tmp_path, sandbox)
    check_entry(entry, report)
    if sandbox.mode == "bwrap":
        assert not target.exists(), "a submission wrote outside the sandbox's scratch directory"


@pytest.mark.parametrize("entry", bug_submissions(), ids=lambda e: e.name)
def test_plausible_bug_zoo(entry, sandbox, tmp_path):
    report = grade_entry(entry, tmp_path, sandbox)
    check_entry(entry, report)


FALLBACK_ENTRIES = ("exception", "infinite_loop", "os_exit", "huge_output", "memory_bomb", "import_solutions_inside")


@pytest.fixture(scope="module")
def fallback_sandbox():
    with Sandbox("fallback", limits=FAST["limits"]["check"]) as sb:
        yield sb


@pytest.mark.parametrize("name", FALLBACK_ENTRIES)
def test_bad_submissions_with_the_fallback_isolation(name, fallback_sandbox, tmp_path):
    """The documented fallback (no bubblewrap) handles the same hostile code."""
    assert fallback_sandbox.mode == "fallback"
    entry = next(e for e in bad_submissions() if e.name == name)
    check_entry(entry, grade_entry(entry, tmp_path, fallback_sandbox))


def test_bwrap_is_used_when_available():
    ok, reason = probe_bwrap()
    if not ok:
        pytest.skip(f"bubblewrap unavailable here: {reason}")
    with Sandbox() as sb:
        assert sb.mode == "bwrap"
