"""The mAP gate: the student's detector must reach a VOC07 mAP threshold on VOC val.

Two modes (``[<assignment>.map]`` in ``grader/rubric.toml``):

``weights``  (``--weights FILE``; works on a CPU)
    The student submits trained weights (a ``state_dict`` or a checkpoint of
    :func:`data_utils.engine.save_checkpoint`), read with
    ``torch.load(weights_only=True)``.  Their model (their classes) is built in
    the sandbox with the rubric's configuration, the weights are loaded, and it
    predicts the val images, sent in chunks of uint8 tensors; the grader maps
    the boxes back to original pixels and evaluates them
    (:func:`data_utils.voc_eval.evaluate_detections`, VOC07 11-point AP).
``retrain``  (``--retrain``; needs a CUDA GPU)
    The sandbox trains the student's model on VOC train with the course
    schedule (the rubric's ``retrain`` table), the dataset directory bound
    read-only; the resulting weights are evaluated as above.

The gate passes when mAP >= ``reference_map - margin``.  Without VOC 2007
(``--voc-root`` / ``$VOC_ROOT`` / the download cache), without weights, or
(``retrain``) without a GPU, the gate is *skipped* with the reason: 0 of 0
points, never passed silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from grader.results import ERROR, FAILED, PASSED, SKIPPED, TIMEOUT, CheckResult
from grader.rubric import limits_for


def find_voc(voc_root: str | os.PathLike | None, split: str) -> tuple[Path | None, str]:
    """``(VOC2007 dir, "")`` or ``(None, reason)``; never downloads."""
    try:
        from data_utils.download import ensure_voc2007

        return ensure_voc2007(voc_root=voc_root, download=False, progress=False), ""
    except Exception as error:  # noqa: BLE001 - any reason the data is unusable
        return None, f"PASCAL VOC 2007 not available ({str(error).splitlines()[0][:200]})"


def load_weights(path: str | os.PathLike) -> dict:
    """A state dict from a student's file (plain tensors only)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError("expected a state_dict (parameter name -> tensor) or a checkpoint with a 'model' entry")
    return payload


def predict_in_sandbox(sandbox, source: str, assignment: str, settings: dict, state_dict: dict, dataset, *,
                       defined: set[str], limits: dict, chunk: int = 256, threads: int = 1):
    """Detections (original pixels) of every image of ``dataset``; or an Outcome on failure."""
    from data_utils.conventions import Detections
    from grader.grade import run_jobs

    detections = []
    device = "cuda" if (torch.cuda.is_available() and sandbox.cuda) else "cpu"
    for start in range(0, len(dataset), chunk):
        indices = range(start, min(start + chunk, len(dataset)))
        images = torch.stack([dataset.load_uint8(i) for i in indices])
        spec = {"op": "predict", "model": settings["model"], "config": dict(settings["config"]), "state_dict": state_dict,
                "images": images, "score_thresh": float(settings["score_thresh"]), "nms_thresh": float(settings["nms_thresh"]),
                "batch_size": 16, "device": device}
        values, failure, _ = run_jobs(sandbox, source, assignment, None, [spec], isolate=False, defined=defined,
                                      limits={**limits, "threads": threads})
        if failure is not None:
            return failure
        for index, (boxes, scores, classes) in zip(indices, values[0]["detections"]):
            if not (isinstance(boxes, torch.Tensor) and isinstance(scores, torch.Tensor) and isinstance(classes, torch.Tensor)):
                raise ValueError("inference must return tensors (boxes, scores, classes)")
            detections.append(Detections(dataset.to_original(boxes.float().reshape(-1, 4), index), scores.float().reshape(-1),
                                         classes.long().reshape(-1)))
    return detections


def map_results(sandbox, source: str, assignment: str, rubric: dict, *, weights=None, voc_root=None, retrain: bool = False,
                defined: set[str], load_failure=None, threads: int = 1, dataset_dir: str | os.PathLike | None = None) -> list[CheckResult]:
    settings = rubric[assignment]["map"]
    threshold = float(settings["reference_map"]) - float(settings["margin"])
    mode = "retrain" if retrain else "weights"
    title = (f"mAP gate ({mode}): your {settings['model']} reaches VOC07 mAP >= {threshold:.3f} on VOC {settings['split']} "
             f"(reference {settings['reference_map']:.3f} - margin {settings['margin']:.3f})")
    result = CheckResult(f"map/{settings['model']}", "map", title, True, float(settings["points"]), kind="map")

    def skip(reason: str) -> list[CheckResult]:
        result.status, result.max_points, result.message = SKIPPED, 0.0, f"skipped: {reason}"
        return [result]

    if load_failure is not None:
        if weights is None and not retrain:
            return skip("no trained weights given (--weights) and no retraining requested (--retrain)")
        result.status, result.message = ERROR, "not run: your code could not be loaded"
        return [result]
    if weights is None and not retrain:
        return skip("no trained weights given (--weights) and no retraining requested (--retrain)")
    if retrain and not torch.cuda.is_available():
        return skip("retraining with the course schedule needs a CUDA GPU; none on this machine")
    voc_dir, reason = (Path(dataset_dir), "") if dataset_dir else find_voc(voc_root, settings["split"])
    if voc_dir is None:
        return skip(reason)
    from data_utils.voc import VOCDetection
    from data_utils.voc_eval import evaluate_detections

    dataset = VOCDetection(voc_dir, settings["split"])
    limits = limits_for(rubric, "map")
    if retrain:
        from grader.grade import run_jobs

        cfg = dict(settings["retrain"])
        spec = {"op": "train", "model": settings["model"], "config": dict(settings["config"]), "voc_dir": str(voc_dir),
                "split": "train", "batch_size": int(cfg.pop("batch_size", 16)), "train_config": cfg, "device": "cuda"}
        train_limits = {**limits, **rubric.get("limits", {}).get("retrain", {"wall_seconds": 4 * 3600, "cpu_seconds": 8 * 3600})}
        values, failure, output = run_jobs(sandbox, source, assignment, None, [spec], isolate=False, defined=defined, limits=train_limits)
        if failure is not None:
            result.status = TIMEOUT if failure.status == "timeout" else ERROR
            result.message = "retraining failed: " + failure.describe()
            return [result]
        state_dict = values[0]["state_dict"]
    else:
        try:
            state_dict = load_weights(weights)
        except Exception as error:  # noqa: BLE001 - a student's file
            result.status, result.message = FAILED, f"could not read the weights file: {str(error)[:300]}"
            return [result]
    try:
        detections = predict_in_sandbox(sandbox, source, assignment, settings, state_dict, dataset, defined=defined,
                                        limits=limits, threads=threads)
    except ValueError as error:
        result.status, result.message = FAILED, str(error)
        return [result]
    if not isinstance(detections, list):
        result.status = TIMEOUT if detections.status == "timeout" else ERROR
        result.message = "inference failed: " + detections.describe()
        return [result]
    evaluation = evaluate_detections(detections, [dataset.ground_truth(i) for i in range(len(dataset))],
                                     class_names=dataset.class_names)
    value = float(evaluation.map)
    passed = value == value and value >= threshold  # NaN (no ground truth at all) never passes
    result.status = PASSED if passed else FAILED
    result.points = result.max_points if passed else 0.0
    result.message = f"VOC07 mAP {value:.4f} on {len(dataset)} {settings['split']} images (needed {threshold:.3f})"
    return [result]
