"""Presets of the main job and the full-VOC command: what they build."""

from __future__ import annotations

from dataclasses import replace

import pytest
from torch import nn

from data_utils.training.head_init import reinit_head_stems
from solutions.presets import PRESETS, build_detector, preset_with


def _stem_convs(model: nn.Module) -> list[nn.Conv2d]:
    heads = [model.pred_net.stem_cls, model.pred_net.stem_box] if hasattr(model, "pred_net") else \
        [model.rpn.pred_net.stem_rpn, model.cls_pred]
    return [m for head in heads for m in head.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("detector", ["fcos", "faster_rcnn"])
def test_pytorch_head_init_resets_only_the_stems(detector):
    course = build_detector(replace(PRESETS[f"{detector}-embedded"], head_init="course"))
    stems = _stem_convs(course)
    assert stems and all(abs(float(c.weight.detach().std()) - 0.01) < 0.002 for c in stems), "course init is N(0, 0.01)"
    before = {name: p.detach().clone() for name, p in course.named_parameters()}
    assert reinit_head_stems(course) == len(stems)
    stem_params = {id(p) for c in stems for p in c.parameters()}
    for name, p in course.named_parameters():
        changed = not bool((p == before[name]).all())
        assert changed == (id(p) in stem_params), f"{name}: only stem convs may be re-initialised"
    # PyTorch's default: Kaiming-uniform with a = sqrt(5), i.e. std 1 / sqrt(3 * fan_in).
    for conv in stems:
        fan_in = conv.weight[0].numel()
        assert abs(float(conv.weight.detach().std()) * (3 * fan_in) ** 0.5 - 1) < 0.1


def test_embedded_presets_use_pytorch_stems_and_voc_presets_keep_the_course():
    assert PRESETS["fcos-embedded"].head_init == "pytorch" and PRESETS["faster_rcnn-embedded"].head_init == "pytorch"
    assert PRESETS["fcos-voc"].head_init == "course" and PRESETS["faster_rcnn-voc"].head_init == "course"
    model = build_detector(PRESETS["fcos-embedded"])
    assert all(float(c.weight.detach().std()) > 0.018 for c in _stem_convs(model)), "std 1 / sqrt(3 * 576) = 0.024"
    assert float(model.pred_net.pred_cls.bias.detach().mean()) == pytest.approx(-4.59512, abs=1e-4), "prior kept"
    with pytest.raises(ValueError, match="unknown head_init"):
        build_detector(replace(PRESETS["fcos-embedded"], head_init="xavier"))
    assert preset_with("fcos-embedded", max_iters=7).train.max_iters == 7


def test_presets_are_the_manifests_profiles(tmp_path):
    """The main job's and the full-VOC command's recipes are the notebooks' cpu and gpu profiles
    (grader/course.toml), declared once: a profile changed in a copy of the manifest changes the preset."""
    import subprocess
    import sys
    from pathlib import Path

    from grader.functions import COURSE_PATH

    embedded, voc = PRESETS["fcos-embedded"], PRESETS["faster_rcnn-voc"]
    assert (embedded.train.max_iters, embedded.train.optimizer, embedded.train.channels_last) == (600, "adamw", True)
    assert embedded.train.fused_optimizer and not voc.train.fused_optimizer and not voc.train.channels_last
    assert (voc.train.max_iters, voc.train.lr, voc.extra) == (9000, 1e-2, {"pre_nms_topk": 500, "post_nms_topk": 200})
    manifest = tmp_path / "course.toml"
    text = Path(COURSE_PATH).read_text()
    cpu = text.index("[one_stage.profiles.cpu]")
    manifest.write_text(text[:cpu] + text[cpu:].replace("train_iters = 600", "train_iters = 601", 1))
    program = ("import sys; from pathlib import Path; import grader.functions as f; f.COURSE_PATH = Path(sys.argv[1]);"
               "from solutions.presets import PRESETS as P;"
               "print(P['fcos-embedded'].train.max_iters, P['faster_rcnn-embedded'].train.max_iters)")
    done = subprocess.run([sys.executable, "-c", program, str(manifest)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["601", "600"]


def test_step_recipes_name_the_main_jobs_and_the_earlier_ones():
    """The main job trains with :data:`MAIN_JOB_RECIPE`; every recipe the benchmark compares maps to its
    settings and back, and a mix no recipe names is refused (so a recorded run is never mislabelled)."""
    from solutions.presets import MAIN_JOB_RECIPE, STEP_RECIPES, step_recipe

    for detector in ("fcos", "faster_rcnn"):
        assert step_recipe(PRESETS[f"{detector}-embedded"].train) == MAIN_JOB_RECIPE == "channels_last_fused"
        assert step_recipe(PRESETS[f"{detector}-voc"].train) == "contiguous", "the notebooks' step"
    for name, settings in STEP_RECIPES.items():
        assert step_recipe(replace(PRESETS["fcos-embedded"].train, **settings)) == name
    with pytest.raises(ValueError, match="no step recipe"):
        step_recipe(replace(PRESETS["fcos-embedded"].train, channels_last=False, fused_optimizer=True))
