"""Grading a class: every submission of a folder, in parallel, resumably.

Each submission is graded by its own ``python -m grader grade`` process (so a
submission that crashes the grader itself takes only its own row down) with
an overall time limit.  Its JSON report is written atomically to
``<results-dir>/<student>.json``; a rerun skips students whose report exists
(and is readable) for the same content of the submission (a changed resubmission
is regraded; ``--force`` regrades all), so an interrupted batch resumes where it
stopped.  Ctrl-C or SIGTERM ends every child grader and its sandbox and removes
the temporary folders.  The
CSV is rewritten atomically after every finished submission and at the end.

A submission is an entry of the folder: a sub-folder (``<student>/...``, e.g.
nbgrader's ``submitted/<student>/<assignment>/``), or a file
(``<student>.ipynb`` / ``.py`` / ``.zip``; a zip is extracted to a temporary
folder first).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from grader.grade import EXIT_CANNOT_GRADE, GraderInfrastructureError
from grader.report import csv_row, csv_text
from grader.results import GradeReport, atomic_write_text

SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _base_id(entry: Path) -> str:
    return SAFE.sub("_", entry.stem if entry.is_file() else entry.name) or "submission"


def discover(folder: Path, assignment: str) -> list[tuple[str, Path]]:
    """``(student id, path)`` for every submission in ``folder``.

    Ids are the entries' names made file-system safe; names that become the same
    id (``bob.ipynb``, ``bob/``, ``b o b.ipynb``, ``b,o,b.py``) get ``-2``, ``-3``, ...
    in the folder's sorted order (see :func:`id_notes`), never a merged row."""
    entries: list[tuple[str, Path]] = []
    taken: set[str] = set()
    candidates = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".")
                  and (e.is_dir() or e.suffix in (".ipynb", ".py", ".zip"))]
    bases = {_base_id(e) for e in candidates}
    for entry in candidates:
        base = _base_id(entry)
        student, n = base, 1
        while student in taken or (n > 1 and student in bases):
            n += 1
            student = f"{base}-{n}"
        taken.add(student)
        entries.append((student, entry))
    return entries


def id_notes(entries: list[tuple[str, Path]]) -> dict[str, str]:
    """A note for every submission whose name gives the same id as another's."""
    by_base: dict[str, list[tuple[str, Path]]] = {}
    for student, path in entries:
        by_base.setdefault(_base_id(path), []).append((student, path))
    notes = {}
    for base, group in by_base.items():
        if len(group) > 1:
            names = ", ".join(repr(p.name) for _, p in group)
            for student, path in group:
                notes[student] = (f"the names {names} give the same id {base!r}: this submission ({path.name!r}) "
                                  f"is graded as {student!r}")
    return notes


def content_hash(path: Path) -> str:
    """sha256 of a submission: a file's bytes, or a folder's relative paths and bytes
    (links are not followed; a link is hashed as its target text)."""
    digest = hashlib.sha256()
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        try:
            data = os.readlink(file).encode() if file.is_symlink() else file.read_bytes()
        except OSError:
            data = b"<unreadable>"
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()


def _existing(path: Path) -> GradeReport | None:
    try:
        return GradeReport.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


