"""The sandbox against submissions that attack it, in both isolation modes
(tests/grader_zoo/zoo_sandbox.py; issue 11).

Every entry is graded in bubblewrap (when it works here) and in the fallback;
as root both run student code as an unprivileged uid of its own.  Each test
prints the entry's score next to the honest stub's (the release, 0) so that the
closing note of the issue can list them.
"""

from __future__ import annotations

import copy
import io
import os
import time

import pytest
import torch

from grader.grade import grade_source
from grader.harness import wire
from grader.rubric import load_rubric
from grader.sandbox import Outcome, ProtocolError, Sandbox, probe_bwrap
from tests.grader_zoo.zoo_sandbox import HONEST, ONE, TARGET, SandboxEntry, sandbox_entries

pytestmark = pytest.mark.slow

FAST = copy.deepcopy(load_rubric())
FAST["limits"]["check"].update(wall_seconds=15.0, load_seconds=15.0, cpu_seconds=60.0, oracle_seconds=5.0)
MODES = ("bwrap", "fallback")


@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    if request.param == "bwrap" and not probe_bwrap()[0]:
        pytest.skip(f"bubblewrap unavailable here: {probe_bwrap()[1]}")
    with Sandbox(request.param, limits=FAST["limits"]["check"]) as sb:
        yield sb


def grade(source: str, sandbox: Sandbox):
    return grade_source(source, ONE, functions=[TARGET, HONEST], include_overfit=False, include_map=False,
                        sandbox=sandbox, rubric=FAST)


def points(report, function):
    checks = [c for c in report.checks if c.function == function]
    return sum(c.points for c in checks), sum(c.max_points for c in checks)


@pytest.mark.parametrize("entry", sandbox_entries(), ids=lambda e: e.name)
def test_sandbox_attack(entry: SandboxEntry, sandbox):
    if sandbox.mode not in entry.modes:
        pytest.skip(f"{entry.name}: a documented limit of the {sandbox.mode} mode ({entry.why})")
    started = time.monotonic()
    report = grade(entry.source(), sandbox)
    seconds = time.monotonic() - started
    earned, available = points(report, TARGET)
    print(f"\n{entry.name} [{sandbox.mode}]: {TARGET} {earned:g} / {available:g} (honest stub 0 / {available:g}), "
          f"{seconds:.0f} s; {report.sandbox}")
    assert seconds < entry.max_seconds, f"{entry.name}: grading took {seconds:.0f} s"
    honest, honest_max = points(report, HONEST)
    assert honest == honest_max > 0, f"{entry.name}: the honest function lost points"
    messages = "\n".join(c.message for c in report.checks if c.function == TARGET).lower()
    if entry.points == "full":
        assert earned == available > 0, f"{entry.name}: the attack cost points: {messages}"
    else:
        assert earned < available, f"{entry.name}: the attack kept its points"
        assert any(w in messages for w in entry.words), f"{entry.name}: expected {entry.words} in {messages}"
    if entry.expect:
        entry.expect(report, sandbox)
    assert "uid" in report.sandbox  # the report says which isolation was used


def test_the_release_stub_scores_zero(sandbox):
    from grader.source import release_source

    report = grade(release_source(ONE), sandbox)
    assert points(report, TARGET)[0] == 0 < points(report, TARGET)[1]


def test_garbled_frames_from_the_sandbox_are_the_submissions_failure():
    """What the zygote's pipe carries is untrusted: garbage is a failure with a score, not a crash."""
    sandbox = Sandbox.__new__(Sandbox)
    read, write = os.pipe()
    sandbox._ctl_out, sandbox._buffer, sandbox.proc = read, bytearray(), None
    os.write(write, wire.FRAME.pack(5) + b"}{!!!")
    with pytest.raises(ProtocolError):
        sandbox._serve({"wall_seconds": 1.0, "oracle_seconds": 1.0}, [], None)
    os.write(write, wire.FRAME.pack(1 << 40))
    sandbox._buffer = bytearray()
    with pytest.raises(ProtocolError):
        sandbox._serve({"wall_seconds": 1.0, "oracle_seconds": 1.0}, [], None)
    os.close(read)
    os.close(write)


def test_result_records_are_bounded_before_use():
    bomb: list = []
    for _ in range(30):  # 2^30 paths, shallower than the depth limit: the element count stops it
        bomb = [bomb, bomb]
    buffer = io.BytesIO()
    torch.save({"ok": True, "value": bomb}, buffer)
    assert len(buffer.getvalue()) < 4096
    started = time.monotonic()
    outcome = Sandbox.__new__(Sandbox)._outcome({"type": "done", "has_result": True}, buffer.getvalue())
    assert isinstance(outcome, Outcome) and outcome.status == "bad_result" and "elements" in outcome.error
    assert time.monotonic() - started < 10
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(wire.Unbounded, match="deeper"):
        wire.check_bounded(deep)
