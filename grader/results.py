"""Result records shared by the grader, the notebooks and the reports.

No torch, no :mod:`solutions`: safe to import anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_utils import atomic

#: Status values of a check.
PASSED, FAILED, ERROR, TIMEOUT, SKIPPED = "passed", "failed", "error", "timeout", "skipped"


@dataclass
class CheckResult:
    """One graded check.

    ``message`` is for the student and never contains hidden inputs or
    reference outputs; ``detail`` (captured output of a hidden check, internal
    notes) is for staff only and stays out of student feedback.
    """

    id: str
    function: str
    title: str
    visible: bool
    max_points: float
    points: float = 0.0
    status: str = FAILED
    message: str = ""
    detail: str = ""
    output: str = ""
    seconds: float = 0.0
    kind: str = "check"  # check | overfit | map

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckResult":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class GradeReport:
    """Everything one grading run produced for one submission."""

    assignment: str
    submission: str
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sandbox: str = ""
    seconds: float = 0.0
    grader_version: str = "1"
    student_id: str = ""
    #: sha256 of the submission's files (``grader batch`` regrades a changed resubmission).
    content_hash: str = ""

    @property
    def score(self) -> float:
        return round(sum(c.points for c in self.checks), 2)

    @property
    def max_score(self) -> float:
        return round(sum(c.max_points for c in self.checks), 2)

    def by_function(self) -> dict[str, list[CheckResult]]:
        groups: dict[str, list[CheckResult]] = {}
        for check in self.checks:
            groups.setdefault(check.function, []).append(check)
        return groups

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["score"] = self.score
        data["max_score"] = self.max_score
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GradeReport":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "checks"}
        return cls(checks=[CheckResult.from_dict(c) for c in data.get("checks", [])], **fields)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and durably (:mod:`data_utils.atomic`, with fsync:
    grades and reports survive a crash or a power cut)."""
    return atomic.atomic_write_text(path, text, fsync=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
