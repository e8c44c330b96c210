"""The error the course build raises: a leaf module, so that the build
(:mod:`assignments.build`) and the student wheel (:mod:`assignments.student_package`),
which the build calls, can both raise it without importing each other."""

from __future__ import annotations


class BuildError(RuntimeError):
    """The course files cannot be built; the message names the file and the fix.
    ``nbgrader generate_assignment`` turns it into its stop message."""
