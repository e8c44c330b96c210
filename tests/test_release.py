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
    env = {**os.environ, "PYTHONPATH": str(clone)}
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


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_generating_from_a_fresh_clone_releases_the_student_package(released, name):
    release = released / "assignments" / "course" / "release" / name
    assert (release / wheel_name()).is_file()
    assert release_problems(release, name) == []


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
    (source / "two_stage" / "course_tools.py").unlink()
    with pytest.raises(BuildError, match="course_tools.py.*python -m assignments build"):
        ensure_release_files(source, log=lambda _: None)


def test_release_problems_names_each_missing_piece(released, tmp_path):
    release = tmp_path / "one_stage"
    shutil.copytree(released / "assignments/course/release/one_stage", release)
    (release / wheel_name()).unlink()
    (release / "course_tools.py").unlink()
    problems = " | ".join(release_problems(release, "one_stage"))
    assert "course_tools.py is missing" in problems and "no student package" in problems, problems


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
