"""Loading ``grader/rubric.toml``: points per check, limits, overfit and mAP gates.

The points of each function come from the course manifest ``grader/course.toml``
(:func:`grader.functions.load_course`), not from the rubric: :func:`load_rubric`
merges them in as ``rubric[assignment]["functions"]``, so callers see one table.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

from grader.functions import load_course

RUBRIC_PATH = Path(__file__).resolve().parent / "rubric.toml"


@functools.lru_cache(maxsize=4)
def load_rubric(path: str | None = None) -> dict:
    """The rubric (``path``, ``$GRADER_RUBRIC`` or ``grader/rubric.toml``) with each assignment's
    ``functions`` points filled in from the course manifest."""
    path = Path(path or os.environ.get("GRADER_RUBRIC", RUBRIC_PATH))
    with open(path, "rb") as f:
        rubric = tomllib.load(f)
    for assignment, entry in load_course().items():
        if "functions" in rubric.get(assignment, {}):
            # A second declaration would silently win or lose against the manifest: refuse it.
            raise ValueError(f"{path} declares [{assignment}.functions]: points live in grader/course.toml only")
        rubric.setdefault(assignment, {})["functions"] = dict(entry["functions"])
    return rubric


def default_limits() -> dict:
    """``[limits.check]`` of ``grader/rubric.toml`` itself (not ``$GRADER_RUBRIC``): the sandbox's defaults,
    so that a job started without a rubric runs under the same limits as a graded one."""
    with open(RUBRIC_PATH, "rb") as f:
        return dict(tomllib.load(f)["limits"]["check"])


def weight_for(rubric: dict, assignment: str, check_id: str) -> float:
    table = rubric[assignment]["weights"]
    if check_id not in table:
        raise KeyError(f"rubric.toml has no weight for {assignment} check {check_id!r}")
    return float(table[check_id])


def function_points(rubric: dict, assignment: str, function: str) -> float:
    return float(rubric[assignment]["functions"][function])


def split_points(rubric: dict, assignment: str, checks, skipped: set[str]) -> dict[str, float]:
    """``{check id: points}``: each function's points split over its non-skipped checks by weight."""
    totals: dict[str, float] = {}
    for check in checks:
        if check.id not in skipped:
            totals[check.function] = totals.get(check.function, 0.0) + weight_for(rubric, assignment, check.id)
    points = {}
    for check in checks:
        if check.id in skipped or totals.get(check.function, 0.0) == 0:
            points[check.id] = 0.0
        else:
            share = weight_for(rubric, assignment, check.id) / totals[check.function]
            points[check.id] = round(function_points(rubric, assignment, check.function) * share, 6)
    return points


def limits_for(rubric: dict, kind: str = "check") -> dict:
    base = dict(rubric.get("limits", {}).get("check", {}))
    if kind != "check":
        base.update(rubric.get("limits", {}).get(kind, {}))
    return base
