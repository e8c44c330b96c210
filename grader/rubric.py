"""Loading ``grader/rubric.toml``: points per check, limits, overfit and mAP gates.

The points of each function come from the course manifest ``grader/course.toml``
(:func:`grader.functions.load_course`), not from the rubric: :func:`load_rubric`
merges them in as ``rubric[assignment]["functions"]``, so callers see one table.
Likewise a mAP schedule that names a notebook profile (``profile = "cpu"``) takes its
recipe from that profile (:func:`resolve_profile_schedules`): the gate retrains what the
notebook and the main job train, declared once.
"""

from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

from grader.functions import load_course

RUBRIC_PATH = Path(__file__).resolve().parent / "rubric.toml"


@functools.lru_cache(maxsize=4)
def load_rubric(path: str | None = None) -> dict:
    """The rubric (``path``, ``$GRADER_RUBRIC`` or ``grader/rubric.toml``) with each assignment's
    ``functions`` points filled in from the course manifest."""
    path = Path(path or os.environ.get("GRADER_RUBRIC", RUBRIC_PATH))
    with open(path, "rb") as f:
        rubric = tomllib.load(f)
    for assignment, entry in load_course().items():
        if "functions" in rubric.get(assignment, {}):
            # A second declaration would silently win or lose against the manifest: refuse it.
            raise ValueError(f"{path} declares [{assignment}.functions]: points live in grader/course.toml only")
        rubric.setdefault(assignment, {})["functions"] = dict(entry["functions"])
        resolve_profile_schedules(rubric[assignment], entry.get("profiles", {}), assignment)
    return rubric


#: A schedule's retraining recipe key -> the notebook profile's key it is read from.
PROFILE_RETRAIN_KEYS = {"batch_size": "batch_size", "max_iters": "train_iters", "optimizer": "optimizer", "lr": "lr",
                        "weight_decay": "weight_decay", "warmup_iters": "warmup_iters", "grad_clip": "grad_clip"}
#: A schedule's own key -> the profile's key: the dataset, the head's init, and the inference
#: thresholds the main job evaluates with (the schedules' reference_map was measured with them).
PROFILE_SCHEDULE_KEYS = {"dataset": "dataset", "head_init": "head_init", "score_thresh": "eval_score",
                         "nms_thresh": "eval_nms"}


def resolve_profile_schedules(entry: dict, profiles: dict, assignment: str) -> None:
    """Fill in, in place, each ``[<assignment>.map.schedules.<name>]`` of ``entry`` that names a
    notebook profile of ``grader/course.toml`` (``profile = "cpu"``).

    The schedule becomes the profile's recipe (:data:`PROFILE_RETRAIN_KEYS`,
    :data:`PROFILE_SCHEDULE_KEYS`, ``config``'s ``fpn_channels``/``stem_channels``) overridden
    by what the schedule itself states (a shorter CI run states only what differs); what no
    profile holds comes from the gate's top-level ``config`` (``num_classes``, the two-stage RoI
    sampling), and a Faster R-CNN's RPN stem is its stem, as data_utils' ``build_faster_rcnn``
    builds it.  A key the profile leaves out (TOML has no None: ``grad_clip``) is left out, so the
    training default applies as in the notebook.  ValueError for a profile the manifest lacks.
    """
    gate = entry.get("map", {})
    for name, table in gate.get("schedules", {}).items():
        if "profile" not in table:
            continue
        profile = profiles.get(table["profile"])
        if profile is None:
            raise ValueError(f"rubric [{assignment}.map.schedules.{name}] names profile {table['profile']!r}, which "
                             f"grader/course.toml lacks (its [{assignment}.profiles.*]: {', '.join(profiles) or 'none'})")
        config = dict(gate.get("config", {}))
        config.update(fpn_channels=profile["fpn_channels"], stem_channels=list(profile["stem_channels"]))
        if "rpn_stem_channels" in config:
            config["rpn_stem_channels"] = list(profile["stem_channels"])
        retrain = {key: profile[source] for key, source in PROFILE_RETRAIN_KEYS.items() if source in profile}
        resolved = {key: profile[source] for key, source in PROFILE_SCHEDULE_KEYS.items() if source in profile}
        resolved.update(table)
        resolved["config"] = {**config, **table.get("config", {})}
        resolved["retrain"] = {**retrain, **table.get("retrain", {})}
        gate["schedules"][name] = resolved


def default_limits() -> dict:
    """``[limits.check]`` of ``grader/rubric.toml`` itself (not ``$GRADER_RUBRIC``): the sandbox's defaults,
    so that a job started without a rubric runs under the same limits as a graded one."""
    with open(RUBRIC_PATH, "rb") as f:
        return dict(tomllib.load(f)["limits"]["check"])


def weight_for(rubric: dict, assignment: str, check_id: str) -> float:
    table = rubric[assignment]["weights"]
    if check_id not in table:
        raise KeyError(f"rubric.toml has no weight for {assignment} check {check_id!r}")
    return float(table[check_id])


def function_points(rubric: dict, assignment: str, function: str) -> float:
    return float(rubric[assignment]["functions"][function])


def split_points(rubric: dict, assignment: str, checks, skipped: set[str]) -> dict[str, float]:
    """``{check id: points}``: each function's points split over its non-skipped checks by weight."""
    totals: dict[str, float] = {}
    for check in checks:
        if check.id not in skipped:
            totals[check.function] = totals.get(check.function, 0.0) + weight_for(rubric, assignment, check.id)
    points = {}
    for check in checks:
        if check.id in skipped or totals.get(check.function, 0.0) == 0:
            points[check.id] = 0.0
        else:
            share = weight_for(rubric, assignment, check.id) / totals[check.function]
            points[check.id] = round(function_points(rubric, assignment, check.function) * share, 6)
    return points


def limits_for(rubric: dict, kind: str = "check") -> dict:
    base = dict(rubric.get("limits", {}).get("check", {}))
    if kind != "check":
        base.update(rubric.get("limits", {}).get(kind, {}))
    return base
