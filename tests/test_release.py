"""A release generated from a fresh clone holds what a student needs, and its
first cells work with only the student package installed.

"Fresh clone": the files git tracks (plus uncommitted, not ignored ones), so
no student wheel (git ignores it).  ``nbgrader generate_assignment`` must
build the wheel itself (``assignments/course/nbgrader_config.py`` calls
:func:`assignments.build.ensure_release_files_or_exit`), or stop with a message
naming ``python -m assignments build``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from assignments.build import BUILD_COMMAND, BuildError, ensure_release_files
from assignments.release import release_problems
from assignments.spec import ASSIGNMENTS
from assignments.student_package import wheel_name

ROOT = Path(__file__).resolve().parents[1]


def fresh_clone(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def nbgrader(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(clone),  # nbgrader runs alembic by name: this interpreter's bin/ first
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("NBGRADER_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=clone / "assignments" / "course", env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A fresh clone in which ``nbgrader generate_assignment`` ran for both assignments."""
    clone = fresh_clone(tmp_path_factory.mktemp("clone"))
    assert not list(clone.glob("assignments/course/source/*/*.whl")), "git should not track the wheel"
    for name in ASSIGNMENTS:
        proc = nbgrader(clone, "generate_assignment", name, "--force")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return clone


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_generating_from_a_fresh_clone_releases_the_student_package(released, name):
    release = released / "assignments" / "course" / "release" / name
    assert (release / wheel_name()).is_file()
    assert release_problems(release, name) == []


@pytest.mark.slow
def test_generate_assignment_stops_naming_the_build_command_when_a_generated_file_is_missing(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    (clone / "assignments/course/source/one_stage/one_stage_sanity.pt").unlink()
    proc = nbgrader(clone, "generate_assignment", "one_stage", "--force")
    assert proc.returncode != 0
    assert BUILD_COMMAND in proc.stderr and "one_stage_sanity.pt" in proc.stderr, proc.stderr[-2000:]
    assert not (clone / "assignments/course/release/one_stage").exists()


def test_ensure_release_files_rebuilds_a_stale_wheel_and_keeps_a_fresh_one(tmp_path):
    source = tmp_path / "source"
    for name, spec in ASSIGNMENTS.items():
        shutil.copytree(spec.source_dir, source / name, ignore=shutil.ignore_patterns("*.whl"))
    assert len(ensure_release_files(source, log=lambda _: None)) == len(ASSIGNMENTS)
    assert ensure_release_files(source, log=lambda _: None) == []  # up to date: nothing rebuilt
    wheel = source / "one_stage" / wheel_name()
    wheel.write_bytes(b"stale")
    assert ensure_release_files(source, log=lambda _: None) == [wheel] and wheel.read_bytes() != b"stale"
    (source / "two_stage" / "two_stage.ipynb").unlink()
    with pytest.raises(BuildError, match="two_stage.ipynb.*python -m assignments build"):
        ensure_release_files(source, log=lambda _: None)


@pytest.mark.slow
def test_release_problems_names_each_missing_piece(released, tmp_path):
    release = tmp_path / "one_stage"
    shutil.copytree(released / "assignments/course/release/one_stage", release)
    (release / wheel_name()).unlink()
    (release / "one_stage_sanity.pt").unlink()
    problems = " | ".join(release_problems(release, "one_stage"))
    assert "one_stage_sanity.pt is missing" in problems and "no student package" in problems, problems


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_first_cells_of_the_release_work_with_only_the_student_package(released, name, tmp_path):
    """pip-install the released wheel alone, then run the release notebook's set-up and
    imports cells in its folder from an interpreter that cannot see this repository."""
    release = released / "assignments" / "course" / "release" / name
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
                    str(release / wheel_name())], check=True)
    cells = [c for c in nbformat.read(release / f"{name}.ipynb", as_version=4).cells if c.cell_type == "code"]
    setup, imports = cells[0], cells[1]
    assert imports.metadata["nbgrader"]["grade_id"] == "imports"
    code = "\n".join(line for line in (setup.source + "\n" + imports.source).splitlines()
                     if not line.lstrip().startswith("%"))
    script = f"""
import sys
sys.path[:] = ["", {str(site)!r}, {sysconfig.get_paths()["purelib"]!r}] + [p for p in sys.path if "lib/python3" in p and "site-packages" not in p]
import importlib.util
assert importlib.util.find_spec("solutions") is None, "solutions is importable"
exec(compile({code!r}, "<setup and imports cells>", "exec"))
import data_utils
print("DATA_UTILS", data_utils.__file__)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=release, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "No GPU: running on the CPU" in proc.stdout or "GPU:" in proc.stdout, proc.stdout
    assert f"DATA_UTILS {site}" in proc.stdout, proc.stdout


def _setup_source(name: str) -> str:
    from assignments import build

    cells = [c for c in build.build_notebook(ASSIGNMENTS[name]).cells if c.cell_type == "code"]
    return cells[0].source


def _fake_colab(monkeypatch, mounted: list):
    import types

    google, colab, drive = (types.ModuleType(n) for n in ("google", "google.colab", "google.colab.drive"))
    drive.mount = mounted.append
    colab.drive = drive
    google.colab = colab
    for module in (google, colab, drive):
        monkeypatch.setitem(sys.modules, module.__name__, module)


def test_colab_setup_with_a_wrong_drive_folder_says_what_to_fix(monkeypatch, tmp_path):
    mounted: list = []
    _fake_colab(monkeypatch, mounted)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    source = _setup_source("one_stage").replace("/content/drive/MyDrive/detection-course/one_stage",
                                                str(tmp_path / "not-there"))
    with pytest.raises(Exception) as error:
        exec(compile(source, "<setup>", "exec"), namespace)
    assert type(error.value).__name__ == "SetupError" and not isinstance(error.value, FileNotFoundError)
    assert "does not exist on your Google Drive" in str(error.value) and "DRIVE_FOLDER" in str(error.value)
    assert error.value._render_traceback_() == [f"SetupError: {error.value}"]  # one line in Jupyter
    assert mounted == ["/content/drive"]


def test_colab_setup_without_a_gpu_says_how_to_switch_the_runtime(monkeypatch, tmp_path, capsys):
    import torch

    _fake_colab(monkeypatch, [])
    folder = tmp_path / "one_stage"
    shutil.copytree(ASSIGNMENTS["one_stage"].source_dir, folder, ignore=shutil.ignore_patterns("*.ipynb"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    source = _setup_source("one_stage").replace("/content/drive/MyDrive/detection-course/one_stage", str(folder))
    exec(compile(source, "<setup>", "exec"), {})
    out = capsys.readouterr().out
    assert "Change runtime type" in out and "GPU" in out
    assert Path.cwd() == folder


def test_readme_for_students_describes_what_a_student_has():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## For students"):text.index("## For instructors")]
    for needed in ("pip install detection_course_student-*.whl jupyterlab", "DRIVE_FOLDER", "Change runtime type",
                   "data_utils/conventions.py", "conda create"):
        assert needed in section, needed
    assert "solutions/" not in section and "./run" not in section
