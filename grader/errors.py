"""Failures of the grader itself (not of a submission): a leaf module, so that every
part of the grader can raise them without importing the grading pipeline."""

from __future__ import annotations

#: Exit status of ``python -m grader grade``/``batch`` when the grader cannot grade on this machine.
EXIT_CANNOT_GRADE = 3


class GraderInfrastructureError(RuntimeError):
    """The grader cannot grade at all here (the sandbox does not work, a limit cannot hold the
    job): no score may be recorded, and the message says what to fix."""
