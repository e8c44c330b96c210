"""The assignment notebooks: built from one source of truth, student package without
answers, submission helper, feedback filter, nbgrader configuration.

The nbgrader round trip (generate, validate, autograde, feedback, leaks in the
release) is in ``tests/test_notebooks_e2e.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat import NotebookNode

from assignments import build, extract
from assignments.feedback import StripHiddenTests
from assignments.spec import ASSIGNMENTS, COURSE_DIR, check_against_grader
from assignments.student_package import STUDENT_GRADER_MODULES, build_wheel, wheel_problems
from data_utils.course_tools import submission_problems
from grader.markers import strip_hidden_tests

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built() -> dict[str, NotebookNode]:
    return {name: build.build_notebook(spec) for name, spec in ASSIGNMENTS.items()}


# ----------------------------------------------------------------- the build


def test_spec_agrees_with_the_grader():
    check_against_grader()
    assert all(spec.total_points == 100 for spec in ASSIGNMENTS.values())


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_each_student_function_is_a_solution_cell_followed_by_its_graded_check(built, name):
    spec = ASSIGNMENTS[name]
    cells = built[name].cells
    graded = []
    for i, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            check_cell = cells[i + 1]
            check_meta = check_cell.metadata["nbgrader"]
            assert check_meta["grade_id"] == f"check-{meta['grade_id']}"
            assert check_meta["locked"] and not check_meta["solution"]
            assert f'check("{meta["grade_id"]}")' in check_cell.source
            if meta["grade_id"] in spec.points:
                graded.append(meta["grade_id"])
                assert check_meta["grade"] and check_meta["points"] == spec.points[meta["grade_id"]]
                assert "### BEGIN HIDDEN TESTS" in check_cell.source
                assert f'grade_cell("{name}", "{meta["grade_id"]}", globals())' in check_cell.source
            else:  # code reused from the other assignment: checked, not graded
                assert meta["grade_id"] in spec.reused and not check_meta["grade"]
                assert "HIDDEN" not in check_cell.source
    assert graded == spec.functions


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_solution_cells_hold_the_reference_source_verbatim(built, name):
    """The reference is written once, in solutions/: each solution cell is its exact text."""
    for cell in built[name].cells:
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("solution"):
            continue
        definition = extract.find_definition(meta["grade_id"])
        assert cell.source.endswith(build.present(definition.source))
        assert extract.BEGIN_SOLUTION in cell.source and extract.END_SOLUTION in cell.source


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_notebook_metadata_is_valid_for_jupyterlab_and_nbgrader(built, name):
    nb = built[name]
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    ids = [cell.id for cell in nb.cells]
    assert len(ids) == len(set(ids))
    grade_ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(grade_ids) == len(set(grade_ids))
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.cell_type == "code" and "google.colab" in first.source and "pip" in first.source


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_no_code_students_see_mentions_solutions(built, name):
    for cell in built[name].cells:
        if cell.cell_type != "code":
            continue
        visible = strip_hidden_tests(cell.source)
        assert not re.search(r"\bsolutions\b", visible), cell.id


def test_locations_are_taught_x_fastest(built):
    """The original course's notebook expected transposed locations; ours must not."""
    text = "\n".join(c.source for c in built["one_stage"].cells if c.cell_type == "markdown")
    assert "(4, 4), (12, 4), (20, 4)" in text
    assert "[4, 12]" not in text and "(4, 12)" not in text


