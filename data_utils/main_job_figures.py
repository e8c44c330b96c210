"""What the main job (``./run main``) reaches, measured: every recorded run of
its recipe per seed, and the range a newcomer should expect from them.

The main job is deterministic on one machine but not across CPUs: last-bit
floating-point differences (another CPU's vector width, another thread
count) change the trajectory of a 600-iteration training from a random
backbone, and with it the mAP by a few points.  A single figure cannot say
whether a result is fine; the spread over seeds can.

The block between ``MEASURED_ON`` and the end marker is written by
``python benchmarks/bench_main_job.py --full --seeds 0 1 2 --write``; do not
edit it by hand.  ``recipe`` is the training step's memory format
("channels_last" is the main job's, "contiguous" the previous recipe's).
"""

from __future__ import annotations

import statistics
from typing import Any

MEASURED_ON = 'AMD EPYC, 2 CPUs'

RUNS: list[dict[str, Any]] = []


# --- end of measured figures (everything below is code) ---

#: The iteration count the recorded runs used; other counts have no expected range.
RECIPE_ITERATIONS = 600


def summary(recipe: str, detector: str) -> dict[str, float] | None:
    """``{"mean", "min", "max", "runs"}`` of the recorded VOC07 mAPs (fractions), or None without runs."""
    values = [run["detectors"][detector]["map_voc07"] for run in RUNS
              if run["recipe"] == recipe and detector in run["detectors"]]
    if not values:
        return None
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "runs": len(values)}


def expectation(detector: str, map_voc07: float, *, recipe: str, iterations: int) -> str:
    """One line for the main job's output: the range to expect and whether ``map_voc07`` lies in it."""
    if iterations != RECIPE_ITERATIONS:
        return (f"(no reference range for {iterations} iterations; the recorded runs use {RECIPE_ITERATIONS})")
    stats = summary(recipe, detector)
    if stats is None:
        return f"(no recorded runs of the {recipe} recipe to compare with)"
    expected = (f"expected {100 * stats['min']:.1f}-{100 * stats['max']:.1f}% "
                f"(mean {100 * stats['mean']:.1f}% over {stats['runs']} seeds on {MEASURED_ON})")
    # A point of slack each side: three seeds do not bound the spread of a fourth machine.
    if stats["min"] - 0.01 <= map_voc07 <= stats["max"] + 0.01:
        return f"{expected}: within the range"
    if map_voc07 > stats["max"]:
        return f"{expected}: ABOVE the measured range (fine, but unusual: please report the machine)"
    return (f"{expected}: BELOW the measured range. Another CPU moves the figure a few points; far below "
            "(e.g. under half) means something is wrong: run ./run test")
