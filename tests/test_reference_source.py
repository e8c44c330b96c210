"""grader/source.py's reference source: the convention imports of the reference modules are
hoisted into the one header of the concatenated source, as a notebook has them."""

from __future__ import annotations

import ast

import pytest

from grader.source import reference_source, release_source


@pytest.mark.parametrize("assignment", ["one_stage", "two_stage"])
@pytest.mark.parametrize("build", [reference_source, release_source])
def test_convention_imports_are_hoisted_into_the_header_only(assignment, build):
    source = build(assignment)
    header, _, bodies = source.partition("# ---- solutions/")
    assert "from data_utils.conventions import" in header
    # Each module imports the conventions itself; the concatenation must state them once, on top,
    # and import nothing from solutions (students do not have it).
    assert "from data_utils.conventions import" not in bodies
    imported = [node.module for node in ast.parse(source).body if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m and m.split(".")[0] == "solutions"]
    names = {a.name for node in ast.parse(header).body if isinstance(node, ast.ImportFrom) for a in node.names}
    assert {"BACKGROUND", "Detections", "FPN_STRIDES"} <= names
