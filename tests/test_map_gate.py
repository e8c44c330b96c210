"""The mAP gate (issue 12): checkpoints of any width, refused foreign files,
schedules per dataset, skipped-is-skipped, and CPU retraining on the
embedded dataset (slow)."""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from data_utils.training.engine import save_checkpoint
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
        assignment_gate = load_rubric()[assignment]["map"]
        ci = select_schedule(assignment_gate, "embedded", assignment_gate["schedules"]["ci"]["retrain"]["max_iters"])
        assert ci[0] == "ci" and 0 < ci[1]["reference_map"] - ci[1]["margin"] < ci[1]["reference_map"]


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
    from data_utils.data.synthetic import ensure_embedded_dataset
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


#: The two-stage counterpart: the ROI head's class logits get no gradient (the RPN still learns).
NO_ROI_CLASS_GRADIENT = ("loss_cls = F.cross_entropy(logits, targets",
                         "loss_cls = F.cross_entropy(logits.detach(), targets")


def _retrain_ci(source: str, assignment: str = "one_stage"):
    from grader.grade import grade_source

    iters = load_rubric()[assignment]["map"]["schedules"]["ci"]["retrain"]["max_iters"]
    report = grade_source(source, assignment, functions=[], include_overfit=False, retrain=True, device="cpu",
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


@pytest.mark.slow
def test_two_stage_cpu_retrain_with_the_ci_schedule_passes_the_reference():
    """The same gate for Faster R-CNN: [two_stage.map.schedules.ci], measured from the reference."""
    result, iters = _retrain_ci(reference_source("two_stage"), "two_stage")
    assert result.status == "passed" and result.points == 10, result.message
    assert "ci schedule" in result.title and f"retrained {iters} iterations on cpu" in result.message


@pytest.mark.slow
def test_two_stage_cpu_retrain_with_the_ci_schedule_fails_a_broken_detector():
    source = reference_source("two_stage")
    assert NO_ROI_CLASS_GRADIENT[0] in source
    result, _ = _retrain_ci(source.replace(*NO_ROI_CLASS_GRADIENT), "two_stage")
    assert result.status == "failed" and result.points == 0, result.message


def _small_voc(root, n_train: int):
    """A VOC-layout folder (tests/voc_factory.py): ``n_train`` train and 2 val images at 224px."""
    from tests.voc_factory import Img, Obj, write_voc

    def images(prefix, n):
        return [Img(f"{prefix}{i:03d}", 224, 224, [Obj("dog", (20 + i, 30, 120 + i, 150))]) for i in range(n)]

    return write_voc(root, {"train": images("t", n_train), "val": images("v", 2)})


def _tiny_retrain_rubric():
    """The rubric with a 2-iteration, FPN-16 retrain on real-VOC-layout data and threshold 0."""
    rubric = copy.deepcopy(load_rubric())
    gate = rubric["one_stage"]["map"]
    gate.update(  # the top-level table is the real-VOC schedule
        config=dict(SMALL), reference_map=0.0, margin=0.0,
        retrain={"batch_size": 2, "max_iters": 2, "lr": 0.001, "warmup_iters": 1})
    return rubric, gate


@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_retrain_keeps_the_image_cache_out_of_a_scratch_smaller_than_it(request, monkeypatch, mode):
    """Real VOC train (2501 images) is ~377 MB as uint8, more than the sandbox's 256 MiB scratch:
    here 16 images (2.4 MB) against a 1 MiB scratch.  The old code wrote the cache file there
    (ENOSPC / "wrote more than 1 MiB": the reference got an error, a student's zero)."""
    from types import SimpleNamespace

    import grader.sandbox as sandbox_module

    if mode == "bwrap" and sandbox_module.detect_mode("auto")[0] != "bwrap":
        pytest.skip("bubblewrap does not work on this machine")
    # Readable by the sandbox's unprivileged uid (pytest's tmp_path is the grader's, mode 0700).
    root = tempfile.mkdtemp(prefix="voc-scratch-test-", dir="/tmp")
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    os.chmod(root, 0o755)
    voc = _small_voc(Path(root), 16)
    rubric, _ = _tiny_retrain_rubric()
    monkeypatch.setattr(sandbox_module, "BWRAP_SCRATCH_BYTES", 1 << 20)
    rubric["limits"]["retrain"]["scratch_bytes"] = 1 << 20
    result = map_results(SimpleNamespace(mode=mode), reference_source("one_stage"), "one_stage", rubric, retrain=True,
                         device="cpu", defined=set(STUDENT_FUNCTIONS["one_stage"]), dataset_dir=voc)[0]
    assert result.status == "passed" and "retrained 2 iterations on cpu" in result.message, result.message


def test_retrain_memory_too_small_for_the_cache_is_the_graders_problem_not_a_zero(tmp_path):
    from grader.grade import GraderInfrastructureError

    voc = _small_voc(tmp_path, 4)
    rubric, _ = _tiny_retrain_rubric()
    rubric["limits"]["retrain"]["memory_mb"] = 512
    with pytest.raises(GraderInfrastructureError, match=r"may use 512 MiB: raise memory_mb in \[limits.retrain\]"):
        map_results(None, reference_source("one_stage"), "one_stage", rubric, retrain=True, device="cpu",
                    defined=set(STUDENT_FUNCTIONS["one_stage"]), dataset_dir=voc)
