"""Command line: ``python -m assignments <command>``.

Commands:
  build [ASG ...]          regenerate the nbgrader source folders (notebooks, course_tools.py,
                           sanity fixtures, student wheel) from assignments/src/ and solutions/
  check                    fail if the committed source folders differ from a fresh build
  student-package [--out DIR]
                           write the student wheel (data_utils only, no reference solutions)
  selftest [ASG ...] [--keep DIR]
                           generate, validate, autograde the reference / the untouched release /
                           a planted bug, and generate feedback, on a throw-away copy of the course
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "build":
        from assignments.build import build
        from assignments.spec import check_against_grader

        parser = argparse.ArgumentParser(prog="python -m assignments build")
        parser.add_argument("assignments", nargs="*")
        args = parser.parse_args(rest)
        check_against_grader()
        for path in build(args.assignments or None):
            print(f"wrote {path}")
        # The grader's own copy of the fixtures (grader/fixtures/), so that one
        # command regenerates every generated file: copied from the source
        # folder just built rather than computed from the reference again.
        import shutil

        from assignments.build import ASSIGNMENTS, fixture_name
        from grader.sanity import FIXTURE_DIR

        for name in args.assignments or list(ASSIGNMENTS):
            target = FIXTURE_DIR / fixture_name(name)
            shutil.copyfile(ASSIGNMENTS[name].source_dir / fixture_name(name), target)
            print(f"wrote {target}")
        return 0
    if command == "check":
        from assignments.build import describe_drift, drift

        problems = drift()
        if problems:
            print(describe_drift(problems), file=sys.stderr)
            return 1
        print("generated course files are up to date")
        return 0
    if command == "student-package":
        from assignments.student_package import build_wheel, wheel_problems

        parser = argparse.ArgumentParser(prog="python -m assignments student-package")
        parser.add_argument("--out", type=Path, default=Path("dist"))
        args = parser.parse_args(rest)
        path = build_wheel(args.out)
        problems = wheel_problems(path)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        print(f"wrote {path}")
        return 0
    if command == "selftest":
        from assignments.selftest import main as selftest_main

        return selftest_main(rest)
    print(f"unknown command {command!r}\n\n{__doc__.strip()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
