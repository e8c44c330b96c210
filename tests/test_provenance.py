"""Every generated notebook and fixture says what it was generated from and the
command that regenerates it (d2l-style "generated, do not edit" marks)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from assignments.build import BUILD_COMMAND, committed_files
from assignments.spec import ASSIGNMENTS
from grader.sanity import FIXTURE_DIR

ROOT = Path(__file__).resolve().parents[1]


def _assert_mark(mark: dict, where: str, must_name: str) -> None:
    assert mark["regenerate_with"] == BUILD_COMMAND, where
    assert must_name in mark["generated_from"], f"{where}: {mark['generated_from']}"
    missing = [s for s in mark["generated_from"] if not (ROOT / s).exists()]
    assert not missing, f"{where} names sources that do not exist: {missing}"


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_generated_notebooks_carry_the_mark_in_metadata_and_first_cell(name):
    spec = ASSIGNMENTS[name]
    nb = nbformat.read(spec.source_dir / spec.notebook_name, as_version=4)
    text_source = spec.text_source.resolve().relative_to(ROOT).as_posix()
    _assert_mark(nb.metadata["course"], spec.notebook_name, text_source)
    assert "assignments/src/_setup.py" in nb.metadata["course"]["generated_from"], "the included set-up cell"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and BUILD_COMMAND in first.source and text_source in first.source
    # A locked, ungraded nbgrader cell: release and autograde restore it like every other.
    assert first.metadata["nbgrader"] == {**first.metadata["nbgrader"], "locked": True, "grade": False, "solution": False}


@pytest.mark.parametrize("name", list(ASSIGNMENTS))
def test_generated_fixtures_carry_the_mark(name):
    spec = ASSIGNMENTS[name]
    fixtures = [spec.source_dir / f for f in committed_files(spec) if f.endswith(".pt")]
    fixtures.append(FIXTURE_DIR / f"{name}_sanity.pt")
    for path in fixtures:
        data = torch.load(path, map_location="cpu", weights_only=True)
        _assert_mark(data["provenance"], str(path.relative_to(ROOT)), "grader/sanity.py")
