"""What the main job (``./run main``) reaches, measured: every recorded run of
its recipe per seed, and the range a newcomer should expect from them.

The main job is deterministic on one machine but not across CPUs: last-bit
floating-point differences (another CPU's vector width, another thread
count) change the trajectory of a 600-iteration training from a random
backbone, and with it the mAP by a few points.  A single figure cannot say
whether a result is fine; the spread over seeds can.

The block between ``RUNS`` and the end marker is written by
``python benchmarks/bench_main_job.py --full --seeds 0 1 2 --write``; do not
edit it by hand.  ``recipe`` names the training step's recipe in
:data:`solutions.presets.STEP_RECIPES` ("channels_last_fused" is the main
job's; "channels_last" and "contiguous" the earlier ones, contiguous with
AdamW's per-parameter loop being the notebooks' step and the main job's first);
all compute the same function (the first losses agree to 1e-4,
tests/test_engine.py) and differ only in the last bits, like two CPUs, so the
expected range pools them.  Runs on different machines are pooled for the
same reason: the CPU moves a run from a random backbone as much as the seed.
"""

from __future__ import annotations

import statistics
from typing import Any

RUNS: list[dict[str, Any]] = [{'detectors': {'faster_rcnn': {'map_all_point': 0.3695, 'map_voc07': 0.383, 'train_seconds': 902.4},
                'fcos': {'map_all_point': 0.2722, 'map_voc07': 0.2791, 'train_seconds': 3305.4}},
  'machine': 'AMD EPYC, 2 CPUs',
  'recipe': 'channels_last',
  'seed': 0,
  'threads': 1,
  'total_seconds': 4240.0},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.3926, 'map_voc07': 0.3976, 'train_seconds': 902.6},
                'fcos': {'map_all_point': 0.3211, 'map_voc07': 0.3376, 'train_seconds': 3280.7}},
  'machine': 'AMD EPYC, 2 CPUs',
  'recipe': 'channels_last',
  'seed': 1,
  'threads': 1,
  'total_seconds': 4222.0},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.4133, 'map_voc07': 0.4264, 'train_seconds': 526.4},
                'fcos': {'map_all_point': 0.3471, 'map_voc07': 0.3653, 'train_seconds': 392.2}},
  'machine': 'AMD EPYC, 2 CPUs',
  'recipe': 'channels_last',
  'seed': 2,
  'threads': 2,
  'total_seconds': 930.0},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.4004, 'map_voc07': 0.408, 'train_seconds': 339.2},
                'fcos': {'map_all_point': 0.3891, 'map_voc07': 0.3934, 'train_seconds': 236.3}},
  'machine': 'Intel(R) Xeon(R) Processor, 2 CPUs',
  'recipe': 'channels_last_fused',
  'seed': 0,
  'threads': 2,
  'total_seconds': 583.0},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.3762, 'map_voc07': 0.3904, 'train_seconds': 365.8},
                'fcos': {'map_all_point': 0.3746, 'map_voc07': 0.3895, 'train_seconds': 243.4}},
  'machine': 'Intel(R) Xeon(R) Processor, 2 CPUs',
  'recipe': 'channels_last_fused',
  'seed': 1,
  'threads': 2,
  'total_seconds': 616.0},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.412, 'map_voc07': 0.4264, 'train_seconds': 332.8},
                'fcos': {'map_all_point': 0.3612, 'map_voc07': 0.3729, 'train_seconds': 234.2}},
  'machine': 'Intel(R) Xeon(R) Processor, 2 CPUs',
  'recipe': 'channels_last_fused',
  'seed': 2,
  'threads': 2,
  'total_seconds': 574.0},
 {'detectors': {'fcos': {'map_all_point': 0.3095, 'map_voc07': 0.3246, 'train_seconds': 3645.9}},
  'machine': 'AMD EPYC, 2 CPUs',
  'recipe': 'contiguous',
  'seed': 0,
  'threads': 1,
  'total_seconds': None},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.3659, 'map_voc07': 0.3776, 'train_seconds': 772.7},
                'fcos': {'map_all_point': 0.327, 'map_voc07': 0.3416, 'train_seconds': 375.4}},
  'machine': 'Intel(R) Xeon(R) Processor, 2 CPUs',
  'recipe': 'contiguous',
  'seed': 0,
  'threads': 2,
  'total_seconds': 1156.0},
 {'detectors': {'fcos': {'map_all_point': 0.366, 'map_voc07': 0.3765, 'train_seconds': 3662.1}},
  'machine': 'AMD EPYC, 2 CPUs',
  'recipe': 'contiguous',
  'seed': 1,
  'threads': 1,
  'total_seconds': None},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.3819, 'map_voc07': 0.4003, 'train_seconds': 410.1},
                'fcos': {'map_all_point': 0.3151, 'map_voc07': 0.3284, 'train_seconds': 306.6}},
  'machine': 'Intel(R) Xeon(R) Processor, 2 CPUs',
  'recipe': 'contiguous',
  'seed': 1,
  'threads': 2,
  'total_seconds': 725.0},
 {'detectors': {'faster_rcnn': {'map_all_point': 0.3855, 'map_voc07': 0.3914, 'train_seconds': 555.5},
                'fcos': {'map_all_point': 0.3815, 'map_voc07': 0.3925, 'train_seconds': 547.3}},
  'machine': 'Intel(R) Xeon(R) Processor, 2 CPUs',
  'recipe': 'contiguous',
  'seed': 2,
  'threads': 2,
  'total_seconds': 1110.0}]


