"""README's contributor table matches the tree.

Every folder of the repository (top level) and every package folder below the
project's packages has a row; every row names a folder that exists; and a
package's row names each of its modules (in backticks), and no module that is
not there.  A newcomer reads the table to find where a thing lives: a module
added, moved or deleted without its row fails here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assignments", "data_utils", "grader", "solutions")
#: Generated folders (nbgrader's course tree, rebuilt by ``python -m assignments build``) are one row, not many.
GENERATED = ("assignments/course",)


def contributor_rows(readme: str) -> dict[str, str]:
    """``folder/`` -> description, from the table of README's "For contributors" section."""
    section = readme.split("## For contributors", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([^`]+/)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def tracked_folders(root: Path = ROOT) -> set[str]:
    """Top-level folders and package folders (with ``__init__.py``) of the tracked tree, as ``path/``."""
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    folders = {f.split("/")[0] + "/" for f in files if "/" in f and not f.startswith(".")}
    for f in files:
        path = Path(f)
        if path.name == "__init__.py" and path.parts[0] in PACKAGES and len(path.parts) > 2:
            folder = path.parent.as_posix()
            if not folder.startswith(GENERATED):
                folders.add(folder + "/")
    return folders


def modules_in(folder: Path) -> set[str]:
    """Module names directly in ``folder`` (``__init__``/``__main__`` are the package itself)."""
    return {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}


def named_modules(description: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", description))


def test_every_folder_has_a_row_and_every_row_a_folder():
    rows = contributor_rows((ROOT / "README.md").read_text())
    folders = tracked_folders()
    assert not folders - set(rows), f"folders without a row in README's contributor table: {sorted(folders - set(rows))}"
    missing = [row for row in rows if not (ROOT / row).is_dir()]
    assert not missing, f"README's contributor table names folders that do not exist: {missing}"


def test_each_package_row_names_exactly_its_modules():
    rows = contributor_rows((ROOT / "README.md").read_text())
    problems = []
    for row, description in rows.items():
        folder = ROOT / row
        if row.split("/")[0] not in PACKAGES or not (folder / "__init__.py").is_file():
            continue
        modules, named = modules_in(folder), named_modules(description)
        if modules - named:
            problems.append(f"{row}: modules not named in its row: {sorted(modules - named)}")
        if named - modules:
            problems.append(f"{row}: names modules that are not there: {sorted(named - modules)}")
    assert not problems, "README's contributor table is out of date:\n" + "\n".join(problems)


def test_the_checks_catch_a_moved_module(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py"):
        (tmp_path / "pkg" / name).write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    readme = "## For contributors\n\n| folder | what |\n|---|---|\n| `pkg/` | `a` does a; `c` does c |\n\n## Next\n"
    rows = contributor_rows(readme)
    assert rows == {"pkg/": " `a` does a; `c` does c "}
    assert modules_in(tmp_path / "pkg") - named_modules(rows["pkg/"]) == {"b"}
    assert named_modules(rows["pkg/"]) - modules_in(tmp_path / "pkg") == {"c"}
