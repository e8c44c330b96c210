"""Grading a class: every submission of a folder, in parallel, resumably.

Each submission is graded by its own ``python -m grader grade`` process (so a
submission that crashes the grader itself takes only its own row down) with
an overall time limit.  Its JSON report is written atomically to
``<results-dir>/<student>.json``; a rerun skips students whose report exists
(and is readable), so an interrupted batch resumes where it stopped.  The
CSV is rewritten atomically after every finished submission and at the end.

A submission is an entry of the folder: a sub-folder (``<student>/...``, e.g.
nbgrader's ``submitted/<student>/<assignment>/``), or a file
(``<student>.ipynb`` / ``.py`` / ``.zip``; a zip is extracted to a temporary
folder first).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from grader.report import csv_row, csv_text
from grader.results import GradeReport, atomic_write_text

SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def discover(folder: Path, assignment: str) -> list[tuple[str, Path]]:
    """``(student id, path)`` for every submission in ``folder``."""
    entries = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix in (".ipynb", ".py", ".zip"):
            student = SAFE.sub("_", entry.stem if entry.is_file() else entry.name)
            entries.append((student, entry))
    return entries


def _existing(path: Path) -> GradeReport | None:
    try:
        return GradeReport.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _unzip(path: Path, into: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            target = (into / member.filename).resolve()
            if into.resolve() not in target.parents and target != into.resolve():
                raise ValueError(f"{path.name}: unsafe path {member.filename!r} in the archive")
            if member.file_size > 200 << 20:
                raise ValueError(f"{path.name}: {member.filename} is too large")
        archive.extractall(into)
    return into


def grade_one(student: str, path: Path, assignment: str, result_path: Path, extra_args: list[str], timeout: float) -> GradeReport:
    """Grade one submission in a separate grader process; always returns a report."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grader-batch-") as tmp:
        target = path
        error = None
        if path.suffix == ".zip":
            try:
                target = _unzip(path, Path(tmp) / "submission")
            except (zipfile.BadZipFile, ValueError, OSError) as exc:
                error = f"could not open the zip archive: {exc}"
        if error is None:
            out_json = Path(tmp) / "report.json"
            cmd = [sys.executable, "-m", "grader", "grade", str(target), "--assignment", assignment, "--json", str(out_json),
                   "--quiet", *extra_args]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                report = _existing(out_json)
                if report is None:
                    error = f"the grader failed on this submission (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
            except subprocess.TimeoutExpired:
                error = f"grading took longer than {timeout:.0f} s and was stopped"
        if error is not None:
            report = GradeReport(assignment, str(path), errors=[error])
    report.student_id = student
    report.seconds = report.seconds or round(time.monotonic() - started, 2)
    atomic_write_text(result_path, json.dumps(report.to_dict(), indent=2))
    return report


def run_batch(folder: str | os.PathLike, assignment: str, *, jobs: int = 1, out: str | os.PathLike = "grades.csv",
              results_dir: str | os.PathLike | None = None, extra_args: list[str] | None = None, timeout: float = 1800.0,
              log=print, shard: str | None = None) -> list[dict]:
    folder = Path(folder)
    out = Path(out)
    results_dir = Path(results_dir) if results_dir else out.with_suffix("").with_name(out.stem + "_reports")
    results_dir.mkdir(parents=True, exist_ok=True)
    submissions = discover(folder, assignment)
    if shard is not None:
        from grader.shards import select_shard

        submissions = select_shard(submissions, shard)  # this machine's deterministic slice
    rows: dict[str, dict] = {}
    todo = []
    for student, path in submissions:
        result_path = results_dir / f"{student}.json"
        report = _existing(result_path)
        if report is not None and report.assignment == assignment:
            rows[student] = csv_row(student, report)
        else:
            todo.append((student, path, result_path))
    log(f"{len(submissions)} submissions, {len(submissions) - len(todo)} already graded, {len(todo)} to grade with {jobs} job(s)")
    env_threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    os.environ.setdefault("GRADER_THREADS", str(env_threads))

    def write_csv():
        ordered = [rows[s] for s, _ in submissions if s in rows]
        atomic_write_text(out, csv_text(ordered, assignment))

    write_csv()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grade_one, s, p, assignment, r, list(extra_args or []), timeout): s for s, p, r in todo}
        for future in as_completed(futures):
            student = futures[future]
            try:
                report = future.result()
            except Exception as error:  # noqa: BLE001 - one bad submission never stops the batch
                report = GradeReport(assignment, student, errors=[f"internal error: {error}"])
            rows[student] = csv_row(student, report)
            write_csv()
            log(f"  {student}: {report.score:g} / {report.max_score:g}" + (f"  ({report.errors[0][:80]})" if report.errors else ""))
    write_csv()
    return [rows[s] for s, _ in submissions if s in rows]
