"""What a released assignment folder must hold for its first cell to work.

A student gets only the release folder (``nbgrader generate_assignment``'s
``release/<assignment>/``).  Its first cell installs the student package from
the wheel in that folder (on Colab), which holds the helpers the notebook
imports (``data_utils.course_tools``), then needs the sanity fixtures next to
the notebook.  :func:`release_problems` lists what is missing or wrong;
``python -m assignments selftest`` runs it on the release it generates.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import nbformat

from assignments.spec import ASSIGNMENTS

#: The notebooks' helpers (``from data_utils.course_tools import ...``), inside the student wheel.
HELPERS_FILE = "data_utils/course_tools.py"


def release_problems(folder: Path, assignment: str) -> list[str]:
    """Everything missing or wrong in the release folder of ``assignment`` (empty: none)."""
    from assignments.build import BUILD_COMMAND, fixture_assignments, fixture_name
    from assignments.student_package import wheel_name, wheel_problems

    spec = ASSIGNMENTS[assignment]
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder}: no release folder (run nbgrader generate_assignment {assignment})"]
    problems = []
    notebook = folder / spec.notebook_name
    if not notebook.is_file():
        problems.append(f"{notebook.name} is missing")
    else:
        cells = [c for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
        if not cells or f'ASSIGNMENT = "{assignment}"' not in cells[0].source or "detection_course_student-" not in cells[0].source:
            problems.append(f"{notebook.name}: the first code cell is not the set-up cell")
    for owner in fixture_assignments(spec):
        if not (folder / fixture_name(owner)).is_file():
            problems.append(f"{fixture_name(owner)} is missing (the sanity checks read it)")
    wheels = sorted(folder.glob("detection_course_student-*.whl"))
    if not wheels:
        problems.append(f"no student package ({wheel_name()}): the first cell cannot install the course package; "
                        f"run `{BUILD_COMMAND}`, then generate the assignment again")
    elif len(wheels) > 1:
        problems.append("several student wheels: " + ", ".join(w.name for w in wheels))
    else:
        if wheels[0].name != wheel_name():
            problems.append(f"{wheels[0].name}: expected {wheel_name()} (the package version changed)")
        problems += [f"{wheels[0].name}: {p}" for p in wheel_problems(wheels[0])]
        with zipfile.ZipFile(wheels[0]) as archive:
            if HELPERS_FILE not in archive.namelist():
                problems.append(f"{wheels[0].name} lacks {HELPERS_FILE} (the notebook imports it): run `{BUILD_COMMAND}`")
    return problems
