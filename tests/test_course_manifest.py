"""The course manifest ``grader/course.toml`` is the one place that declares each function's points.

The main test edits a point value in a temporary copy of the packages that read it and sees the
new value everywhere: the notebooks' spec, the grader's rubric and functions views, the split
over checks and the maximum score.  Any module that still declared the points itself would
report the old value there.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from assignments import build
from assignments.spec import ASSIGNMENTS
from grader.functions import COURSE_PATH, DEPENDENCIES, STUDENT_FUNCTIONS, load_course
from grader.parsing import parse

ROOT = Path(__file__).resolve().parents[1]

#: Printed by a fresh interpreter over the temporary copy: every view of the points.
_PROBE = textwrap.dedent("""
    import json
    from types import SimpleNamespace

    from assignments.spec import ASSIGNMENTS
    from grader.functions import STUDENT_FUNCTIONS, load_course
    from grader.rubric import function_points, load_rubric, split_points

    rubric = load_rubric()
    checks = [SimpleNamespace(id=c, function=c.split("/")[0]) for c in rubric["one_stage"]["weights"]]
    split = split_points(rubric, "one_stage", checks, skipped=set())
    print(json.dumps({
        "spec_points": ASSIGNMENTS["one_stage"].points["nms"],
        "spec_order": ASSIGNMENTS["one_stage"].functions,
        "spec_total": ASSIGNMENTS["one_stage"].total_points,
        "spec_max": ASSIGNMENTS["one_stage"].max_score,
        "spec_cpu_overfit_iters": ASSIGNMENTS["one_stage"].profiles["cpu"]["overfit_iters"],
        "functions_order": STUDENT_FUNCTIONS["one_stage"],
        "manifest_points": load_course()["one_stage"]["functions"]["nms"],
        "rubric_points": function_points(rubric, "one_stage", "nms"),
        "split_nms": round(sum(p for c, p in split.items() if c.startswith("nms/")), 6),
        "grader_max": round(sum(split.values()) + rubric["one_stage"]["overfit"]["points"], 6),
    }))
""")


def _copy_packages(dest: Path) -> None:
    """The top-level modules and data of ``assignments`` and ``grader`` (no notebooks, fixtures or slurm)."""
    for package in ("assignments", "grader"):
        (dest / package).mkdir(parents=True)
        for path in (ROOT / package).iterdir():
            if path.is_file() and path.suffix in (".py", ".toml"):
                shutil.copy2(path, dest / package / path.name)


def _probe(root: Path, code: str = _PROBE) -> dict:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_point_value_changed_in_the_manifest_is_seen_everywhere(tmp_path):
    _copy_packages(tmp_path)
    before = _probe(tmp_path)
    assert before["spec_points"] == before["manifest_points"] == before["rubric_points"] == 14
    assert before["split_nms"] == pytest.approx(14)
    manifest = tmp_path / "grader" / "course.toml"
    text = manifest.read_text()
    assert text.count("\nnms = 14\n") == 1
    text = text.replace("\nnms = 14\n", "\nnms = 15\n")
    head, cpu = text.split("[one_stage.profiles.cpu]\n")
    assert before["spec_cpu_overfit_iters"] == 80 and "\noverfit_iters = 80\n" in cpu.split("\n[")[0]
    manifest.write_text(head + "[one_stage.profiles.cpu]\n" + cpu.replace("\noverfit_iters = 80\n", "\noverfit_iters = 81\n", 1))

    after = _probe(tmp_path)
    assert after["manifest_points"] == after["spec_points"] == after["rubric_points"] == 15
    assert after["split_nms"] == pytest.approx(15)
    assert after["spec_total"] == before["spec_total"] + 1
    assert after["spec_max"] == before["spec_max"] + 1
    assert after["grader_max"] == pytest.approx(before["grader_max"] + 1)
    assert after["spec_order"] == after["functions_order"] == before["functions_order"]
    assert after["spec_cpu_overfit_iters"] == 81


def _settings_of(nb) -> dict:
    """The built settings cell's ``SETTINGS = {...}[PROFILE]`` dict, every profile, evaluated."""
    (cell,) = [c for c in nb.cells if c.get("id") == "settings"]
    (node,) = [n for n in parse(cell.source).body if isinstance(n, ast.Assign) and n.targets[0].id == "SETTINGS"]
    assert isinstance(node.value, ast.Subscript) and ast.unparse(node.value.slice) == "PROFILE"
    return eval(compile(ast.Expression(node.value.value), "settings", "eval"), {"__builtins__": {"dict": dict}})


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_the_notebooks_settings_are_the_manifests_profiles_as_literals(name):
    spec = ASSIGNMENTS[name]
    assert list(spec.profiles) == ["tiny", "cpu", "gpu"]
    nb = build.build_notebook(spec)
    assert _settings_of(nb) == spec.profiles
    (cell,) = [c for c in nb.cells if c.get("id") == "settings"]
    assert build.PROFILES_PLACEHOLDER not in cell.source and "course.toml" not in cell.source


