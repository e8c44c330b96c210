"""The project's declarations agree with each other (pip, conda, CI, README), and the
student wheel is what the build backend makes of them (issue #15).

The student wheel used to be zipped by hand; it is now built by setuptools from a
staged copy of the student files (``assignments.student_package.build_wheel``).  The
tests below hold what that must keep: exactly the contents rule, the requirements
metadata, the same bytes for the same sources, and errors that name the fix.
"""

from __future__ import annotations

import base64
import email
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from assignments import student_package
from assignments.build import BuildError
from assignments.student_package import DIST_NAME, REQUIRES, build_wheel, contents_problems, wheel_name

ROOT = Path(__file__).resolve().parents[1]
#: conda-forge names that differ from PyPI names.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    parsed = [Requirement(r) for r in reqs]
    return {r.name.lower(): str(r.specifier) for r in parsed}


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if not isinstance(dep, str):
            continue
        name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", dep).groups()
        if name in {"python", "pip"}:
            continue
        out[CONDA_TO_PYPI.get(name, name).lower()] = str(Requirement(f"x{spec}").specifier)
    return out


def test_environment_yml_and_pyproject_declare_the_same_dependencies():
    assert _conda_requirements() == _pyproject_requirements()


def test_constraints_pin_every_dependency_exactly():
    pins = {}
    for line in (ROOT / "constraints/ci.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            pins[req.name.lower()] = str(req.specifier)
    for name, spec in _pyproject_requirements().items():
        assert name in pins, f"{name} is not pinned in constraints/ci.txt"
        version = pins[name].removeprefix("==")
        assert pins[name].startswith("=="), f"{name} must be pinned with =="
        assert Requirement(f"{name}{spec}").specifier.contains(version), f"pin {name}=={version} violates {spec}"
    assert pins["torch"] == "==2.14.1" and pins["torchvision"] == "==0.29.1"
    assert pins["nbgrader"].startswith("==0.9.")


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(\./run \w+)\s*$", readme, flags=re.M)
    assert "./run test" in commands and "./run main" in commands
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert "./run test" in ci


# ----------------------------------------------------------------- the student wheel


@pytest.fixture(scope="module")
def student_wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("student-wheel"))


def _dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(f"{DIST_NAME}-{student_package.version()}.dist-info/{name}").decode()


def test_the_student_wheel_requires_what_the_project_declares():
    declared = _pyproject_requirements()
    for requirement in map(Requirement, REQUIRES):
        assert declared.get(requirement.name.lower()) == str(requirement.specifier), requirement


def test_the_student_wheel_is_built_by_setuptools_with_the_requirements_metadata(student_wheel):
    assert student_wheel.name == wheel_name()
    assert re.search(r"^Generator: setuptools \(", _dist_info(student_wheel, "WHEEL"), flags=re.M), \
        "the wheel was not written by the build backend"
    metadata = email.message_from_string(_dist_info(student_wheel, "METADATA"))
    assert metadata["Name"].replace("-", "_") == DIST_NAME and metadata["Version"] == student_package.version()
    assert metadata.get_all("Requires-Dist") == list(REQUIRES)
    assert metadata["Requires-Python"] == student_package.REQUIRES_PYTHON
    assert metadata["Summary"] == student_package.SUMMARY


def test_the_student_wheel_holds_exactly_the_contents_rule_and_a_valid_record(student_wheel):
    files = student_package._package_files()
    assert contents_problems(student_wheel, files) == []
    assert "grader/course.toml" in dict(files) and "data_utils/course_tools.py" in dict(files)
    with zipfile.ZipFile(student_wheel) as archive:
        names = archive.namelist()
        record = [line.split(",") for line in _dist_info(student_wheel, "RECORD").splitlines()]
        for name, digest, size in record:
            if digest:  # RECORD lists itself without a hash
                data = archive.read(name)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert int(size) == len(data), name
    info = f"{DIST_NAME}-{student_package.version()}.dist-info/"
    assert sorted(n for n in names if n.startswith(info)) == sorted(
        info + n for n in ("METADATA", "WHEEL", "top_level.txt", "RECORD"))
    assert sorted(row[0] for row in record) == sorted(names)


def test_the_student_wheel_has_the_same_bytes_whatever_the_umask_clock_and_environment(student_wheel, tmp_path,
                                                                                        monkeypatch):
    """The caller's SOURCE_DATE_EPOCH and umask, and the sources' mtimes, do not reach the bytes."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    previous = os.umask(0o002)
    try:
        again = build_wheel(tmp_path)
    finally:
        os.umask(previous)
    assert again.read_bytes() == student_wheel.read_bytes()
    with zipfile.ZipFile(again) as archive:
        assert {info.date_time for info in archive.infolist()} == {(2020, 1, 1, 0, 0, 0)}


def test_contents_problems_names_each_missing_extra_and_changed_file(student_wheel):
    files = dict(student_package._package_files())
    files.pop("grader/sanity.py")
    files["data_utils/extra.py"] = b""
    files["data_utils/types.py"] += b"# changed\n"
    problems = contents_problems(student_wheel, sorted(files.items()))
    assert problems == ["data_utils/extra.py: missing from the wheel", "grader/sanity.py: in the wheel but not staged",
                        "data_utils/types.py: differs from the source"]


def test_a_wheel_the_backend_packs_wrong_is_refused(tmp_path, monkeypatch):
    """setuptools drops a data file the staged pyproject.toml forgets: the build says which, writes nothing."""
    staged = student_package._pyproject
    monkeypatch.setattr(student_package, "_pyproject",
                        lambda files: staged(files).replace('"grader" = ["course.toml"]', ""))
    with pytest.raises(BuildError, match="grader/course.toml: missing from the wheel"):
        build_wheel(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_backend_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(student_package, "BACKEND_SCRIPT", "raise SystemExit('No module named setuptools')")
    with pytest.raises(BuildError) as error:
        build_wheel(tmp_path)
    message = str(error.value)
    assert "setuptools could not build the student wheel" in message and "No module named setuptools" in message
    assert "pip install 'setuptools>=77'" in message
    assert list(tmp_path.iterdir()) == []


def test_pip_installs_the_student_wheel_and_reads_its_metadata(student_wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(target), str(student_wheel)], check=True)
    (dist,) = importlib.metadata.distributions(path=[str(target)])
    assert dist.metadata["Name"].replace("-", "_") == DIST_NAME and dist.requires == list(REQUIRES)
    assert (target / "data_utils" / "course_tools.py").is_file() and (target / "grader" / "course.toml").is_file()
    assert not (target / "solutions").exists() and not (target / "grader" / "checks.py").exists()


def test_student_package_command_reports_a_failed_build_without_a_traceback(tmp_path, monkeypatch, capsys):
    """``python -m assignments student-package``: a backend failure is one message and exit 1."""
    from assignments import student_package
    from assignments.__main__ import main
    from assignments.build import BuildError

    def fail(out):
        raise BuildError("the build backend failed: setuptools too old; pip install 'setuptools>=77'")

    monkeypatch.setattr(student_package, "build_wheel", fail)
    assert main(["student-package", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the build backend failed") and "Traceback" not in err
