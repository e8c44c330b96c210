"""The overfit test: the student's detector, built from their own functions and
classes, must fit a handful of images.

Setting (``[<assignment>.overfit]`` in ``grader/rubric.toml``): the first
``num_images`` training images of the embedded offline dataset
(:func:`data_utils.data.synthetic.ensure_embedded_dataset`), resized to
``image_size`` px, trained full-batch with SGD (momentum 0.9, weight decay
1e-4) on the CPU in the sandbox.  The RegNet trunk (given code) stays frozen at
its seeded random initialisation: the test is about what students write (FPN,
heads, targets, losses), and the frozen trunk makes it fit the time budget of
this 2-core machine.  FCOS's loss normalizer starts at this data's number of
positive locations per image instead of 150 (without that, the curve first
*rises* while the running average settles, see :mod:`solutions.fcos`).

Judging (issue 11): the sandbox trains for exactly ``iters`` iterations (one thread) and
returns the trained ``state_dict`` -- nothing else it returns is trusted.
The grader loads those weights into the *reference* model of the same
configuration (:mod:`grader.reference_judge`; FPN conv names may differ) and
computes the *reference's* loss on the overfit images in its own process,
with the normalizer fixed at the data's positives per image.  Full points:
that loss is below ``threshold``; half: below ``partial_threshold``.  The
thresholds come from the reference's own run (see the rubric comments).  A
constant loss, or a replaced training procedure, returns untrained (or no)
weights and fails.  The student's own loss curve is shown as information only.

A bug costs points in one place (issue 13): functions that failed their own
checks (or are missing) are answered by the reference through the oracle
during the overfit run, and ``DetectorBackboneWithFPN`` by the harness's
given backbone; the message names them.  The detector classes themselves
(``FCOS``; ``FasterRCNN`` and ``RPN``) and the prediction heads must be the
student's: without them there is nothing of theirs to train; so must the
two functions the training gradient flows through (``flatten_anchor_predictions``,
``pool_roi_features``: an oracle's answer is plain data, without gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from data_utils.conventions import FPN_STRIDES
from data_utils.data.voc import IMAGENET_MEAN, IMAGENET_STD
from grader.functions import CLASSES, STUDENT_FUNCTIONS
from grader.results import ERROR, FAILED, PASSED, SKIPPED, TIMEOUT, CheckResult
from grader.rubric import limits_for


def overfit_data(settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 3, S, S), gt_boxes (N, 40, 5))`` of the overfit test."""
    from data_utils.data.synthetic import ensure_embedded_dataset
    from data_utils.data.voc import VOCDetection

    dataset = VOCDetection(ensure_embedded_dataset(), "train")
    n = int(settings["num_images"])
    images = torch.stack([dataset.load_uint8(i) for i in range(n)])
    gt = torch.stack([dataset.target(i) for i in range(n)]).float()
    size = int(settings.get("image_size", images.shape[-1]))
    if size != images.shape[-1]:
        scale = size / images.shape[-1]
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = images.round().clamp(0, 255).to(torch.uint8)
        real = gt[..., 4:5] >= 0
        gt[..., :4] = torch.where(real, gt[..., :4] * scale, gt[..., :4])
    return images, gt


def positives_per_image(images: torch.Tensor, gt: torch.Tensor) -> float:
    """Mean positive FCOS locations per image (reference matching)."""
    from solutions.fcos_targets import fcos_match_locations_to_gt
    from solutions.locations import get_fpn_location_coords

    size = images.shape[-1]
    shapes = {k: (1, 1, math.ceil(size / s), math.ceil(size / s)) for k, s in FPN_STRIDES.items()}
    matched = fcos_match_locations_to_gt(get_fpn_location_coords(shapes, FPN_STRIDES), FPN_STRIDES, gt)
    return float(sum(int((m[..., 4] >= 0).sum()) for m in matched.values())) / len(images)