def test_a_profile_value_changed_in_the_spec_is_written_into_the_notebook():
    spec = ASSIGNMENTS["two_stage"]
    changed = {p: dict(v) for p, v in spec.profiles.items()}
    changed["gpu"]["lr"], changed["tiny"]["grad_clip"] = 2.5e-3, None
    changed["cpu"]["grad_clip"] = 5.0
    assert _settings_of(build.build_notebook(replace(spec, profiles=changed))) == changed


@pytest.mark.parametrize("value, text", [(5e-3, "5e-3"), (1e-2, "1e-2"), (0.05, "0.05"), (10.0, "10.0"),
                                         (2.5e-3, "2.5e-3"), (None, "None"), (True, "True"), ("voc", '"voc"'),
                                         ([32, 32], "[32, 32]"), (1 / 3 * 1e-3, repr(1 / 3 * 1e-3))])
def test_notebook_literals_read_back_equal(value, text):
    assert build.python_literal(value) == text
    assert eval(text) == value


def test_a_text_source_without_the_placeholder_is_refused(tmp_path, monkeypatch):
    spec = ASSIGNMENTS["one_stage"]
    fake = tmp_path / "one_stage.md"
    fake.write_text(spec.text_source.read_text().replace(build.PROFILES_PLACEHOLDER, "{}"))
    (tmp_path / "_setup.py").write_text((spec.text_source.parent / "_setup.py").read_text())
    monkeypatch.setattr(type(spec), "text_source", property(lambda self: fake))
    with pytest.raises(build.BuildError, match="profiles"):
        build.build_notebook(spec)


def test_a_sandbox_limit_changed_in_the_rubric_is_the_sandboxs_default(tmp_path):
    """``[limits.check]`` of grader/rubric.toml is grader/sandbox.py's DEFAULT_LIMITS, not a copy of it."""
    _copy_packages(tmp_path)
    rubric = tmp_path / "grader" / "rubric.toml"
    text = rubric.read_text()
    assert text.count("\nmemory_mb = 3072 ") == 1 and text.count("\nnproc = 256 ") == 1
    rubric.write_text(text.replace("\nmemory_mb = 3072 ", "\nmemory_mb = 3000 ").replace("\nnproc = 256 ", "\nnproc = 200 "))
    code = ("import json; from grader.sandbox import DEFAULT_LIMITS; "
            "print(json.dumps({k: DEFAULT_LIMITS[k] for k in ('memory_mb', 'nproc')}))")
    assert _probe(tmp_path, code) == {"memory_mb": 3000, "nproc": 200}


def test_the_rubric_may_not_declare_points_again(tmp_path):
    """A ``[<assignment>.functions]`` table back in the rubric would be a second source: refused."""
    from grader.rubric import RUBRIC_PATH, load_rubric

    rubric = tmp_path / "rubric.toml"
    rubric.write_text(RUBRIC_PATH.read_text() + "\n[one_stage.functions]\nnms = 14\n")
    with pytest.raises(ValueError, match="course.toml"):
        load_rubric(str(rubric))


