"""The README's main job end to end, shortened: ``python -m solutions main``
with two iterations per detector on a freshly generated embedded dataset.

It proves the command wires every piece together (dataset, both reference
detectors, engine, inference in original pixels, VOC mAP, plots) and writes
every file the README promises; the learning itself is tested by the overfit
tests and measured by the full run (see the README).  About a minute on the
2-core CPU, most of it inference of the untrained models.
"""

from __future__ import annotations

import json

import pytest

from solutions.__main__ import main

pytestmark = pytest.mark.slow

#: What the README says the main job writes, per detector.
PER_DETECTOR = ("loss_curve.png", "detections.png", "class_ap.png", "precision_recall.png", "ap_table.txt",
                "metrics.json", "checkpoint.pt", "detections.pt")


def test_main_job_trains_evaluates_and_writes_everything(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["main", "--iters", "2", "--data-root", str(tmp_path / "data"), "--out", str(out), "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    # --no-progress: no bar anywhere (tqdm writes "|...| n/N [..., x it/s]" to stderr), and each
    # long stage says when it starts and ends instead.
    assert "it/s" not in captured.err and "img/s" not in captured.err and "%|" not in captured.err, captured.err[-2000:]
    for stage in ("loading 256 train images into the cache", "training 2 iterations", "inference on 96 val images",
                  "VOC evaluation"):
        assert f"[fcos] {stage}" in printed and f"[faster_rcnn] {stage}" in printed, stage
    assert printed.count(": done in ") == 8
    assert (out / "samples.png").stat().st_size > 10_000
    for detector in ("fcos", "faster_rcnn"):
        for name in PER_DETECTOR:
            assert (out / detector / name).stat().st_size > 0, f"{detector}/{name} missing or empty"
        metrics = json.loads((out / detector / "metrics.json").read_text())
        assert metrics["iterations"] == 2
        assert 0.0 <= metrics["map_voc07"] <= 1.0 and 0.0 <= metrics["map_all_point"] <= 1.0
        assert metrics["eval_images"] == 96 and metrics["eval_split"] == "val"
        assert (metrics["memory_format"], metrics["fused_optimizer"]) == ("channels_last", True), "the main job's recipe"
        assert f"{detector}: VOC07 mAP" in printed
        table = (out / detector / "ap_table.txt").read_text()
        assert "aeroplane" in table and "96 images" in table
    summary = json.loads((out / "metrics.json").read_text())
    assert sorted(summary) == ["faster_rcnn", "fcos"]
    # Two iterations are not the recipe: no range to compare with, and the job says so.
    assert summary["fcos"]["expected"] is None
    assert "no reference range for 2 iterations" in printed
    assert "| fcos |" in (out / "summary.md").read_text()


def test_main_job_rejects_an_unknown_detector(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["main", "--detectors", "yolo", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown detector" in capsys.readouterr().err
