"""Spreading a class over machines: ``grader batch --shard K/N`` and ``grader merge``.

A shard is a deterministic slice of a submissions folder: the submissions
sorted by student id, the ``i``-th (0-based) going to shard ``i % N + 1``.
Every machine that lists the same folder computes the same split, the
shards are disjoint, their union is the folder, and their sizes differ by at
most one.  Each shard writes its own CSV and reports folder (a Slurm array
task per shard: ``grader/slurm/grade_array.sbatch``); ``merge`` joins the
reports folders into one CSV, refusing a student graded in two shards with
different results and naming the shards with no report.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from grader.results import GradeReport, atomic_write_text

SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; None for None.  ValueError with the fix otherwise."""
    if text is None:
        return None
    match = SHARD.match(str(text))
    if not match:
        raise ValueError(f"--shard must look like K/N (e.g. 3/8, shards numbered from 1), not {text!r}")
    k, n = int(match.group(1)), int(match.group(2))
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be between 1 and N ({n}); Slurm arrays: --array=1-{n}")
    return k, n


def select_shard(submissions: Sequence[tuple[str, Path]], shard: str | tuple[int, int] | None) -> list[tuple[str, Path]]:
    """The submissions of shard ``K/N`` (all of them for None), in sorted-id order."""
    parsed = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    ordered = sorted(submissions, key=lambda item: item[0])
    if parsed is None:
        return ordered
    k, n = parsed
    return [item for i, item in enumerate(ordered) if i % n == k - 1]


def merge_reports(report_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, assignment: str | None = None) -> list[dict]:
    """Join the per-submission JSON reports of several shards into one CSV; returns its rows.

    Raises ValueError for a folder without reports, reports of two
    assignments, or one student with different results in two folders.
    """
    from grader.report import csv_row, csv_text

    reports: dict[str, tuple[GradeReport, Path]] = {}
    for folder in map(Path, report_dirs):
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise ValueError(f"{folder}: no reports (did this shard run? its --results-dir)")
        for path in files:
            try:
                report = GradeReport.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as error:
                raise ValueError(f"{path}: not a grader report ({error})") from None
            assignment = assignment or report.assignment
            if report.assignment != assignment:
                raise ValueError(f"{path}: a report of {report.assignment}, the others are {assignment}")
            student = report.student_id or path.stem
            if student in reports:
                other, where = reports[student]
                if (other.score, other.max_score) != (report.score, report.max_score):
                    raise ValueError(f"{student} is graded in {where.parent} ({other.score:g}) and in {folder} "
                                     f"({report.score:g}): the shards overlap; regrade with one --shard split")
                continue
            reports[student] = (report, path)
    rows = [csv_row(student, reports[student][0]) for student in sorted(reports)]
    atomic_write_text(out, csv_text(rows, assignment))
    return rows