def overfit_spec(assignment: str, settings: dict, threads: int = 1) -> dict:
    images, gt = overfit_data(settings)
    spec = {
        "op": "overfit", "model": settings["model"], "config": dict(settings["config"]),
        "pixel_mean": list(IMAGENET_MEAN), "pixel_std": list(IMAGENET_STD),
        "images": images, "gt_boxes": gt, "iters": int(settings["iters"]), "batch_size": int(settings["batch_size"]),
        "lr": float(settings["lr"]), "momentum": 0.9, "weight_decay": 1e-4, "seed": int(settings.get("seed", 0)),
        # No early stop: the judged weights are those after exactly ``iters`` iterations
        # (stopping on the student's own loss would let that loss decide).
        "window": int(settings["window"]), "stop_below": None,
        "freeze_trunk": bool(settings.get("freeze_trunk", True)),
    }
    if settings["model"] == "FCOS":
        spec["normalizer"] = positives_per_image(images, gt)
    return spec


#: Classes the overfit run cannot take from the reference: the detector and its heads are what it trains.
OWN_CLASSES = {"one_stage": ("FCOS", "FCOSPredictionNetwork"), "two_stage": ("FasterRCNN", "RPN", "RPNPredictionNetwork")}
#: Classes the harness can stand in for (its given backbone).
GIVEN_CLASSES = ("DetectorBackboneWithFPN",)
#: Functions whose outputs carry the gradient of training: an oracle answer (plain data
#: computed in the grader) would cut it, so the student's version is used even when it failed.
DIFFERENTIABLE = ("flatten_anchor_predictions", "pool_roi_features")


def failed_functions(checks) -> list[str]:
    """Functions with a check that neither passed nor was skipped (from a report's checks)."""
    failed = []
    for check in checks:
        if getattr(check, "kind", "check") not in ("overfit", "map") and check.status not in (PASSED, SKIPPED):
            if check.function not in failed:
                failed.append(check.function)
    return failed


def judge_loss(value: float, settings: dict) -> tuple[str, float, str]:
    """``(status, fraction, message)`` from the reference loss of the student's trained weights."""
    threshold = float(settings["threshold"])
    partial = float(settings.get("partial_threshold", threshold))
    if not math.isfinite(value):
        return FAILED, 0.0, "the trained weights give a NaN/inf loss (check divisions, logs of zero, background rows in the losses)"
    if value < threshold:
        return PASSED, 1.0, f"the reference loss of your trained model is {value:.3g} (needed < {threshold:g})"
    if value < partial:
        return FAILED, 0.5, (f"the reference loss of your trained model is {value:.3g}: below {partial:g} (half the points) "
                             f"but not below {threshold:g}")
    return FAILED, 0.0, (f"your model did not learn: the reference loss of your trained model is {value:.3g} "
                         f"(needed < {threshold:g}; an untrained model scores about {settings.get('untrained_loss', 4.9):g}). "
                         "Check that predictions keep their gradients (no .detach()/no_grad in forward), that targets "
                         "line up with predictions, and that the losses are summed as specified")