def test_the_manifest_declares_what_the_grader_reads():
    course = tomllib.loads(COURSE_PATH.read_text())
    assert course == load_course()
    for assignment, entry in course.items():
        assert STUDENT_FUNCTIONS[assignment] == list(entry["functions"])
        assert DEPENDENCIES[assignment] == entry["reused"]
        assert sum(entry["functions"].values()) == 100, assignment


def test_the_gradescope_bundle_carries_the_manifest(tmp_path):
    from grader.gradescope import build_bundle

    with zipfile.ZipFile(build_bundle("one_stage", tmp_path / "bundle.zip")) as archive:
        names = set(archive.namelist())
    assert {"grader/course.toml", "grader/rubric.toml"} <= names


@pytest.mark.parametrize("change, words", [
    (dict(points={"nms": 14, "no_such_function": 86}), "REFERENCE_MODULES"),
    # FCOS is graded by one_stage, iou only by two_stage itself: iou alone is refused.
    (dict(reused=("FCOS", "iou")), r"reused \['iou'\] are graded by no other assignment"),
])
def test_check_against_grader_refuses_names_the_grader_cannot_grade(monkeypatch, change, words):
    from assignments import spec as spec_module

    assignments = dict(spec_module.ASSIGNMENTS)
    name = "one_stage" if "points" in change else "two_stage"
    assignments[name] = replace(assignments[name], **change)
    monkeypatch.setattr(spec_module, "ASSIGNMENTS", assignments)
    with pytest.raises(ValueError, match=words):
        spec_module.check_against_grader()


# The mAP gate's retraining recipes are the notebooks' profiles too.  The embedded schedules name
# the cpu profile and grader/rubric.py fills them in from it (the tests below); the full-VOC one is
# literal (it is not the gpu profile field for field: the gate scores at the original course's
# threshold), and this keeps every key it shares with the gpu profile equal to it.
_RETRAIN_KEYS = {"batch_size": "batch_size", "max_iters": "train_iters", "lr": "lr", "optimizer": "optimizer",
                 "weight_decay": "weight_decay", "warmup_iters": "warmup_iters", "grad_clip": "grad_clip"}


@pytest.mark.parametrize("assignment", ["one_stage", "two_stage"])
def test_the_full_voc_map_gates_retrain_the_gpu_profile(assignment):
    from grader.functions import load_course
    from grader.map_gate import all_schedules
    from grader.rubric import load_rubric

    table = all_schedules(load_rubric()[assignment]["map"])["voc"]
    settings = load_course()[assignment]["profiles"]["gpu"]
    differ = {key: (value, settings.get(_RETRAIN_KEYS[key])) for key, value in table["retrain"].items()
              if key in _RETRAIN_KEYS and value != settings.get(_RETRAIN_KEYS[key])}
    differ.update({key: (table["config"][key], settings[key]) for key in ("fpn_channels", "stem_channels")
                   if table["config"][key] != settings[key]})
    assert not differ, f"rubric {assignment} map schedule 'voc' vs course.toml profile 'gpu': {differ}"


#: The embedded schedules as the rubric stated them literally before they named the cpu profile
#: (the recipes their reference_map/margin were measured with): resolving must give exactly these.
#: The measured figures themselves are not recipe: the embedded ones follow the recorded main-job
#: runs (tests/test_main_job_figures.py), the ci ones the slow retrain tests of tests/test_map_gate.py.
_AdamW = {"optimizer": "adamw", "lr": 0.002, "weight_decay": 0.05, "grad_clip": 10.0}
_EVAL = {"dataset": "embedded", "head_init": "pytorch", "score_thresh": 0.05, "nms_thresh": 0.5}
MEASURED_SCHEDULES = {
    ("one_stage", "embedded"): {**_EVAL, "config": {"num_classes": 20, "fpn_channels": 64, "stem_channels": [64, 64]},
                                "retrain": {"batch_size": 16, "max_iters": 600, "warmup_iters": 50, **_AdamW}},
    ("one_stage", "ci"): {**_EVAL, "config": {"num_classes": 20, "fpn_channels": 32, "stem_channels": [32, 32]},
                          "retrain": {"batch_size": 8, "max_iters": 150, "warmup_iters": 37, **_AdamW}},
    ("two_stage", "embedded"): {**_EVAL, "config": {"num_classes": 20, "fpn_channels": 64, "stem_channels": [64, 64],
                                           "rpn_stem_channels": [64, 64], "batch_size_per_image": 32},
                                "retrain": {"batch_size": 16, "max_iters": 600, "warmup_iters": 50, **_AdamW}},
    ("two_stage", "ci"): {**_EVAL, "config": {"num_classes": 20, "fpn_channels": 32, "stem_channels": [32, 32],
                                     "rpn_stem_channels": [32], "batch_size_per_image": 32},
                          "retrain": {"batch_size": 8, "max_iters": 150, "warmup_iters": 37, **_AdamW}},
}


