"""The course's experiment presets and the reference detectors they build: what the main job
(``./run main``, ``python -m solutions main``) and the full-VOC command (``python -m solutions
train``) run.

Instructor-side: it builds the reference implementation, which students do not have.  The
generic half -- :class:`data_utils.training.experiment.Preset` and
:func:`data_utils.training.experiment.run_experiment`, which trains whatever model it is given -- stays in
the student package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from torch import nn

from data_utils.data.voc import VOC_CLASSES
from data_utils.training.engine import TrainConfig
from data_utils.training.experiment import Preset
from data_utils.training.head_init import HEAD_INITS, reinit_head_stems
from grader.functions import load_course
from solutions.faster_rcnn import build_faster_rcnn
from solutions.fcos import FCOS

DETECTORS = ("fcos", "faster_rcnn")
#: The assignment whose notebook profiles each detector's presets come from.
ASSIGNMENT_OF = {"fcos": "one_stage", "faster_rcnn": "two_stage"}
#: The training step's recipes: how a step is computed, not what it computes (same model, data,
#: schedule and update rule; the memory layout and the optimiser's kernel change the rounding only).
#: The main job's is the first; the others are the earlier recipes benchmarks/bench_main_job.py
#: measures it against (solutions/main_job_figures.py records runs of each).
STEP_RECIPES: dict[str, dict[str, bool]] = {
    "channels_last_fused": {"channels_last": True, "fused_optimizer": True},
    "channels_last": {"channels_last": True, "fused_optimizer": False},
    "contiguous": {"channels_last": False, "fused_optimizer": False},
}
MAIN_JOB_RECIPE = "channels_last_fused"


def step_recipe(train: TrainConfig) -> str:
    """The name in :data:`STEP_RECIPES` of ``train``'s step settings; ValueError for a mix no recipe names."""
    settings = {"channels_last": train.channels_last, "fused_optimizer": train.fused_optimizer}
    for name, recipe in STEP_RECIPES.items():
        if recipe == settings:
            return name
    raise ValueError(f"no step recipe has the settings {settings}; choose one of {sorted(STEP_RECIPES)}")


#: Preset name suffix -> the notebook profile it is (``[<assignment>.profiles.<profile>]`` of grader/course.toml).
PROFILE_OF = {"voc": "gpu", "embedded": "cpu"}


def preset_from_profile(detector: str, profile: Mapping[str, Any], **train_overrides: Any) -> Preset:
    """The run a notebook profile describes, as a :class:`Preset`: the manifest's settings cell
    (``grader/course.toml``) is the one declaration of the course's recipes, so the main job, the
    full-VOC command and the notebooks cannot drift apart.  Keys a profile leaves out take the
    notebook's None (no weights, no clipping); the overfit and display-only keys are not a run's."""
    train = TrainConfig(max_iters=profile["train_iters"], lr=profile["lr"], optimizer=profile["optimizer"],
                        weight_decay=profile["weight_decay"], warmup_iters=profile["warmup_iters"],
                        grad_clip=profile.get("grad_clip"), **train_overrides)
    extra = {key: profile[key] for key in ("pre_nms_topk", "post_nms_topk") if key in profile}
    return Preset(detector, profile["fpn_channels"], tuple(profile["stem_channels"]), profile["batch_size"], train,
                  weights=profile.get("weights"), eval_score_thresh=profile["eval_score"],
                  eval_nms_thresh=profile["eval_nms"], show_thresh=profile["show_score"],
                  head_init=profile["head_init"], extra=extra)


def course_presets(course: Mapping[str, Any] | None = None) -> dict[str, Preset]:
    """``<detector>-voc`` (the gpu profile: PASCAL VOC 2007, ImageNet backbone, the original
    course's schedule) and ``<detector>-embedded`` (the cpu profile: the embedded dataset from a
    random backbone -- from scratch the course's SGD at 1e-2 diverged, so AdamW with warm-up and
    clipping, and PyTorch's initialisation of the head stems, see data_utils.training.head_init) for each
    detector, from the manifest.  The embedded runs are the main job's, whose step follows
    :data:`MAIN_JOB_RECIPE`: channels-last (oneDNN's convolutions are ~20% faster per step on a 2-core
    CPU; the notebooks stay contiguous, where a student's ``view()`` of an NHWC map would raise) and the
    fused optimiser kernel."""
    course = load_course() if course is None else course
    presets = {}
    for detector in DETECTORS:
        profiles = course[ASSIGNMENT_OF[detector]]["profiles"]
        for suffix, profile in PROFILE_OF.items():
            overrides = STEP_RECIPES[MAIN_JOB_RECIPE] if suffix == "embedded" else {}
            presets[f"{detector}-{suffix}"] = preset_from_profile(detector, profiles[profile], **overrides)
    return presets


#: The recorded runs of the embedded presets (and their spread over seeds and machines) are in
#: solutions/main_job_figures.py.
PRESETS: dict[str, Preset] = course_presets()


def build_detector(preset: Preset, num_classes: int = len(VOC_CLASSES)) -> nn.Module:
    """Instantiate the reference detector a preset describes (its stems re-initialised when
    ``preset.head_init`` is "pytorch"); ValueError for an unknown detector or head_init."""
    if preset.head_init not in HEAD_INITS:
        raise ValueError(f"unknown head_init {preset.head_init!r}; choose one of {HEAD_INITS}")
    if preset.detector == "fcos":
        model: nn.Module = FCOS(num_classes=num_classes, fpn_channels=preset.fpn_channels,
                                stem_channels=list(preset.stem_channels), weights=preset.weights)
    elif preset.detector == "faster_rcnn":
        model = build_faster_rcnn(num_classes=num_classes, fpn_channels=preset.fpn_channels,
                                  stem_channels=list(preset.stem_channels), weights=preset.weights, **preset.extra)
    else:
        raise ValueError(f"unknown detector {preset.detector!r}; choose one of {DETECTORS}")
    if preset.head_init == "pytorch":
        reinit_head_stems(model)
    return model


def preset_with(name: str, **overrides: Any) -> Preset:
    """A copy of ``PRESETS[name]`` with settings overridden (``max_iters=...``, ``lr=...``,
    ``batch_size=...``; None leaves a setting as it is); ValueError for an unknown preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    train_fields = {k: v for k, v in overrides.items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    preset_fields = {k: v for k, v in overrides.items() if k in Preset.__dataclass_fields__ and v is not None}
    return replace(preset, train=replace(preset.train, **train_fields), **preset_fields)