def overfit_results(sandbox, source: str, assignment: str, rubric: dict, *, defined: set[str], load_failure=None,
                    threads: int = 1, failed: list[str] | tuple[str, ...] = ()) -> list[CheckResult]:
    """The overfit test's result (see the module docstring); ``failed``: functions that failed their own checks."""
    from grader.reference_judge import load_reference, reference_loss

    settings = rubric[assignment]["overfit"]
    model = settings["model"]
    title = (f"overfit: your {model} (your own functions) trains on {settings['num_images']} images for "
             f"{settings['iters']} iterations; the reference loss of the trained weights < {settings['threshold']:g}")
    result = CheckResult(f"overfit/{model}", "overfit", title, True, float(settings["points"]), kind="overfit")
    if load_failure is not None:
        result.status, result.message = ERROR, "not run: your code could not be loaded"
        return [result]
    own = OWN_CLASSES[assignment]
    missing = [n for n in own if n not in defined]
    if missing:
        result.status, result.message = FAILED, f"not run: {', '.join(missing)} not defined"
        return [result]
    # Functions that failed (or lack) their own checks come from the reference: a bug costs its points once.
    replaced = [n for n in STUDENT_FUNCTIONS[assignment]
                if n not in own and n not in DIFFERENTIABLE and (n in failed or n not in defined)
                and (n not in CLASSES or n in GIVEN_CLASSES)]
    kept_failing = [n for n in failed if n in own or n in DIFFERENTIABLE]
    unusable = [n for n in DIFFERENTIABLE if n in STUDENT_FUNCTIONS[assignment] and n not in defined]
    if unusable:
        result.status, result.message = FAILED, (f"not run: {', '.join(unusable)} not defined (the training "
                                                 "gradient flows through it, so the reference cannot stand in)")
        return [result]
    limits = limits_for(rubric, "overfit")
    spec = overfit_spec(assignment, settings)
    # One intra-op thread: the trajectory depends on the thread count (the thresholds were
    # measured with one), and on a loaded 2-core machine two threads ran several times slower.
    values, failure, output = _run_job(sandbox, source, assignment, spec, replaced, defined,
                                       limits={**limits, "threads": 1})
    result.output = output[-4000:]
    notes = ""
    if replaced:
        notes += f" The grader's reference stood in for {', '.join(replaced)} (failed or missing in their own checks)."
    if kept_failing:
        notes += f" Your {', '.join(kept_failing)} failed some of its own checks and was used as is."
    if failure is not None:
        result.status = TIMEOUT if failure.status == "timeout" else ERROR
        result.message = failure.describe() + notes
        if failure.status == "timeout":
            result.message += f" (the overfit test may take at most {limits['wall_seconds']:.0f} s)"
        return [result]
    value = values[0] if isinstance(values[0], dict) else {}
    state = value.get("state_dict")
    history = value.get("history", {}).get("total", []) if isinstance(value.get("history"), dict) else []
    if isinstance(history, list) and all(isinstance(v, (int, float)) for v in history):
        result.detail = "your loss (as your code reports it, not graded): " + ", ".join(f"{float(v):.3f}" for v in history[:200])
    if not isinstance(state, dict) or not state:
        result.status, result.message = FAILED, "the overfit run returned no trained weights" + notes
        return [result]
    try:
        reference, renamed = load_reference(model, settings["config"], state)
    except (ValueError, RuntimeError) as error:
        result.status, result.message = FAILED, f"your trained weights cannot be judged: {str(error)[:600]}" + notes
        return [result]
    losses = reference_loss(reference, spec["images"], spec["gt_boxes"], normalizer=spec.get("normalizer"),
                            seed=int(settings.get("seed", 0)))
    status, fraction, message = judge_loss(losses["total"], settings)
    result.status, result.points = status, round(result.max_points * fraction, 4)
    parts = ", ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in losses.items() if k != "total")
    seconds = value.get("seconds", 0)
    seconds = float(seconds) if isinstance(seconds, (int, float)) else 0.0
    result.message = f"{message} ({parts}) [{seconds:.0f} s]" + notes
    if renamed:
        result.message += f" (your FPN/stem layers were matched by shape: {', '.join(renamed[:6])})"
    return [result]


def _run_job(sandbox, source: str, assignment: str, spec: dict, replaced: list[str], defined: set[str], *, limits: dict):
    """One sandbox job with ``replaced`` (and missing dependencies) answered by the reference;
    ``(values, failing outcome, output)`` as :func:`grader.jobs.run_jobs` returns them."""
    from grader import checks as checks_module
    from grader.functions import DEPENDENCIES
    from grader.jobs import run_jobs

    missing_deps = [n for n in DEPENDENCIES[assignment] if n not in defined]
    oracle = [n for n in dict.fromkeys([*replaced, *missing_deps]) if n not in CLASSES]
    # Classes the harness supplies: the student's failed backbone, or a reused one they lack.
    given = [n for n in dict.fromkeys([*replaced, *missing_deps]) if n in CLASSES]
    if not oracle and not given:
        return run_jobs(sandbox, source, assignment, None, [spec], isolate=False, defined=defined, limits=limits)
    outcome = sandbox.run(source, spec, limits=limits, oracle=oracle, oracle_handler=checks_module.oracle_handler,
                          given_classes=given)
    output = outcome.stdout or ""
    if outcome.blocked_imports:
        outcome.status, outcome.error_type = "error", "ImportError"
        outcome.error = f"your code tried to import {', '.join(sorted(set(outcome.blocked_imports)))}: not allowed"
        outcome.traceback = ""
        return None, outcome, output
    if not outcome.ok:
        from grader.submission_text import relabel_lines

        outcome.traceback = relabel_lines(outcome.traceback or "", source)
        return None, outcome, output
    return [outcome.value], None, output