#: Child graders running now (their process groups are ended on Ctrl-C / SIGTERM).
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _end_children(grace: float = 5.0) -> None:
    """SIGTERM every child grader's process group (it closes its sandbox), then SIGKILL."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass


#: Limits on one submission archive: total uncompressed bytes, members.
MAX_ZIP_BYTES = 256 << 20
MAX_ZIP_MEMBERS = 2000


def _unzip(path: Path, into: Path) -> Path:
    """Extract a submission archive safely: no member outside ``into``, no symbolic link
    (it would make the grader read the file it points to), bounded size and count."""
    import stat

    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise ValueError(f"{path.name}: {len(members)} members (the limit is {MAX_ZIP_MEMBERS})")
        total = 0
        for member in members:
            target = (into / member.filename).resolve()
            if into.resolve() not in target.parents and target != into.resolve():
                raise ValueError(f"{path.name}: unsafe path {member.filename!r} in the archive")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ValueError(f"{path.name}: {member.filename!r} is a symbolic link; submissions hold plain files only")
            total += member.file_size
            if member.file_size > 200 << 20 or total > MAX_ZIP_BYTES:
                raise ValueError(f"{path.name}: the archive is larger than {MAX_ZIP_BYTES >> 20} MiB uncompressed")
        into.mkdir(parents=True, exist_ok=True)
        for member in members:
            # Copy at most the declared size: a member whose header lies about its size stops there.
            target = into / member.filename
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                remaining = member.file_size
                while remaining > 0:
                    chunk = source.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
    return into


def grade_one(student: str, path: Path, assignment: str, result_path: Path, extra_args: list[str], timeout: float,
              notes: list[str] | None = None, digest: str = "") -> GradeReport | None:
    """Grade one submission in a separate grader process; returns a report (None when the batch is stopping)."""
    started = time.monotonic()
    if _STOPPING.is_set():
        return None
    with tempfile.TemporaryDirectory(prefix="grader-batch-") as tmp:
        target = path
        error = None
        if path.suffix == ".zip" and not path.is_symlink():
            try:
                target = _unzip(path, Path(tmp) / "submission")
            except (zipfile.BadZipFile, ValueError, OSError) as exc:
                error = f"could not open the zip archive: {exc}"
        if error is None:
            out_json = Path(tmp) / "report.json"
            cmd = [sys.executable, "-m", "grader", "grade", str(target), "--assignment", assignment, "--json", str(out_json),
                   "--quiet", *extra_args]
            # Its own session: Ctrl-C / SIGTERM of the batch ends the child grader, its sandbox and
            # everything they started, as one process group.
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            with _LIVE_LOCK:
                _LIVE.add(proc)
            try:
                _, stderr = proc.communicate(timeout=timeout)
                if proc.returncode == EXIT_CANNOT_GRADE:
                    # The grader cannot grade on this machine: no report, so a rerun grades this one again.
                    raise GraderInfrastructureError(stderr.strip()[-1000:] or "the grader cannot grade here")
                report = _existing(out_json)
                if _STOPPING.is_set():
                    return None
                if report is None:
                    error = f"the grader failed on this submission (exit {proc.returncode}): {stderr.strip()[-500:]}"
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
                error = f"grading took longer than {timeout:.0f} s and was stopped"
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
        if error is not None:
            report = GradeReport(assignment, str(path), errors=[error])
    report.student_id = student
    report.content_hash = digest
    report.notes = list(notes or []) + list(report.notes)
    report.seconds = report.seconds or round(time.monotonic() - started, 2)
    atomic_write_text(result_path, json.dumps(report.to_dict(), indent=2))
    return report


class BatchInterrupted(Exception):
    """Ctrl-C or SIGTERM: every child grader was ended; the CSV holds what was finished."""


def run_batch(folder: str | os.PathLike, assignment: str, *, jobs: int = 1, out: str | os.PathLike = "grades.csv",
              results_dir: str | os.PathLike | None = None, extra_args: list[str] | None = None, timeout: float = 1800.0,
              force: bool = False, log=print, shard: str | None = None) -> list[dict]:
    """Grade every submission of ``folder``; see the module docstring.

    A submission is skipped when its report exists for the same assignment and
    the same content (:func:`content_hash`): a changed resubmission is
    regraded; ``force`` regrades all.  ``shard="K/N"`` grades only this
    machine's deterministic slice (:mod:`grader.shards`).  Ctrl-C or SIGTERM
    ends every child grader (and so its sandbox) and raises
    :class:`BatchInterrupted`."""
    folder = Path(folder)
    out = Path(out)
    results_dir = Path(results_dir) if results_dir else out.with_suffix("").with_name(out.stem + "_reports")
    results_dir.mkdir(parents=True, exist_ok=True)
    submissions = discover(folder, assignment)
    if shard is not None:
        from grader.shards import select_shard

        submissions = select_shard(submissions, shard)  # this machine's deterministic slice
    notes = id_notes(submissions)
    for note in sorted(set(notes.values())):
        log(f"note: {note}")
    rows: dict[str, dict] = {}
    todo = []
    for student, path in submissions:
        result_path = results_dir / f"{student}.json"
        digest = content_hash(path)
        report = None if force else _existing(result_path)
        if report is not None and report.assignment == assignment and report.content_hash == digest:
            rows[student] = csv_row(student, report)
        else:
            todo.append((student, path, result_path, digest))
    log(f"{len(submissions)} submissions, {len(submissions) - len(todo)} already graded, {len(todo)} to grade with {jobs} job(s)")
    env_threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    os.environ.setdefault("GRADER_THREADS", str(env_threads))

    def write_csv():
        ordered = [rows[s] for s, _ in submissions if s in rows]
        atomic_write_text(out, csv_text(ordered, assignment))

    write_csv()
    _STOPPING.clear()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):  # the signal module's handler signature
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = {pool.submit(grade_one, s, p, assignment, r, list(extra_args or []), timeout,
                               [notes[s]] if s in notes else [], d): s for s, p, r, d in todo}
        for future in as_completed(futures):
            student = futures[future]
            try:
                report = future.result()
            except GraderInfrastructureError:
                # Stop the class, not just this row: every other submission would fail the same way.
                for other in futures:
                    other.cancel()
                write_csv()
                raise
            except Exception as error:  # noqa: BLE001 - one bad submission never stops the batch
                report = GradeReport(assignment, student, errors=[f"internal error: {error}"])
            if report is None:
                continue
            rows[student] = csv_row(student, report)
            write_csv()
            log(f"  {student}: {report.score:g} / {report.max_score:g}" + (f"  ({report.errors[0][:80]})" if report.errors else ""))
    except KeyboardInterrupt:
        _STOPPING.set()
        _end_children()
        pool.shutdown(wait=True, cancel_futures=True)  # the workers' temporary folders are removed as they return
        write_csv()
        raise BatchInterrupted(f"interrupted: {len(rows)} of {len(submissions)} submissions graded; rerun to resume") from None
    finally:
        pool.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    write_csv()
    return [rows[s] for s, _ in submissions if s in rows]