_PRESET_OF = {"one_stage": "fcos-embedded", "two_stage": "faster_rcnn-embedded"}


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_cpu_profile_trains_the_main_jobs_recipe(built, name, monkeypatch):
    """The notebooks' ``cpu`` profile and ``./run main`` train the same recipe on
    the embedded dataset; the README and the notebook quote the same figures."""
    from solutions.presets import PRESETS

    (cell,) = [c for c in built[name].cells if c.get("id") == "settings"]
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    monkeypatch.delenv("COURSE_SMALL", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    import os

    import torch

    from data_utils.course_tools import laptop_threads

    namespace = {"os": os, "torch": torch, "laptop_threads": laptop_threads}
    threads = torch.get_num_threads()
    try:
        exec(compile(cell.source, f"{name}:settings", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    settings, preset = namespace["SETTINGS"], PRESETS[_PRESET_OF[name]]
    assert namespace["PROFILE"] == "cpu"
    train = preset.train
    assert (settings["train_iters"], settings["lr"], settings["warmup_iters"], settings["optimizer"],
            settings["weight_decay"], settings["grad_clip"]) == \
        (train.max_iters, train.lr, train.warmup_iters, train.optimizer, train.weight_decay, train.grad_clip)
    assert (settings["fpn_channels"], tuple(settings["stem_channels"]), settings["batch_size"], settings["weights"],
            settings["head_init"]) == \
        (preset.fpn_channels, tuple(preset.stem_channels), preset.batch_size, preset.weights, preset.head_init)


def test_build_reports_a_missing_import(tmp_path, monkeypatch):
    spec = ASSIGNMENTS["one_stage"]
    text = spec.text_source.read_text().replace("from torchvision.ops import sigmoid_focal_loss\n", "")
    fake = tmp_path / "one_stage.md"
    fake.write_text(text)
    (tmp_path / "_setup.py").write_text((spec.text_source.parent / "_setup.py").read_text())
    monkeypatch.setattr(type(spec), "text_source", property(lambda self: fake))
    with pytest.raises(build.BuildError, match="sigmoid_focal_loss"):
        build.build_notebook(spec)


def test_committed_source_folders_match_a_fresh_build():
    """CI fails on drift: the committed notebooks, helper and fixtures are build outputs."""
    problems = build.drift()
    assert not problems, build.describe_drift(problems)


# ----------------------------------------------------------------- student package


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_student_wheel_holds_data_utils_and_the_visible_check_runner_only(wheel):
    assert wheel_problems(wheel) == []
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {n.split("/")[0] for n in names}
    assert {"data_utils", "grader"} <= tops and "solutions" not in tops
    assert sorted(Path(n).stem for n in names if n.count("/") == 1 and n.startswith("grader/")
                   and n.endswith(".py")) == sorted(STUDENT_GRADER_MODULES)
    harness = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "grader" / "harness").glob("*.py"))
    assert sorted(n for n in names if n.startswith("grader/harness/")) == harness
    assert sorted(n for n in names if n.startswith("grader/") and not n.endswith(".py")) == ["grader/course.toml"]
    assert not any("checks" in n or "rubric" in n or "sandbox" in n for n in names)


def test_student_wheel_is_reproducible(wheel, tmp_path):
    assert build_wheel(tmp_path).read_bytes() == wheel.read_bytes()


def test_students_can_install_and_run_the_visible_checks_without_the_reference(wheel, tmp_path):
    """pip-install the wheel into an empty folder and use it from an interpreter that
    cannot see this repository: data_utils imports, the visible checks run (and
    catch the transposed-locations bug), the notebooks' helpers come with it and read
    the fixture from the current folder, and `solutions` does not exist."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True)
    fixture = ASSIGNMENTS["one_stage"].source_dir / "one_stage_sanity.pt"
    (tmp_path / fixture.name).write_bytes(fixture.read_bytes())  # the release folder: the kernel's cwd
    script = f"""
import sys
sys.path[:] = [{str(target)!r}, {sysconfig.get_paths()["purelib"]!r}] + [
    p for p in sys.path if p.endswith(".zip") or "lib/python3" in p and "site-packages" not in p]
import importlib.util
assert importlib.util.find_spec("solutions") is None, "solutions is importable"
assert importlib.util.find_spec("grader.checks") is None, "hidden checks are importable"
import data_utils.data.voc, data_utils.training.engine, data_utils.evaluation.voc_eval, data_utils.evaluation.visualize, data_utils.data.synthetic
from grader.sanity import run_sanity
import torch

def get_fpn_location_coords(shapes, strides, dtype=torch.float32, device="cpu"):
    out = {{}}
    for level, shape in shapes.items():
        h, w = shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        out[level] = (torch.stack([xs, ys], -1).reshape(-1, 2).to(dtype) + 0.5) * strides[level]
    return out

good = run_sanity("one_stage", "get_fpn_location_coords", get_fpn_location_coords, fixture_path={str(fixture)!r})
def transposed(shapes, strides, dtype=torch.float32, device="cpu"):
    return {{k: v.flip(-1) for k, v in get_fpn_location_coords(shapes, strides, dtype, device).items()}}
bad = run_sanity("one_stage", "get_fpn_location_coords", transposed, fixture_path={str(fixture)!r})
from data_utils.course_tools import check
check("get_fpn_location_coords", namespace={{"get_fpn_location_coords": get_fpn_location_coords}})  # raises on failure
print("RESULT", all(r.passed for r in good), any(not r.passed for r in bad), sorted(sys.modules.keys() & {{"solutions"}}))
"""
    proc = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT True True []" in proc.stdout, proc.stdout[-2000:]


def test_release_folders_ship_the_fixtures_the_checks_need():
    for spec in ASSIGNMENTS.values():
        for fixture in build.fixture_assignments(spec):
            assert (spec.source_dir / build.fixture_name(fixture)).is_file()
        # the helpers come with the student package (one copy), not next to the notebook
        assert not (spec.source_dir / "course_tools.py").exists()


# ----------------------------------------------------------------- submission helper


def _stubbed(nb: NotebookNode) -> NotebookNode:
    """What students receive: nbgrader's own ClearSolutions on the source notebook."""
    from nbgrader.preprocessors import ClearSolutions

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb, _ = ClearSolutions().preprocess(nb, {})
    return nb


def test_submission_refuses_a_missing_or_unfinished_notebook_and_accepts_a_complete_one(built, tmp_path, monkeypatch):
    from data_utils import course_tools

    path = tmp_path / "one_stage.ipynb"
    errors, _ = submission_problems("one_stage", path)
    assert errors and "does not exist" in errors[0]

    nbformat.write(_stubbed(built["one_stage"]), path)
    errors, unimplemented = submission_problems("one_stage", path)
    assert errors == [] and unimplemented == ASSIGNMENTS["one_stage"].functions
    with pytest.raises(RuntimeError, match="not implemented yet"):
        course_tools.make_submission("one_stage", path)

    nbformat.write(built["one_stage"], path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="one_stage_weights.pt is missing next to the notebook"):
        course_tools.make_submission("one_stage")
    archive = course_tools.make_submission("one_stage", weights=False)
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["one_stage.ipynb"]
        assert z.read("one_stage.ipynb") == path.read_bytes()


def test_submission_carries_the_saved_weights_with_a_size_check(built, tmp_path, monkeypatch):
    """What the notebook's save cell writes goes into the archive; a file that is too
    large or not a checkpoint is refused with the reason."""
    import torch

    from data_utils import course_tools
    from data_utils.training.engine import save_checkpoint

    path = tmp_path / "one_stage.ipynb"
    nbformat.write(built["one_stage"], path)
    weights = tmp_path / "one_stage_weights.pt"
    config = {"detector": "fcos", "num_classes": 20, "fpn_channels": 8, "stem_channels": [8]}
    save_checkpoint(weights, torch.nn.Linear(3, 2), model_config=config)
    archive = course_tools.make_submission("one_stage", path)
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["one_stage.ipynb", "one_stage_weights.pt"]
        assert z.read("one_stage_weights.pt") == weights.read_bytes()
    monkeypatch.setattr(course_tools, "WEIGHTS_LIMIT_MIB", 0.0001)
    with pytest.raises(RuntimeError, match=r"one_stage_weights.pt is \d+ MiB, more than"):
        course_tools.make_submission("one_stage", path)
    monkeypatch.undo()
    weights.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="not a readable checkpoint"):
        course_tools.make_submission("one_stage", path)