# --- end of measured figures (everything below is code) ---

#: The iteration count the recorded runs used; other counts have no expected range.
RECIPE_ITERATIONS = 600


def summary(detector: str, recipe: str | None = None, runs: list[dict[str, Any]] | None = None
            ) -> dict[str, float] | None:
    """``{"mean", "min", "max", "runs"}`` of the VOC07 mAPs (fractions) of ``detector`` in ``runs``
    (default: the recorded :data:`RUNS`; of one memory format when ``recipe`` is given), or None
    without runs."""
    values = [run["detectors"][detector]["map_voc07"] for run in (RUNS if runs is None else runs)
              if detector in run["detectors"] and recipe in (None, run["recipe"])]
    if not values:
        return None
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "runs": len(values)}


def machines(runs: list[dict[str, Any]] | None = None) -> list[str]:
    """The machines the runs (default: the recorded :data:`RUNS`) were measured on, each once, sorted."""
    return sorted({run["machine"] for run in (RUNS if runs is None else runs)})


def expected(detector: str, iterations: int) -> dict[str, float] | None:
    """:func:`summary` of the recorded runs when a run of ``iterations`` is comparable with them, else None."""
    return summary(detector) if iterations == RECIPE_ITERATIONS else None


def expectation(detector: str, map_voc07: float, *, iterations: int) -> str:
    """One line for the main job's output: the range to expect and whether ``map_voc07`` lies in it."""
    if iterations != RECIPE_ITERATIONS:
        return f"(no reference range for {iterations} iterations; the recorded runs use {RECIPE_ITERATIONS})"
    stats = summary(detector)
    if stats is None:
        return "(no recorded runs to compare with)"
    expected = (f"expected {100 * stats['min']:.1f}-{100 * stats['max']:.1f}% "
                f"(mean {100 * stats['mean']:.1f}% over {stats['runs']} recorded runs on {'; '.join(machines())})")
    # A point of slack each side: a handful of runs does not bound the spread of another machine.
    if stats["min"] - 0.01 <= map_voc07 <= stats["max"] + 0.01:
        return f"{expected}: within the range"
    if map_voc07 > stats["max"]:
        return f"{expected}: ABOVE the measured range (fine, but unusual: please report the machine)"
    return (f"{expected}: BELOW the measured range. Another CPU moves the figure a few points; far below "
            "(e.g. under half) means something is wrong: run ./run test")
