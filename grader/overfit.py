"""The overfit test: the student's detector, built from their own functions and
classes, must fit a handful of images.

Setting (``[<assignment>.overfit]`` in ``grader/rubric.toml``): the first
``num_images`` training images of the embedded offline dataset
(:func:`data_utils.synthetic.ensure_embedded_dataset`), resized to
``image_size`` px, trained full-batch with SGD (momentum 0.9, weight decay
1e-4) on the CPU in the sandbox.  The RegNet trunk (given code) stays frozen at
its seeded random initialisation: the test is about what students write (FPN,
heads, targets, losses), and the frozen trunk makes it fit the time budget of
this 2-core machine.  FCOS's loss normalizer starts at this data's number of
positive locations per image instead of 150 (without that, the curve first
*rises* while the running average settles, see :mod:`solutions.fcos`).

Pass: the mean total loss over ``window`` consecutive iterations drops below
``threshold`` within ``iters`` iterations (the run stops as soon as it does).
Half the points: it ends below ``partial_threshold``.  The thresholds come
from the reference's own curve on this setting (see the rubric comments).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grader.functions import STUDENT_FUNCTIONS
from grader.results import ERROR, FAILED, PASSED, TIMEOUT, CheckResult
from grader.rubric import limits_for

STRIDES = {"p3": 8, "p4": 16, "p5": 32}


def overfit_data(settings: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 3, S, S), gt_boxes (N, 40, 5))`` of the overfit test."""
    from data_utils.synthetic import ensure_embedded_dataset
    from data_utils.voc import VOCDetection

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
    shapes = {k: (1, 1, math.ceil(size / s), math.ceil(size / s)) for k, s in STRIDES.items()}
    matched = fcos_match_locations_to_gt(get_fpn_location_coords(shapes, STRIDES), STRIDES, gt)
    return float(sum(int((m[..., 4] >= 0).sum()) for m in matched.values())) / len(images)


def overfit_spec(assignment: str, settings: dict, threads: int = 1) -> dict:
    images, gt = overfit_data(settings)
    spec = {
        "op": "overfit", "model": settings["model"], "config": dict(settings["config"]),
        "images": images, "gt_boxes": gt, "iters": int(settings["iters"]), "batch_size": int(settings["batch_size"]),
        "lr": float(settings["lr"]), "momentum": 0.9, "weight_decay": 1e-4, "seed": int(settings.get("seed", 0)),
        "window": int(settings["window"]), "stop_below": float(settings["threshold"]),
        "freeze_trunk": bool(settings.get("freeze_trunk", True)),
    }
    if settings["model"] == "FCOS":
        spec["normalizer"] = positives_per_image(images, gt)
    return spec


def judge_history(history: list[float], settings: dict) -> tuple[str, float, str]:
    """``(status, fraction, message)`` from a loss history."""
    window, threshold = int(settings["window"]), float(settings["threshold"])
    partial = float(settings.get("partial_threshold", threshold))
    if not history:
        return FAILED, 0.0, "no training iteration completed"
    if not all(math.isfinite(v) for v in history):
        at = next(i for i, v in enumerate(history) if not math.isfinite(v))
        return FAILED, 0.0, f"the loss became NaN/inf at iteration {at} (check divisions, logs of zero, background rows in the losses)"
    means = [sum(history[i - window + 1:i + 1]) / window for i in range(window - 1, len(history))]
    start = sum(history[:window]) / min(window, len(history))
    if means and min(means) < threshold:
        at = next(i for i, m in enumerate(means) if m < threshold) + window
        return PASSED, 1.0, (f"loss fell below {threshold:g} after {at} iterations "
                             f"(from {start:.3g}; limit {settings['iters']})")
    final = means[-1] if means else history[-1]
    if final < partial:
        return FAILED, 0.5, (f"loss went from {start:.3g} to {final:.3g} in {len(history)} iterations: below "
                             f"{partial:g} (half the points) but not below {threshold:g}")
    trend = "did not decrease" if final >= start - 1e-3 else "decreased too slowly"
    return FAILED, 0.0, (f"loss {trend}: from {start:.3g} to {final:.3g} in {len(history)} iterations (needed < {threshold:g}). "
                         "Check that predictions keep their gradients (no .detach()/no_grad in forward), that targets "
                         "line up with predictions, and that the losses are summed as specified")


def overfit_results(sandbox, source: str, assignment: str, rubric: dict, *, defined: set[str], load_failure=None,
                    threads: int = 1) -> list[CheckResult]:
    settings = rubric[assignment]["overfit"]
    model = settings["model"]
    title = (f"overfit: your {model} (your own functions) trains on {settings['num_images']} images; "
             f"loss < {settings['threshold']:g} within {settings['iters']} iterations")
    result = CheckResult(f"overfit/{model}", "overfit", title, True, float(settings["points"]), kind="overfit")
    needed = [n for n in STUDENT_FUNCTIONS[assignment]]
    missing = [n for n in needed if n not in defined and n in ("FCOS", "FasterRCNN", "RPN")]
    if load_failure is not None:
        result.status, result.message = ERROR, "not run: your code could not be loaded"
        return [result]
    if missing:
        result.status, result.message = FAILED, f"not run: {', '.join(missing)} not defined"
        return [result]
    limits = limits_for(rubric, "overfit")
    spec = overfit_spec(assignment, settings)
    from grader.grade import run_jobs

    values, failure, output = run_jobs(sandbox, source, assignment, None, [spec], isolate=False, defined=defined,
                                       limits={**limits, "threads": threads})
    result.output = output[-4000:]
    if failure is not None:
        result.status = TIMEOUT if failure.status == "timeout" else ERROR
        result.message = failure.describe()
        if failure.status == "timeout":
            result.message += f" (the overfit test may take at most {limits['wall_seconds']:.0f} s)"
        return [result]
    value = values[0]
    history = [float(v) for v in value["history"].get("total", [])]
    status, fraction, message = judge_history(history, settings)
    result.status, result.points = status, round(result.max_points * fraction, 4)
    result.message = message + f" [{value.get('seconds', 0):.0f} s]"
    result.detail = "loss history: " + ", ".join(f"{v:.3f}" for v in history)
    return [result]
