"""The main job's expected range: computed from the recorded seed runs, printed
next to a result, and the same figures as the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from solutions import main_job_figures
from solutions.presets import DETECTORS, STEP_RECIPES

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(recipe: str, seed: int, fcos: float, machine: str = "CPU A, 2 CPUs") -> dict:
    return {"recipe": recipe, "seed": seed, "threads": 2, "total_seconds": 1.0, "machine": machine,
            "detectors": {"fcos": {"map_voc07": fcos, "map_all_point": fcos, "train_seconds": 1.0}}}


def test_expectation_says_where_a_result_lies(monkeypatch):
    monkeypatch.setattr(main_job_figures, "RUNS", [_run("channels_last", s, v) for s, v in enumerate((0.34, 0.36))]
                        + [_run("contiguous", 0, 0.38, machine="CPU B, 2 CPUs")])
    assert main_job_figures.summary("fcos") == pytest.approx({"mean": 0.36, "min": 0.34, "max": 0.38, "runs": 3})
    assert main_job_figures.summary("fcos", "contiguous") == pytest.approx(
        {"mean": 0.38, "min": 0.38, "max": 0.38, "runs": 1}), "one memory format's runs on request"

    def say(value: float, iterations: int = 600) -> str:
        return main_job_figures.expectation("fcos", value, iterations=iterations)

    assert "expected 34.0-38.0% (mean 36.0% over 3 recorded runs on CPU A, 2 CPUs; CPU B, 2 CPUs)" in say(0.35)
    assert say(0.35).endswith("within the range")
    assert say(0.335).endswith("within the range"), "a point of slack below the lowest run"
    assert "BELOW the measured range" in say(0.30) and "./run test" in say(0.30)
    assert "ABOVE the measured range" in say(0.45)
    assert "no reference range for 100 iterations" in say(0.30, iterations=100)
    assert "no recorded runs" in main_job_figures.expectation("faster_rcnn", 0.3, iterations=600)


def test_recorded_runs_cover_three_seeds_of_each_detector():
    for detector in DETECTORS:
        runs = [run for run in main_job_figures.RUNS if detector in run["detectors"]]
        seeds = sorted({run["seed"] for run in runs})
        assert len(seeds) >= 3, f"{detector}: runs of seeds {seeds} only; record at least three seeds"
        for run in runs:
            assert 0.0 < run["detectors"][detector]["map_voc07"] < 1.0
            assert run["machine"] and run["recipe"] in STEP_RECIPES, run


def test_readme_table_shows_the_recorded_mean_and_range():
    text = README.read_text()
    for detector, label in (("fcos", "FCOS"), ("faster_rcnn", "Faster R-CNN")):
        stats = main_job_figures.summary(detector)
        row = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \| ([^|]+) \|", text, re.MULTILINE)
        assert row, f"README has no table row for {label}"
        assert row.group(1).strip() == f"{100 * stats['mean']:.1f}%", row.group(0)
        assert row.group(2).strip() == f"{100 * stats['min']:.1f}-{100 * stats['max']:.1f}%", row.group(0)


def test_rubric_embedded_gates_follow_the_recorded_runs():
    """The mAP gate on the embedded dataset retrains the main job's schedule: its reference is the
    recorded mean and its threshold sits below every recorded run (a correct detector on another
    machine must pass), yet far above an untrained detector's ~0%."""
    from grader.rubric import load_rubric

    rubric = load_rubric()
    for assignment, detector in (("one_stage", "fcos"), ("two_stage", "faster_rcnn")):
        schedule = rubric[assignment]["map"]["schedules"]["embedded"]
        stats = main_job_figures.summary(detector)
        assert schedule["reference_map"] == pytest.approx(stats["mean"], abs=0.0005), (assignment, stats)
        threshold = schedule["reference_map"] - schedule["margin"]
        assert 0.15 <= threshold <= stats["min"] - 0.02, (assignment, threshold, stats)
        assert schedule["retrain"]["max_iters"] == main_job_figures.RECIPE_ITERATIONS
