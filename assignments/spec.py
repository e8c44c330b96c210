"""The two assignments: where their text lives, which functions students write
and how many points each is worth.

The functions, their points and the reused cells are declared once, in the course
manifest ``grader/course.toml`` (read through :func:`grader.functions.load_course`);
this module adds where each assignment's files live.

The *order* of the graded functions is the order of their cells in the
notebook; the build checks that the text source asks for exactly these
functions, and :func:`check_against_grader` that the grader has a reference
for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grader.functions import load_course

HERE = Path(__file__).resolve().parent
COURSE_DIR = HERE / "course"
SOURCE_DIR = COURSE_DIR / "source"
TEXT_DIR = HERE / "src"
COURSE_ID = "detection-course"


@dataclass(frozen=True)
class AssignmentSpec:
    name: str
    title: str
    #: Graded student functions/classes, in notebook order, with their points.
    points: dict[str, int]
    #: Ungraded solution cells: code reused from another assignment that the
    #: student pastes in (the two-stage detector needs the backbone, the
    #: locations and NMS from the one-stage assignment).
    reused: tuple[str, ...] = field(default=())
    #: The notebook's settings profiles (``tiny``, ``cpu``, ``gpu``): ``{profile: {key: value}}``,
    #: keys in notebook order, ``None`` where the manifest leaves a key out (TOML has no null).
    profiles: dict[str, dict] = field(default_factory=dict)
    #: How the settings literal groups the keys: one tuple per line of the notebook.
    profile_lines: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def text_source(self) -> Path:
        return TEXT_DIR / f"{self.name}.md"

    @property
    def source_dir(self) -> Path:
        return SOURCE_DIR / self.name

    @property
    def notebook_name(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def functions(self) -> list[str]:
        return list(self.points)

    @property
    def total_points(self) -> int:
        """Points of the graded functions (the notebook's function cells)."""
        return sum(self.points.values())

    @property
    def overfit(self) -> dict:
        """The overfit test's rubric entry (``grader/rubric.toml``: its points and model)."""
        return overfit_rubric(self.name)

    @property
    def max_score(self) -> float:
        """The notebook's maximum on every grading path: its functions plus the overfit test.

        The mAP gate is not part of it: it runs only where VOC (or trained
        weights) and a GPU are at hand and is reported on its own line.
        """
        return self.total_points + self.overfit["points"]


def _profiles(name: str, entry: dict) -> dict[str, dict]:
    """``[<name>.profiles.*]`` with every key of ``profile_lines``, in that order (left out = ``None``)."""
    keys = [key for line in entry.get("profile_lines", []) for key in line]
    profiles = {}
    for profile, values in entry.get("profiles", {}).items():
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ValueError(f"grader/course.toml [{name}.profiles.{profile}]: {unknown} are not in profile_lines")
        profiles[profile] = {key: values.get(key) for key in keys}
    return profiles


def _from_manifest(course: dict) -> dict[str, AssignmentSpec]:
    """One :class:`AssignmentSpec` per assignment of the course manifest, in its order."""
    return {
        name: AssignmentSpec(name=name, title=entry["title"], points={f: int(p) for f, p in entry["functions"].items()},
                             reused=tuple(entry["reused"]), profiles=_profiles(name, entry),
                             profile_lines=tuple(tuple(line) for line in entry.get("profile_lines", [])))
        for name, entry in course.items()
    }


#: Titles, graded functions (notebook order, points), reused cells and settings profiles, from ``grader/course.toml``.
ASSIGNMENTS: dict[str, AssignmentSpec] = _from_manifest(load_course())


def overfit_rubric(assignment: str) -> dict:
    """``[<assignment>.overfit]`` of the grader's rubric, read without importing the grader (or torch)."""
    import tomllib

    rubric = tomllib.loads((HERE.parent / "grader" / "rubric.toml").read_text())
    return rubric[assignment]["overfit"]


def check_against_grader() -> None:
    """The manifest's names are ones the grader can grade: each graded or reused name has a
    reference module in :data:`grader.functions.REFERENCE_MODULES`, and each reused name is
    graded by another assignment (whose visible checks and fixtures the build borrows)."""
    from grader.functions import REFERENCE_MODULES

    for name, spec in ASSIGNMENTS.items():
        unknown = [f for f in [*spec.functions, *spec.reused] if f not in REFERENCE_MODULES]
        if unknown:
            raise ValueError(f"{name}: grader/course.toml names {unknown}, which grader.functions.REFERENCE_MODULES "
                             "does not know")
        graded_elsewhere = {f for other in ASSIGNMENTS.values() if other.name != name for f in other.functions}
        orphans = [f for f in spec.reused if f not in graded_elsewhere]
        if orphans:
            raise ValueError(f"{name}: reused {orphans} are graded by no other assignment in grader/course.toml")


def get(name: str) -> AssignmentSpec:
    try:
        return ASSIGNMENTS[name]
    except KeyError:
        raise SystemExit(f"unknown assignment {name!r}; choose one of {sorted(ASSIGNMENTS)}") from None
