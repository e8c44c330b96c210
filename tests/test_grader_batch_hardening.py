"""``grader batch`` behaves (issue 11, "batches behave"): unique ids, content-keyed
resume, ``--force``, and Ctrl-C/SIGTERM ending every child grader and sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import grader.batch as batch
from grader.results import GradeReport

ROOT = Path(__file__).resolve().parents[1]


def test_names_that_normalise_to_one_id_stay_apart(tmp_path):
    for name in ("bob.ipynb", "b o b.ipynb", "b,o,b.py"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "bob").mkdir()
    (tmp_path / "b_o_b-2.py").write_text("")  # an id that looks like a renamed one
    entries = batch.discover(tmp_path, "one_stage")
    ids = [student for student, _ in entries]
    assert len(ids) == len(set(ids)) == 5, ids
    notes = batch.id_notes(entries)
    assert {Path(p).name for s, p in entries if s in notes} == {"b o b.ipynb", "b,o,b.py", "bob", "bob.ipynb"}
    assert all("give the same id" in n and f"graded as '{s}'" in n for s, n in notes.items())
    assert dict(entries)["b_o_b-2"].name == "b_o_b-2.py"  # its own name, not taken by a renamed one
    # The same folder gives the same ids on a rerun (resume relies on it).
    assert batch.discover(tmp_path, "one_stage") == entries


def test_resume_is_keyed_by_content_and_force_regrades(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "alice.py").write_text("x = 1\n")
    (folder / "bob.py").write_text("x = 1\n")
    graded: list[str] = []

    def fake_grade_one(student, path, assignment, result_path, extra_args, timeout, notes=None, digest=""):
        graded.append(student)
        report = GradeReport(assignment, str(path), student_id=student, content_hash=digest, notes=list(notes or []))
        result_path.write_text(json.dumps(report.to_dict()))
        return report

    monkeypatch.setattr(batch, "grade_one", fake_grade_one)
    out = tmp_path / "grades.csv"
    batch.run_batch(folder, "one_stage", out=out, log=lambda *_: None)
    assert sorted(graded) == ["alice", "bob"]
    graded.clear()
    batch.run_batch(folder, "one_stage", out=out, log=lambda *_: None)
    assert graded == [], "unchanged submissions were regraded"
    (folder / "bob.py").write_text("x = 2\n")
    batch.run_batch(folder, "one_stage", out=out, log=lambda *_: None)
    assert graded == ["bob"], "a changed resubmission must be regraded"
    graded.clear()
    batch.run_batch(folder, "one_stage", out=out, force=True, log=lambda *_: None)
    assert sorted(graded) == ["alice", "bob"]


def test_zip_caps(tmp_path, monkeypatch):
    import zipfile

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"part{i}.bin", b"\0" * (1 << 20))
    monkeypatch.setattr(batch, "MAX_ZIP_BYTES", 2 << 20)
    with pytest.raises(ValueError, match="larger than"):
        batch._unzip(archive, tmp_path / "out")
    monkeypatch.setattr(batch, "MAX_ZIP_BYTES", 256 << 20)
    monkeypatch.setattr(batch, "MAX_ZIP_MEMBERS", 2)
    with pytest.raises(ValueError, match="members"):
        batch._unzip(archive, tmp_path / "out")


def _processes_below(folder: Path) -> list[str]:
    """Processes whose working folder or command line mentions ``folder``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(f"{pid}: {cmdline[:120]}{' --zygote' if '--zygote' in cmdline else ''}")
    return found


@pytest.mark.slow
def test_sigterm_ends_every_child_grader_and_sandbox(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    for name in ("alice", "bob"):
        (folder / f"{name}.py").write_text("import time\n\ndef nms(boxes, scores, iou_threshold=0.5):\n"
                                           "    while True:\n        time.sleep(0.1)\n")
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="batch-sigterm-", dir="/tmp"))  # reachable by the sandbox's uid
    os.chmod(scratch, 0o1777)
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "grader", "batch", str(folder), "--assignment", "one_stage", "--jobs", "2",
                             "--out", str(tmp_path / "grades.csv"), "--no-overfit", "--no-map", "--functions", "nms",
                             "--sandbox", "fallback"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until both sandboxes run the hanging submissions
        sandboxes = [p for p in _processes_below(scratch) if "--zygote" in p]
        if len(sandboxes) >= 2:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"the sandboxes did not start: {proc.communicate()}")
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    time.sleep(1)
    assert _processes_below(scratch) == [] and _processes_below(folder) == [], "orphaned graders or sandboxes"
    assert list(scratch.iterdir()) == [], f"temporary folders left: {list(scratch.iterdir())}"
    assert b"interrupted" in stderr
    scratch.rmdir()
