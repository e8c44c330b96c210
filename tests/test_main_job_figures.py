"""The main job's expected range: computed from the recorded seed runs, printed
next to a result, and the same figures as the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data_utils import main_job_figures
from data_utils.experiment import DETECTORS

README = Path(__file__).resolve().parents[1] / "README.md"


def _run(recipe: str, seed: int, fcos: float) -> dict:
    return {"recipe": recipe, "seed": seed, "threads": 2, "total_seconds": 1.0,
            "detectors": {"fcos": {"map_voc07": fcos, "map_all_point": fcos, "train_seconds": 1.0}}}


def test_expectation_says_where_a_result_lies(monkeypatch):
    monkeypatch.setattr(main_job_figures, "RUNS", [_run("channels_last", s, v) for s, v in enumerate((0.34, 0.36, 0.38))]
                        + [_run("contiguous", 0, 0.10)])
    stats = main_job_figures.summary("channels_last", "fcos")
    assert stats == pytest.approx({"mean": 0.36, "min": 0.34, "max": 0.38, "runs": 3})
    say = lambda value, **kw: main_job_figures.expectation(  # noqa: E731  (a short local helper)
        "fcos", value, recipe=kw.get("recipe", "channels_last"), iterations=kw.get("iterations", 600))
    assert "expected 34.0-38.0% (mean 36.0% over 3 seeds" in say(0.35) and say(0.35).endswith("within the range")
    assert say(0.335).endswith("within the range"), "a point of slack below the lowest seed"
    assert "BELOW the measured range" in say(0.30) and "./run test" in say(0.30)
    assert "ABOVE the measured range" in say(0.45)
    assert "expected 10.0-10.0%" in say(0.10, recipe="contiguous"), "each recipe has its own range"
    assert "no reference range for 100 iterations" in say(0.30, iterations=100)
    assert "no recorded runs" in main_job_figures.expectation("faster_rcnn", 0.3, recipe="channels_last",
                                                              iterations=600)


def test_recorded_runs_cover_three_seeds_of_each_recipe_and_detector():
    for recipe in ("channels_last", "contiguous"):
        for detector in DETECTORS:
            seeds = {run["seed"] for run in main_job_figures.RUNS
                     if run["recipe"] == recipe and detector in run["detectors"]}
            assert len(seeds) >= 3, f"{recipe} {detector}: only seeds {sorted(seeds)} recorded"


def test_readme_table_shows_the_recorded_mean_and_range():
    text = README.read_text()
    for detector, label in (("fcos", "FCOS"), ("faster_rcnn", "Faster R-CNN")):
        stats = main_job_figures.summary("channels_last", detector)
        row = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \| ([^|]+) \|", text, re.MULTILINE)
        assert row, f"README has no table row for {label}"
        assert row.group(1).strip() == f"{100 * stats['mean']:.1f}%", row.group(0)
        assert row.group(2).strip() == f"{100 * stats['min']:.1f}-{100 * stats['max']:.1f}%", row.group(0)