@pytest.mark.parametrize("assignment, name", sorted(MEASURED_SCHEDULES))
def test_the_profile_schedules_resolve_to_the_measured_recipes(assignment, name):
    from grader.map_gate import all_schedules
    from grader.rubric import load_rubric

    schedule = dict(all_schedules(load_rubric()[assignment]["map"])[name])
    assert schedule.pop("profile") == "cpu", "the embedded schedules read the notebook's cpu profile"
    assert 0 < schedule.pop("margin") < schedule.pop("reference_map") < 1
    assert schedule == MEASURED_SCHEDULES[assignment, name]


def test_a_profile_changed_in_the_manifest_changes_the_gates_recipe(tmp_path, monkeypatch):
    """The gate retrains the notebook's cpu profile, declared once: changed in a copy of the manifest,
    the embedded schedule follows it, and the ci schedule too except for what it states itself."""
    import grader.functions as functions
    from grader.map_gate import select_schedule
    from grader.rubric import load_rubric

    text = functions.COURSE_PATH.read_text()
    head, cpu = text.split("[one_stage.profiles.cpu]\n")
    body, rest = cpu.split("\n[", 1)
    for old, new in (("\ntrain_iters = 600\n", "\ntrain_iters = 601\n"), ("\nlr = 2e-3\n", "\nlr = 3e-3\n"),
                     ("\nfpn_channels = 64\n", "\nfpn_channels = 48\n"), ('\noptimizer = "adamw"\n', '\noptimizer = "sgd"\n')):
        assert body.count(old) == 1, old
        body = body.replace(old, new)
    manifest = tmp_path / "course.toml"
    manifest.write_text(head + "[one_stage.profiles.cpu]\n" + body + "\n[" + rest)
    monkeypatch.setattr(functions, "COURSE_PATH", manifest)
    gate = load_rubric.__wrapped__()["one_stage"]["map"]  # uncached: the copy, not the real manifest

    name, embedded, _ = select_schedule(gate, "embedded", None)
    assert name == "embedded" and embedded["config"]["fpn_channels"] == 48
    assert {k: embedded["retrain"][k] for k in ("max_iters", "lr", "optimizer")} == {"max_iters": 601, "lr": 3e-3,
                                                                                    "optimizer": "sgd"}
    name, ci, _ = select_schedule(gate, "embedded", 150)
    assert name == "ci" and ci["config"]["fpn_channels"] == 32 and ci["retrain"]["max_iters"] == 150
    assert (ci["retrain"]["lr"], ci["retrain"]["optimizer"]) == (3e-3, "sgd")
    # The two-stage profile was not touched.
    assert load_rubric.__wrapped__()["two_stage"]["map"]["schedules"]["embedded"]["retrain"]["max_iters"] == 600


def test_a_schedule_naming_a_profile_the_manifest_lacks_is_refused(tmp_path):
    from grader.rubric import RUBRIC_PATH, load_rubric

    text = RUBRIC_PATH.read_text()
    assert text.count('[one_stage.map.schedules.ci]\nprofile = "cpu"\n') == 1
    rubric = tmp_path / "rubric.toml"
    rubric.write_text(text.replace('[one_stage.map.schedules.ci]\nprofile = "cpu"\n',
                                   '[one_stage.map.schedules.ci]\nprofile = "laptop"\n'))
    with pytest.raises(ValueError, match=r"one_stage.map.schedules.ci\] names profile 'laptop'.*tiny, cpu, gpu"):
        load_rubric.__wrapped__(str(rubric))
