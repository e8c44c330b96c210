"""The project's declarations agree with each other (pip, conda, CI, README)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

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
