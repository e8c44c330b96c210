"""Loading ``grader/rubric.toml``: points per check, limits, overfit and mAP gates."""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

RUBRIC_PATH = Path(__file__).resolve().parent / "rubric.toml"


@functools.lru_cache(maxsize=4)
def load_rubric(path: str | None = None) -> dict:
    path = Path(path or os.environ.get("GRADER_RUBRIC", RUBRIC_PATH))
    with open(path, "rb") as f:
        return tomllib.load(f)


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
