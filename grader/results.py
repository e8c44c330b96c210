"""Result records shared by the grader, the notebooks and the reports.

No torch, no :mod:`solutions`: safe to import anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
