"""The mAP gate (issue 12): checkpoints of any width, refused foreign files,
schedules per dataset, skipped-is-skipped, and CPU retraining on the
embedded dataset (slow)."""

from __future__ import annotations

import copy
import os
import pickle

import pytest
import torch

from data_utils.engine import save_checkpoint
from grader.functions import STUDENT_FUNCTIONS
from grader.map_gate import find_weights, load_weights, map_results, model_config, select_schedule
from grader.rubric import load_rubric
from grader.source import reference_source
from solutions.fcos import FCOS

SMALL = {"num_classes": 20, "fpn_channels": 16, "stem_channels": [16]}


def _checkpoint(path, config=SMALL, detector="fcos"):
    torch.manual_seed(0)
    model = FCOS(config["num_classes"], config["fpn_channels"], config["stem_channels"], weights=None)
    save_checkpoint(path, model, model_config={"detector": detector, **config})
    return path


def test_checkpoint_config_gives_the_width_and_foreign_files_are_refused(tmp_path):
    state, config = load_weights(_checkpoint(tmp_path / "w.pt"), "one_stage")
    gate = load_rubric()["one_stage"]["map"]
    built = model_config(gate, config, "FCOS")
    assert built["fpn_channels"] == 16 and built["stem_channels"] == [16]
    assert state["backbone.fpn_params.lateral_p3.weight"].shape[0] == 16
    with pytest.raises(ValueError, match="not of this assignment's FasterRCNN"):
        load_weights(tmp_path / "w.pt", "two_stage")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": object()}))
    with pytest.raises(ValueError, match="weights_only"):
        load_weights(tmp_path / "evil.pt", "one_stage")
    torch.save({"model": {"w": [1, 2]}}, tmp_path / "lists.pt")
    with pytest.raises(ValueError, match="state_dict"):
        load_weights(tmp_path / "lists.pt", "one_stage")
    torch.save(FCOS(20, 16, [16], weights=None).state_dict(), tmp_path / "bare.pt")
    state, config = load_weights(tmp_path / "bare.pt", "one_stage")  # a bare state dict: the rubric's config
    assert config == {} and model_config(gate, config, "FCOS")["fpn_channels"] == gate["config"]["fpn_channels"]


def test_faster_rcnn_checkpoint_shares_stem_channels_as_data_utils_builds_it():
    gate = load_rubric()["two_stage"]["map"]
    built = model_config(gate, {"detector": "faster_rcnn", "fpn_channels": 64, "stem_channels": (64, 64)}, "FasterRCNN")
    assert built["rpn_stem_channels"] == [64, 64] and built["fpn_channels"] == 64


def test_schedules_per_dataset():
    gate = load_rubric()["one_stage"]["map"]
    assert select_schedule(gate, "voc", None)[0] == "voc"
    name, schedule, _ = select_schedule(gate, "embedded", None)
    assert name == "embedded" and schedule["retrain"]["max_iters"] == 600 and schedule["config"]["fpn_channels"] == 64
    ci = select_schedule(gate, "embedded", gate["schedules"]["ci"]["retrain"]["max_iters"])
    assert ci[0] == "ci" and ci[1]["reference_map"] - ci[1]["margin"] > 0
    name, _, reason = select_schedule(gate, "embedded", 7)
    assert name is None and "no threshold is measured for 7 iterations" in reason
    for assignment in ("one_stage", "two_stage"):
        for schedule in (select_schedule(load_rubric()[assignment]["map"], d, None)[1] for d in ("voc", "embedded")):
            assert 0 < schedule["reference_map"] - schedule["margin"] < schedule["reference_map"]


def test_weights_are_found_in_the_submission_but_never_through_a_symlink(tmp_path):
    (tmp_path / "nb.ipynb").write_text("{}")
    assert find_weights(tmp_path / "nb.ipynb", "one_stage") is None
    (tmp_path / "sub").mkdir()
    _checkpoint(tmp_path / "sub" / "one_stage_weights.pt")
    assert find_weights(tmp_path / "sub", "one_stage") == tmp_path / "sub" / "one_stage_weights.pt"
    assert find_weights(tmp_path / "sub", "two_stage") is None
    (tmp_path / "link").mkdir()
    os.symlink(tmp_path / "sub" / "one_stage_weights.pt", tmp_path / "link" / "one_stage_weights.pt")
    assert find_weights(tmp_path / "link", "one_stage") is None