def test_submission_detects_unsaved_edits_and_deleted_cells(built, tmp_path):
    path = tmp_path / "two_stage.ipynb"
    nb = built["two_stage"]
    nbformat.write(nb, path)
    iou_cell = next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "iou")
    history = [iou_cell, iou_cell + "\n# edited after saving"]
    errors, _ = submission_problems("two_stage", path, history)
    assert len(errors) == 1 and errors[0].startswith("iou: the saved notebook differs")
    assert submission_problems("two_stage", path, [iou_cell]) == ([], [])

    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "iou"]
    nbformat.write(nb, path)
    errors, _ = submission_problems("two_stage", path)
    assert any(e.startswith("iou: no cell") for e in errors)


# ----------------------------------------------------------------- feedback filter


def test_feedback_filter_removes_hidden_tests_and_their_tracebacks():
    source = build.check_cell_source("one_stage", "nms", graded=True)
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "check-nms", "points": 14, "score": 0.0}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="nms:\n  [pass] visible case\n[hidden tests]\nsecret case 3\n"),
        nbformat.v4.new_output("error", ename="AssertionError", evalue="secret: expected [1, 2]",
                               traceback=["Traceback ...", 'grade_cell("one_stage", "nms", globals())']),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb, _ = StripHiddenTests().preprocess(nb, {})
    text = json.dumps(nb)
    for secret in ("HIDDEN TESTS", "grade_cell", "secret", "Traceback", "[hidden tests]"):
        assert secret not in text
    assert "visible case" in text and "0.0 / 14" in text


# ----------------------------------------------------------------- nbgrader configuration


def _load_config(monkeypatch, **env):
    from traitlets.config.loader import PyFileConfigLoader

    for key in ("NBGRADER_DB_URL", "COURSE_CELL_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return PyFileConfigLoader("nbgrader_config.py", path=str(COURSE_DIR)).load_config()


def test_nbgrader_config_defaults_to_a_sqlite_gradebook_in_the_course(monkeypatch):
    config = _load_config(monkeypatch)
    assert config.CourseDirectory.root == str(COURSE_DIR)
    assert config.CourseDirectory.db_url == f"sqlite:///{COURSE_DIR / 'gradebook.db'}"
    assert config.Execute.timeout == 180
    names = [p.__name__ for p in config.GenerateFeedback.preprocessors]
    assert names == ["GetGrades", "StripHiddenTests", "CSSHTMLHeaderPreprocessor"]


def test_nbgrader_config_accepts_a_server_database_and_a_timeout(monkeypatch):
    url = "postgresql+psycopg://grader:secret@db.example.edu/detection_course"
    config = _load_config(monkeypatch, NBGRADER_DB_URL=url, COURSE_CELL_TIMEOUT="600")
    assert config.CourseDirectory.db_url == url
    assert config.Execute.timeout == 600
