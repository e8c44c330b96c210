"""Gated checks: a function's minor checks count only when its main value check passes.

Zeros of the right shape, all-background targets, an empty NMS, constant losses
or the visible cases' stored values pass a function's shape, edge-case, dtype,
device and no-mutation checks without computing anything.  ``[<assignment>.gates]``
in ``grader/rubric.toml`` names, for every graded function, its *main* checks
(broad value checks on hidden random inputs, which such code cannot pass); every
other check of the function is *gated*: it earns its points only when the main
checks it needs (all of them unless ``needs`` names some) pass.

This runs in the grader's process on the parent's verdicts (never in the
sandbox), after all of a function's checks have been judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grader.results import ERROR, FAILED, PASSED, SKIPPED, CheckResult


@dataclass(frozen=True)
class Gate:
    function: str
    #: Full ids of the main checks.
    main: tuple[str, ...]
    #: ``{gated check id: main check ids it needs}`` for gated checks that do not need every main check.
    needs: dict[str, tuple[str, ...]]

    def required(self, check_id: str) -> tuple[str, ...]:
        """Main checks ``check_id`` needs (empty for a main check itself)."""
        if check_id in self.main:
            return ()
        return self.needs.get(check_id, self.main)


def gate_for(rubric: dict, assignment: str, function: str) -> Gate:
    """The gate of ``function`` from the rubric; ``KeyError`` naming the missing entry."""
    table = rubric.get(assignment, {}).get("gates", {})
    if function not in table:
        raise KeyError(f"rubric.toml has no [{assignment}.gates] entry for {function!r}: name its main value check(s)")
    entry = table[function]
    main = tuple(f"{function}/{name}" for name in entry.get("main", ()))
    if not main:
        raise KeyError(f"rubric.toml [{assignment}.gates] {function}: `main` must name at least one check")
    needs = {f"{function}/{name}": tuple(f"{function}/{m}" for m in wanted)
             for name, wanted in entry.get("needs", {}).items()}
    return Gate(function, main, needs)


def _main_ok(result: CheckResult | None) -> bool:
    """A main check does not block its gated checks when it passed, was skipped on this
    machine, or hit an internal grader error (worth 0 of 0: not the student's fault)."""
    if result is None:
        return True
    return result.status in (PASSED, SKIPPED) or (result.status == ERROR and result.max_points == 0)


def apply_gates(rubric: dict, assignment: str, results: Sequence[CheckResult]) -> None:
    """Take the points of gated checks back when a main check they need failed (in place).

    ``results`` hold every check of one or more functions (a function's checks are
    always graded together)."""
    by_id = {r.id: r for r in results}
    gates: dict[str, Gate] = {}
    for result in results:
        if result.kind != "check" or result.points <= 0:
            continue
        gate = gates.get(result.function) or gates.setdefault(result.function, gate_for(rubric, assignment, result.function))
        failed = [m for m in gate.required(result.id) if not _main_ok(by_id.get(m))]
        if failed:
            names = ", ".join(f"`{m}`" for m in failed)
            note = ("counts only when the main check" + ("s " if len(failed) > 1 else " ") + names
                    + (" pass" if len(failed) > 1 else " passes")
                    + " (shapes, edge cases and the visible cases can be met without computing the function)")
            result.message = f"correct here, but it {note}" if result.status == PASSED else \
                f"{result.message}; partial points: it {note}"
            result.status, result.points = FAILED, 0.0
