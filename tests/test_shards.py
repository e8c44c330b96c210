"""``grader batch --shard K/N`` and ``grader merge`` (fast: no grading runs here
except one tiny CLI round trip, marked slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.results import CheckResult, GradeReport
from grader.shards import merge_reports, parse_shard, select_shard

ROOT = Path(__file__).resolve().parents[1]


def _items(n):
    return [(f"student{i:03d}", Path(f"/x/student{i:03d}.ipynb")) for i in range(n)]


@pytest.mark.parametrize("n_items,n_shards", [(0, 3), (1, 4), (10, 3), (301, 8)])
def test_shards_partition_the_folder_deterministically(n_items, n_shards):
    items = _items(n_items)
    shards = [select_shard(items, f"{k}/{n_shards}") for k in range(1, n_shards + 1)]
    flat = [s for shard in shards for s, _ in shard]
    assert sorted(flat) == sorted(s for s, _ in items) and len(flat) == len(set(flat))  # disjoint, complete
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    shuffled = list(reversed(items))
    assert [select_shard(shuffled, f"{k}/{n_shards}") for k in range(1, n_shards + 1)] == shards  # order-independent


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_bad_shard_is_refused_with_the_fix(text):
    with pytest.raises(ValueError, match="K"):
        parse_shard(text)


def _report(student, score, assignment="two_stage"):
    report = GradeReport(assignment, f"{student}.py", student_id=student)
    report.checks.append(CheckResult("iou/sanity", "iou", "iou", True, 6.0, score, "passed" if score == 6 else "failed"))
    report.checks.append(CheckResult("map/FasterRCNN", "map", "map", True, 0.0, 0.0, "skipped", message="skipped: no weights",
                                     kind="map"))
    return report


def _write(folder, reports):
    folder.mkdir(parents=True, exist_ok=True)
    for r in reports:
        (folder / f"{r.student_id}.json").write_text(json.dumps(r.to_dict()))


def test_merge_joins_shards_and_refuses_overlaps_and_empty_shards(tmp_path):
    _write(tmp_path / "s1", [_report("alice", 6.0), _report("carol", 0.0)])
    _write(tmp_path / "s2", [_report("bob", 3.0)])
    rows = merge_reports([tmp_path / "s1", tmp_path / "s2"], tmp_path / "grades.csv")
    assert [r["student"] for r in rows] == ["alice", "bob", "carol"]
    table = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert [(r["student"], float(r["score"])) for r in table] == [("alice", 6.0), ("bob", 3.0), ("carol", 0.0)]
    assert all(r["map"] == "skipped" for r in table)  # a gate that did not run is not a 0
    _write(tmp_path / "s3", [_report("bob", 6.0)])
    with pytest.raises(ValueError, match="overlap"):
        merge_reports([tmp_path / "s2", tmp_path / "s3"], tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no reports"):
        merge_reports([tmp_path / "s1", tmp_path / "empty"], tmp_path / "x.csv")
    _write(tmp_path / "s4", [_report("dave", 6.0, "one_stage")])
    with pytest.raises(ValueError, match="assignment|report of"):
        merge_reports([tmp_path / "s1", tmp_path / "s4"], tmp_path / "x.csv")


@pytest.mark.slow
def test_batch_shards_then_merge_on_the_cli(tmp_path):
    from grader.source import reference_source, release_source

    folder = tmp_path / "subs"
    folder.mkdir()
    for name, source in (("ann", reference_source("two_stage")), ("ben", release_source("two_stage")),
                         ("cat", reference_source("two_stage"))):
        (folder / f"{name}.py").write_text(source)
    # Shard 1 as a Slurm array task would run it (the sbatch script, without Slurm), shard 2 by hand.
    env = {**os.environ, "SUBMISSIONS": str(folder), "ASSIGNMENT": "two_stage", "OUT": str(tmp_path), "NSHARDS": "2",
           "SLURM_ARRAY_TASK_ID": "1", "PYTHON": sys.executable, "GRADER_ROOT": str(ROOT),
           "GRADER_ARGS": "--no-overfit --no-map --functions iou"}
    proc = subprocess.run(["bash", str(ROOT / "grader" / "slurm" / "grade_array.sbatch")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "-a", "two_stage", "--out",
                           str(tmp_path / "shard-2.csv"), "--no-overfit", "--no-map", "--functions", "iou", "--shard", "2/2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    dirs = [tmp_path / "shard-1_reports", tmp_path / "shard-2_reports"]
    assert sorted(p.stem for p in dirs[0].glob("*.json")) == ["ann", "cat"] and [p.stem for p in dirs[1].glob("*.json")] == ["ben"]
    proc = subprocess.run([sys.executable, "-m", "grader", "merge", *map(str, dirs), "--out", str(tmp_path / "all.csv")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["student"]: float(r["score"]) for r in csv.DictReader((tmp_path / "all.csv").open())}
    assert rows == {"ann": 6.0, "ben": 0.0, "cat": 6.0}
    bad = subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "-a", "two_stage", "--shard", "3/2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "between 1 and N" in bad.stderr
