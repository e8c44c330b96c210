"""Command line: ``python -m assignments <command>``.

Commands:
  build [ASG ...]          regenerate the nbgrader source folders (notebooks, sanity fixtures,
                           student wheel) from assignments/src/ and solutions/
  check                    fail if the committed source folders differ from a fresh build
  student-package [--out DIR]
                           write the student wheel (data_utils only, no reference solutions)
  selftest [ASG ...] [--keep DIR]
                           generate, validate, autograde the reference / the untouched release /
                           a planted bug, and generate feedback, on a throw-away copy of the course

Exit status (the convention of data_utils/cli_options.py): 0 done, 1 failed (drift, a bad wheel,
a failed self-test), 2 bad usage (an unknown command or assignment).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_utils.cli_options import EXIT_FAILURE, EXIT_OK, add_out, one_of


def cmd_build(args: argparse.Namespace) -> int:
    """Regenerate the nbgrader source folders and the grader's copy of the sanity fixtures."""
    from assignments.build import build
    from assignments.spec import check_against_grader

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
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Fail (1) if the committed source folders differ from a fresh build."""
    from assignments.build import describe_drift, drift

    problems = drift()
    if problems:
        print(describe_drift(problems), file=sys.stderr)
        return EXIT_FAILURE
    print("generated course files are up to date")
    return EXIT_OK


def cmd_student_package(args: argparse.Namespace) -> int:
    """Write the student wheel; fail (1) if the build backend fails or the wheel holds anything it must not."""
    from assignments.errors import BuildError
    from assignments.student_package import build_wheel, wheel_problems

    try:
        path = build_wheel(args.out)
    except BuildError as error:  # the message names the cause and the fix; no traceback
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    problems = wheel_problems(path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {path}")
    return EXIT_OK


def cmd_selftest(args: argparse.Namespace) -> int:
    from assignments.selftest import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (subcommands, the convention of :mod:`data_utils.cli_options`)."""
    from assignments import selftest
    from assignments.spec import ASSIGNMENTS

    parser = argparse.ArgumentParser(prog="python -m assignments", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", description="Regenerate the nbgrader source folders from assignments/src/ and solutions/.")
    b.add_argument("assignments", nargs="*", type=one_of(ASSIGNMENTS), metavar="ASSIGNMENT",
                   help=f"which of {', '.join(ASSIGNMENTS)} (default: all)")
    b.set_defaults(run=cmd_build)

    sub.add_parser("check", description=cmd_check.__doc__).set_defaults(run=cmd_check)

    p = sub.add_parser("student-package", description=cmd_student_package.__doc__)
    add_out(p, default=Path("dist"), help="folder of the wheel (default: %(default)s)")
    p.set_defaults(run=cmd_student_package)

    s = sub.add_parser("selftest", description=selftest.__doc__.split("\n\n")[0])
    selftest.add_arguments(s)
    s.set_defaults(run=cmd_selftest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
