"""The mAP gate: the student's trained detector must reach a VOC07 mAP threshold.

Modes (``[<assignment>.map]`` in ``grader/rubric.toml``):

``weights``  (``--weights FILE``, or ``one_stage_weights.pt`` /
``two_stage_weights.pt`` found in the submission's folder or zip)
    A checkpoint of :func:`data_utils.training.engine.save_checkpoint` (or a plain
    ``state_dict``), read with ``torch.load(weights_only=True)``.  The
    model's construction (FPN width, stem channels, ...) comes from the
    checkpoint's ``model_config``; a checkpoint of the other assignment's
    detector, or a file that is not a checkpoint, is refused with the reason.
``retrain``  (``--retrain [--device cpu|cuda] [--retrain-iters N]``)
    A sandbox trains the student's detector (their classes and functions)
    with the rubric's schedule for the dataset in use, the dataset bound
    read-only, and returns only its weights.  The GPU path is the same code.

Judging never takes a number from the submission.  The weights are loaded
into the *reference* detector in the grader's process and the reference's
inference predicts the val images (:mod:`grader.reference_judge`; FPN conv
names may differ).  Where the weights do not fit the reference's layers, a
*fresh* sandbox loads them into the student's model and returns raw
detections only.  Either way the grader maps boxes to original pixels and
computes VOC07 mAP (:func:`data_utils.evaluation.voc_eval.evaluate_detections`) against
its own ground truth.

Thresholds per (dataset, schedule): the top-level ``reference_map``/
``margin``/``config``/``retrain`` are real VOC 2007 with the course schedule;
``[<assignment>.map.schedules.<name>]`` hold the embedded dataset's (the main
job's and a short CI one), each the reference's measured mAP minus a margin.
Without VOC the gate uses the embedded dataset when ``embedded_fallback`` is
true.  A gate that cannot run (no data, no weights, no GPU for a full
schedule, no threshold for the requested iterations) is *skipped* with the
reason, worth 0 of 0 (the report's ``max_if_all_ran`` states the maximum with
it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from data_utils.data.voc import IMAGENET_MEAN, IMAGENET_STD
from grader.results import ERROR, FAILED, PASSED, SKIPPED, TIMEOUT, CheckResult
from grader.rubric import limits_for

#: Fixed names under which a submission's weights are found without ``--weights``.
WEIGHTS_NAMES = {"one_stage": "one_stage_weights.pt", "two_stage": "two_stage_weights.pt"}
#: ``model_config["detector"]`` values each assignment's checkpoints may carry.
DETECTORS = {"one_stage": ("fcos", "FCOS"), "two_stage": ("faster_rcnn", "FasterRCNN", "faster-rcnn")}
#: Model-config keys the harness's ``build_detector`` reads.
CONFIG_KEYS = ("num_classes", "fpn_channels", "stem_channels", "rpn_stem_channels", "batch_size_per_image")


def find_voc(voc_root: str | os.PathLike | None, split: str) -> tuple[Path | None, str]:
    """``(VOC2007 dir, "")`` or ``(None, reason)``; never downloads."""
    try:
        from data_utils.data.download import ensure_voc2007

        return ensure_voc2007(voc_root=voc_root, download=False, progress=False), ""
    except Exception as error:  # noqa: BLE001 - any reason the data is unusable
        return None, f"PASCAL VOC 2007 not available ({str(error).splitlines()[0][:200]})"


def is_embedded(voc_dir: str | os.PathLike) -> bool:
    from data_utils.data.synthetic import MARKER_NAME

    return (Path(voc_dir) / MARKER_NAME).is_file()


def find_weights(submission: str | os.PathLike | None, assignment: str) -> Path | None:
    """The submission's ``<assignment>_weights.pt`` (beside a notebook, in a folder); None if absent.

    A symlink is never followed (a submission must not point the grader at other files)."""
    if submission is None:
        return None
    path = Path(submission)
    name = WEIGHTS_NAMES[assignment]
    # A folder (an unpacked zip) anywhere inside; a notebook: only right beside it.
    candidates = sorted(path.rglob(name)) if path.is_dir() else [path.parent / name]
    candidates = [p for p in candidates if not p.is_symlink() and p.is_file()]
    return candidates[0] if candidates else None


def load_weights(path: str | os.PathLike, assignment: str | None = None) -> tuple[dict, dict]:
    """``(state_dict, model_config)`` from a student's file (plain tensors only).

    Accepts a checkpoint of :func:`data_utils.training.engine.save_checkpoint` (its
    ``model_config`` gives the construction) or a bare state dict (empty
    config: the rubric's applies).  Raises ``ValueError`` naming the problem.
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a student's file
        raise ValueError(f"{Path(path).name} is not a PyTorch checkpoint readable with weights_only=True "
                         f"({type(error).__name__}); save it with data_utils.training.engine.save_checkpoint") from None
    config: dict = {}
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        config = payload.get("model_config") or {}
        if not isinstance(config, dict):
            raise ValueError("the checkpoint's model_config is not a dict")
        payload = payload["model"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                               for k, v in payload.items()):
        raise ValueError("expected a checkpoint of data_utils.training.engine.save_checkpoint (or a state_dict: parameter name -> tensor)")
    detector = config.get("detector", config.get("model"))
    if assignment is not None and detector is not None and str(detector) not in DETECTORS[assignment]:
        raise ValueError(f"this is a checkpoint of a {detector!r} model, not of this assignment's "
                         f"{DETECTORS[assignment][1]}: submit {WEIGHTS_NAMES[assignment]} from the {assignment} notebook")
    return payload, config


def model_config(settings: dict, checkpoint_config: dict | None, kind: str) -> dict:
    """The construction config: the rubric's, overridden by what the checkpoint records."""
    config = dict(settings["config"])
    for key in CONFIG_KEYS:
        if checkpoint_config and checkpoint_config.get(key) is not None:
            value = checkpoint_config[key]
            config[key] = list(value) if isinstance(value, (list, tuple)) else int(value)
    if kind == "FasterRCNN" and checkpoint_config and "stem_channels" in checkpoint_config \
            and "rpn_stem_channels" not in checkpoint_config:
        config["rpn_stem_channels"] = list(checkpoint_config["stem_channels"])  # data_utils' build_faster_rcnn shares them
    return config


def all_schedules(settings: dict) -> dict[str, dict]:
    """Every schedule of a ``[<assignment>.map]`` table, by name (``voc``: the top-level one)."""
    base = {k: settings[k] for k in ("reference_map", "margin", "config", "retrain") if k in settings}
    schedules = {"voc": {**base, "dataset": "voc"}}
    for name, table in settings.get("schedules", {}).items():
        schedules[name] = {**base, **table, "retrain": {**base.get("retrain", {}), **table.get("retrain", {})}}
    return schedules


def select_schedule(settings: dict, dataset: str, iters: int | None) -> tuple[str | None, dict, str]:
    """``(name, schedule, reason)`` of the rubric schedule for ``dataset`` ("voc"/"embedded").

    With ``iters`` the schedule of that dataset with that many iterations is
    chosen, else the dataset's ``default_schedule``; ``(None, nearest, reason)``
    when the rubric has no threshold for it (``nearest``: the dataset's first
    schedule, for an unscored smoke run)."""
    here = {n: s for n, s in all_schedules(settings).items() if s.get("dataset", "voc") == dataset}
    nearest = dict(next(iter(here.values()), all_schedules(settings)["voc"]))
    if iters is not None:
        for name, schedule in here.items():
            if int(schedule["retrain"].get("max_iters", -1)) == int(iters):
                return name, schedule, ""
        measured = ", ".join(f"{n}: {s['retrain'].get('max_iters')} iterations" for n, s in here.items())
        return None, nearest, f"no threshold is measured for {iters} iterations on the {dataset} dataset ({measured})"
    default = settings.get("default_schedule", {}).get(dataset, "voc" if dataset == "voc" else None)
    if default in here:
        return default, here[default], ""
    return None, nearest, f"the rubric has no schedule for the {dataset} dataset"


def _reference_detections(model, dataset, settings: dict, device: str) -> list:
    from data_utils.training.inference import predict_dataset

    return predict_dataset(model, dataset, score_thresh=float(settings["score_thresh"]), nms_thresh=float(settings["nms_thresh"]),
                           batch_size=16, device=device, progress=False, num_workers=0)


def predict_in_sandbox(sandbox, source: str, assignment: str, settings: dict, state_dict: dict, dataset, *,
                       defined: set[str], limits: dict, chunk: int = 256, threads: int = 1, config: dict | None = None):
    """Detections (original pixels) of every image of ``dataset`` by the student's model; or an Outcome on failure."""
    from data_utils.conventions import Detections
    from grader.jobs import run_jobs

    detections = []
    device = "cuda" if (torch.cuda.is_available() and sandbox.cuda) else "cpu"
    for start in range(0, len(dataset), chunk):
        indices = range(start, min(start + chunk, len(dataset)))
        images = torch.stack([dataset.load_uint8(i) for i in indices])
        spec = {"op": "predict", "model": settings["model"], "config": dict(config or settings["config"]), "state_dict": state_dict,
                "images": images, "score_thresh": float(settings["score_thresh"]), "nms_thresh": float(settings["nms_thresh"]),
                "batch_size": 16, "device": device, "pixel_mean": list(IMAGENET_MEAN), "pixel_std": list(IMAGENET_STD)}
        values, failure, _ = run_jobs(sandbox, source, assignment, None, [spec], isolate=False, defined=defined,
                                      limits={**limits, "threads": threads})
        if failure is not None:
            return failure
        for index, det in zip(indices, values[0]["detections"]):
            if not (isinstance(det, (list, tuple)) and len(det) == 3 and all(isinstance(t, torch.Tensor) for t in det)):
                raise ValueError("inference must return tensors (boxes, scores, classes)")
            boxes, scores, classes = det
            detections.append(Detections(dataset.to_original(boxes.float().reshape(-1, 4), index), scores.float().reshape(-1),
                                         classes.long().reshape(-1)))
    if len(detections) != len(dataset):
        raise ValueError(f"inference returned detections for {len(detections)} of {len(dataset)} images")
    return detections


#: Memory a retraining run needs besides its image cache (the model, a batch's activations,
#: torch's allocator): a margin, not a measured peak.
RETRAIN_HEADROOM_MB = 2048


def check_retrain_memory(train_set, train_limits: dict) -> None:
    """Raise :class:`grader.grade.GraderInfrastructureError` when the retraining sandbox's
    memory limit cannot hold the train split's uint8 images (kept in memory, no file) plus
    :data:`RETRAIN_HEADROOM_MB`: every submission would fail there, so no score may be recorded."""
    from data_utils.data.cache import cache_bytes
    from grader.sandbox import DEFAULT_LIMITS

    cache_mb = -(-cache_bytes(train_set) // (1 << 20))
    need_mb = cache_mb + RETRAIN_HEADROOM_MB
    limit_mb = int(train_limits.get("memory_mb", DEFAULT_LIMITS["memory_mb"]))  # the sandbox's default
    if limit_mb < need_mb:
        from grader.errors import GraderInfrastructureError

        raise GraderInfrastructureError(
            f"retraining needs ~{need_mb} MiB ({len(train_set)} train images of {train_set.image_size}px cached as uint8: "
            f"{cache_mb} MiB, + {RETRAIN_HEADROOM_MB} MiB for the model) but the retraining sandbox "
            f"may use {limit_mb} MiB: raise memory_mb in [limits.retrain] of grader/rubric.toml (or run without --retrain)")


def map_results(sandbox, source: str, assignment: str, rubric: dict, *, weights=None, voc_root=None, retrain: bool = False,
                defined: set[str], load_failure=None, threads: int = 1, dataset_dir: str | os.PathLike | None = None,
                device: str | None = None, retrain_iters: int | None = None, submission=None) -> list[CheckResult]:
    settings = rubric[assignment]["map"]
    kind = settings["model"]
    if weights is None and not retrain:
        weights = find_weights(submission, assignment)
    mode = "retrain" if retrain else "weights"
    result = CheckResult(f"map/{kind}", "map", f"mAP gate ({mode}): your {kind} reaches the VOC07 mAP threshold on the "
                         f"{settings['split']} images", True, float(settings["points"]), kind="map")

    def skip(reason: str) -> list[CheckResult]:
        result.status, result.max_points = SKIPPED, 0.0
        result.message = f"skipped: {reason} (not counted: worth {float(settings['points']):g} points where it runs)"
        return [result]

    if weights is None and not retrain:
        return skip(f"no trained weights ({WEIGHTS_NAMES[assignment]} in the submission, or --weights) "
                    "and no retraining requested (--retrain)")
    if load_failure is not None:
        result.status, result.message = ERROR, "not run: your code could not be loaded"
        return [result]
    # The data: the given folder, else real VOC, else (if the rubric allows) the embedded dataset.
    if dataset_dir is not None:
        voc_dir = Path(dataset_dir)
    else:
        voc_dir, reason = find_voc(voc_root, settings["split"])
        if voc_dir is None:
            if not settings.get("embedded_fallback", False):
                return skip(reason)
            from data_utils.data.synthetic import ensure_embedded_dataset

            voc_dir = ensure_embedded_dataset()
    dataset_kind = "embedded" if is_embedded(voc_dir) else "voc"
    checkpoint_config: dict = {}
    state_dict = None
    if retrain:
        name, schedule, reason = select_schedule(settings, dataset_kind, retrain_iters)
        if name is None:
            if retrain_iters is None:
                return skip(reason)
            # A smoke run of an unmeasured length: trained and evaluated, not scored.
            name = "smoke"
            schedule["retrain"] = {**schedule.get("retrain", {}), "max_iters": int(retrain_iters)}
            schedule["unscored"] = reason
        device = device or ("cuda" if torch.cuda.is_available() else None)
        if device is None:
            return skip(f"retraining with the {name} schedule needs a CUDA GPU; none on this machine "
                        "(--device cpu forces the CPU: the embedded schedules take minutes there, VOC's days)")
        if device == "cuda" and not torch.cuda.is_available():
            return skip("--device cuda requested but CUDA is not available on this machine")
    else:
        try:
            state_dict, checkpoint_config = load_weights(weights, assignment)
        except (ValueError, OSError) as error:
            result.status, result.message = FAILED, f"could not read the weights file: {str(error)[:400]}"
            return [result]
        name, schedule, reason = select_schedule(settings, dataset_kind, None)
        if name is None:
            return skip(reason)
    config = model_config({"config": schedule.get("config", settings["config"])}, checkpoint_config, kind)
    threshold = float(schedule["reference_map"]) - float(schedule["margin"])
    result.title = (f"mAP gate ({mode}, {name} schedule): your {kind} reaches VOC07 mAP >= {threshold:.3f} on "
                    f"{'VOC 2007' if dataset_kind == 'voc' else 'the embedded dataset'} {settings['split']} "
                    f"(reference {float(schedule['reference_map']):.3f} - margin {float(schedule['margin']):.3f})")
    from data_utils.data.voc import VOCDetection
    from data_utils.evaluation.voc_eval import evaluate_detections
    from grader.sandbox import Sandbox

    dataset = VOCDetection(voc_dir, settings["split"])
    # Inference thresholds: the schedule's (measured with them), else the gate's.
    settings = {**settings, **{k: schedule[k] for k in ("score_thresh", "nms_thresh") if k in schedule}}
    limits = limits_for(rubric, "map")
    how = ""
    if retrain:
        from grader.jobs import run_jobs

        cfg = dict(schedule["retrain"])
        spec = {"op": "train", "model": kind, "config": config, "voc_dir": str(voc_dir), "split": "train",
                "batch_size": int(cfg.pop("batch_size", 16)), "head_init": schedule.get("head_init", "course"),
                "train_config": cfg, "device": device, "seed": int(cfg.get("seed", 0))}
        train_limits = {**limits, **rubric.get("limits", {}).get("retrain", {"wall_seconds": 4 * 3600, "cpu_seconds": 8 * 3600}),
                        "threads": max(1, threads)}
        check_retrain_memory(VOCDetection(voc_dir, "train"), train_limits)
        # Its own sandbox: the dataset bound read-only, the GPU when training on it.
        with Sandbox(sandbox.mode if sandbox is not None else None, threads=max(1, threads), cuda=device == "cuda",
                     extra_ro=(voc_dir,), limits=limits_for(rubric)) as train_box:
            values, failure, output = run_jobs(train_box, source, assignment, None, [spec], isolate=False, defined=defined,
                                               limits=train_limits)
        if failure is not None:
            result.status = TIMEOUT if failure.status == "timeout" else ERROR
            result.message = "retraining failed: " + failure.describe()
            return [result]
        state_dict = values[0].get("state_dict") if isinstance(values[0], dict) else None
        if not isinstance(state_dict, dict) or not state_dict:
            result.status, result.message = FAILED, "retraining returned no trained weights"
            return [result]
        seconds = values[0].get("seconds")
        how = f"retrained {cfg.get('max_iters')} iterations on {device}" + (
            f" in {float(seconds):.0f} s" if isinstance(seconds, (int, float)) else "")
    from grader.reference_judge import load_reference

    eval_device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        reference, renamed = load_reference(kind, config, state_dict)
    except (ValueError, RuntimeError) as error:
        # Layers that do not fit the reference: the student's own model predicts, in a fresh sandbox.
        fit_error = str(error)[:300]
        try:
            with Sandbox(sandbox.mode if sandbox is not None else None, threads=max(1, threads), limits=limits_for(rubric)) as box:
                detections = predict_in_sandbox(box, source, assignment, settings, state_dict, dataset, defined=defined,
                                                limits=limits, threads=threads, config=config)
        except ValueError as error2:
            result.status, result.message = FAILED, str(error2)[:400]
            return [result]
        if not isinstance(detections, list):
            result.status = TIMEOUT if detections.status == "timeout" else ERROR
            result.message = ("the weights fit neither the notebook's model (" + fit_error + ") nor yours: "
                              + detections.describe())
            return [result]
        how += ("; " if how else "") + "predicted by your model in a fresh sandbox (its layers differ from the notebook's)"
    else:
        detections = _reference_detections(reference, dataset, settings, eval_device)
        how += ("; " if how else "") + "your weights evaluated with the reference's inference"
        if renamed:
            how += f" (layers matched by shape: {', '.join(renamed[:4])})"
    evaluation = evaluate_detections(detections, [dataset.ground_truth(i) for i in range(len(dataset))],
                                     class_names=dataset.class_names)
    value = float(evaluation.map)
    text = f"VOC07 mAP {value:.4f} on {len(dataset)} {settings['split']} images ({how})"
    if schedule.get("unscored"):
        result.title = f"mAP gate ({mode}, smoke run of {schedule['retrain']['max_iters']} iterations, no threshold)"
        return skip(f"{schedule['unscored']}: smoke run only, not scored; {text}")
    passed = value == value and value >= threshold  # NaN (no ground truth at all) never passes
    result.status = PASSED if passed else FAILED
    result.points = result.max_points if passed else 0.0
    result.message = f"{text} (needed {threshold:.3f})"
    return [result]