def test_a_gate_that_cannot_run_is_skipped_with_the_reason(tmp_path):
    rubric = copy.deepcopy(load_rubric())
    defined = set(STUDENT_FUNCTIONS["one_stage"])
    source = reference_source("one_stage")
    skipped = map_results(None, source, "one_stage", rubric, weights=None, defined=defined)[0]
    assert skipped.status == "skipped" and skipped.max_points == 0 and skipped.points == 0
    assert "one_stage_weights.pt" in skipped.message and "worth 10 points where it runs" in skipped.message
    if not torch.cuda.is_available():
        no_gpu = map_results(None, source, "one_stage", rubric, retrain=True, defined=defined)[0]
        assert no_gpu.status == "skipped" and "GPU" in no_gpu.message and "--device cpu" in no_gpu.message
    rubric["one_stage"]["map"]["embedded_fallback"] = False
    missing = map_results(None, source, "one_stage", rubric, weights=_checkpoint(tmp_path / "w.pt"),
                          voc_root=tmp_path / "nowhere", defined=defined)[0]
    assert missing.status == "skipped" and "VOC" in missing.message

    from grader.report import csv_row, gradescope_results
    from grader.results import GradeReport

    report = GradeReport("one_stage", "x", checks=[skipped])
    test = gradescope_results(report)["tests"][0]
    assert "status" not in test and test["name"].endswith("(skipped)") and test["output"].startswith("SKIPPED")
    assert csv_row("x", report)["map"] == "skipped"


@pytest.mark.slow
def test_weights_of_any_width_judged_in_the_parent_and_renamed_layers_too(tmp_path):
    from data_utils.synthetic import ensure_embedded_dataset
    from grader.sandbox import Sandbox

    rubric = copy.deepcopy(load_rubric())
    embedded = rubric["one_stage"]["map"]["schedules"]["embedded"]
    source = reference_source("one_stage")
    defined = set(STUDENT_FUNCTIONS["one_stage"])
    voc = ensure_embedded_dataset()
    weights = _checkpoint(tmp_path / "w.pt")  # FPN 16: not the rubric's 64
    with Sandbox(limits=rubric["limits"]["check"]) as sandbox:
        embedded.update(reference_map=0.0, margin=0.0)  # threshold 0: an untrained model passes
        passed = map_results(sandbox, source, "one_stage", rubric, weights=weights, defined=defined, dataset_dir=voc)[0]
        assert passed.status == "passed" and passed.points == 10 and "reference's inference" in passed.message, passed.message
        embedded.update(reference_map=0.99)
        failed = map_results(sandbox, source, "one_stage", rubric, weights=weights, defined=defined, dataset_dir=voc)[0]
        assert failed.status == "failed" and failed.points == 0 and "needed 0.990" in failed.message
        # A student whose FPN has its own names, and weights saved from their model: judged too.
        renamed = source.replace('f"lateral_{p}"', 'f"inner_{p}"').replace('self.fpn_params["lateral_', 'self.fpn_params["inner_')
        assert renamed != source
        payload = torch.load(weights, weights_only=True)
        payload["model"] = {k.replace("lateral_", "inner_"): v for k, v in payload["model"].items()}
        torch.save(payload, tmp_path / "renamed.pt")
        embedded.update(reference_map=0.0)
        ok = map_results(sandbox, renamed, "one_stage", rubric, weights=tmp_path / "renamed.pt", defined=defined, dataset_dir=voc)[0]
        assert ok.status == "passed" and "matched by shape" in ok.message, ok.message


#: A planted bug that keeps the notebook's layers: the class logits get no gradient.
NO_CLASS_GRADIENT = ("loss_cls = sigmoid_focal_loss(class_logits.float(), gt_classes",
                     "loss_cls = sigmoid_focal_loss(class_logits.float().detach(), gt_classes")


def _retrain_ci(source: str):
    from grader.grade import grade_source

    iters = load_rubric()["one_stage"]["map"]["schedules"]["ci"]["retrain"]["max_iters"]
    report = grade_source(source, "one_stage", functions=[], include_overfit=False, retrain=True, device="cpu",
                          retrain_iters=iters)
    return next(c for c in report.checks if c.kind == "map"), iters


@pytest.mark.slow
def test_cpu_retrain_with_the_ci_schedule_passes_the_reference():
    """`--retrain --device cpu --retrain-iters <ci>` on the embedded dataset: the CI threshold
    (the rubric's [one_stage.map.schedules.ci], measured from the reference) against a run."""
    result, iters = _retrain_ci(reference_source("one_stage"))
    assert result.status == "passed" and result.points == 10, result.message
    assert "ci schedule" in result.title and f"retrained {iters} iterations on cpu" in result.message


@pytest.mark.slow
def test_cpu_retrain_with_the_ci_schedule_fails_a_broken_detector():
    source = reference_source("one_stage")
    assert NO_CLASS_GRADIENT[0] in source
    result, _ = _retrain_ci(source.replace(*NO_CLASS_GRADIENT))
    assert result.status == "failed" and result.points == 0, result.message
