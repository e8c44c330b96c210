"""``python -m grader``: grade one submission, a class, build a Gradescope bundle.

    python -m grader grade SUBMISSION --assignment {one_stage,two_stage}
        [--json out.json] [--gradescope results.json] [--feedback feedback.md]
        [--weights trained.pt] [--voc-root DIR] [--retrain [--device cpu|cuda] [--retrain-iters N]]
        [--no-overfit] [--no-map] [--functions a,b] [--sandbox auto|bwrap|fallback] [--no-progress]
    python -m grader batch FOLDER --assignment A --jobs N --out grades.csv [--results-dir DIR] [--force] [--shard K/N]
    python -m grader merge REPORT_DIRS... --out grades.csv
    python -m grader gradescope-bundle --assignment A --out bundle.zip
    python -m grader export-sanity ASSIGNMENT [--out FILE]
    python -m grader sandbox-info

SUBMISSION is a notebook (.ipynb), a module (.py) or a folder holding one.
The exit status follows the convention of data_utils/cli_options.py: 0 when
the command did its work (for ``grade``, whatever the score), 1 when it failed
(``merge`` of corrupt or conflicting reports), 2 for bad usage (an unknown
assignment, a SUBMISSION or FOLDER that does not exist, a bad ``--shard``),
and one status of the grader's own, 3, when the grader itself cannot grade on
this machine (its sandbox does not work): then nothing is written and no score
is recorded, and ``batch`` stops instead of recording zeros for the rest of
the class.
"""

from __future__ import annotations

import argparse
import json
import sys

from data_utils.cli_options import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_device, add_out, add_voc_root, existing_path
from grader.functions import ASSIGNMENTS


def _grade_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--assignment", "-a", required=True, choices=ASSIGNMENTS)
    p.add_argument("--weights", help="trained weights of the student's model for the mAP gate (state_dict or checkpoint)")
    add_voc_root(p, type=str, help="PASCAL VOC 2007 (VOCdevkit or VOC2007 folder) for the mAP gate (default: $VOC_ROOT)")
    p.add_argument("--retrain", action="store_true",
                   help="mAP gate: retrain the student's model (VOC if found, else the embedded dataset) in the sandbox")
    add_device(p, choices=("cpu", "cuda"), help="--retrain on this device (default: cuda when present)")
    p.add_argument("--retrain-iters", type=int, help="--retrain with N iterations (a rubric schedule of that length, or an unscored smoke run)")
    p.add_argument("--no-overfit", action="store_true", help="skip the overfit test")
    p.add_argument("--no-map", action="store_true", help="leave out the mAP gate")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "fallback"), default=None,
                   help="isolation (default: $GRADER_SANDBOX or auto = bubblewrap when it works)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade one submission")
    # A path that does not exist is bad usage (2), not a zero report for an "unreadable" submission.
    g.add_argument("submission", type=existing_path)
    _grade_args(g)
    g.add_argument("--json", help="write the full report (staff) as JSON")
    g.add_argument("--gradescope", help="write Gradescope's results.json")
    g.add_argument("--feedback", help="write Markdown feedback for the student")
    g.add_argument("--functions", help="comma-separated functions to grade (default: all)")
    g.add_argument("--quiet", "-q", action="store_true", help="no console table")
    g.add_argument("--verbose", "-v", action="store_true", help="full messages in the console table")
    g.add_argument("--no-progress", action="store_true", help="no line per check while grading (the table still prints)")

    b = sub.add_parser("batch", help="grade every submission of a folder")
    b.add_argument("folder", type=existing_path)
    _grade_args(b)
    b.add_argument("--jobs", "-j", type=int, default=1)
    add_out(b, type=str, default="grades.csv", help="the class's CSV (default: %(default)s)")
    b.add_argument("--results-dir", help="per-submission JSON reports (default: <out>_reports/)")
    b.add_argument("--timeout", type=float, default=1800.0, help="seconds per submission (default 1800)")
    b.add_argument("--functions", help="comma-separated functions to grade (default: all)")
    b.add_argument("--force", action="store_true", help="regrade every submission (default: skip unchanged ones)")
    b.add_argument("--shard", help="grade only shard K/N of the folder (sorted ids, round robin; see grader/shards.py)")

    m = sub.add_parser("merge", help="join the reports folders of several shards into one CSV")
    m.add_argument("report_dirs", nargs="+")
    add_out(m, type=str, required=True, help="the joined CSV")
    m.add_argument("--assignment", "-a", choices=ASSIGNMENTS)

    gs = sub.add_parser("gradescope-bundle", help="write the Gradescope autograder zip")
    gs.add_argument("--assignment", "-a", required=True, choices=ASSIGNMENTS)
    add_out(gs, type=str, required=True, help="the zip to write")

    e = sub.add_parser("export-sanity", help="write the visible sanity fixture of an assignment")
    e.add_argument("assignment", choices=ASSIGNMENTS)
    add_out(e, type=str, help="the fixture file (default: the grader's own copy)")

    sub.add_parser("sandbox-info", help="which isolation this machine supports")
    return parser


def _write(path: str, text: str) -> None:
    from grader.results import atomic_write_text

    atomic_write_text(path, text)


def cmd_grade(args) -> int:
    import signal

    from grader.notebook import grade_path
    from grader.report import console_table, gradescope_results, markdown_feedback

    # SIGTERM (e.g. from `grader batch`) unwinds like Ctrl-C: the sandbox is closed and its
    # scratch folder removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    progress = None
    if not (args.quiet or args.no_progress):
        def progress(result):
            print(f"  {result.status:<7} {result.id}", file=sys.stderr, flush=True)

    report = grade_path(
        args.submission, args.assignment,
        functions=args.functions.split(",") if args.functions else None,
        include_overfit=not args.no_overfit, include_map=not args.no_map,
        sandbox_mode=args.sandbox, weights=args.weights, voc_root=args.voc_root, retrain=args.retrain,
        device=args.device, retrain_iters=args.retrain_iters, progress=progress,
    )
    if args.json:
        _write(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    if args.gradescope:
        _write(args.gradescope, json.dumps(gradescope_results(report), indent=2) + "\n")
    if args.feedback:
        _write(args.feedback, markdown_feedback(report))
    if not args.quiet:
        print(console_table(report, verbose=args.verbose))
    return EXIT_OK


def cmd_batch(args) -> int:
    from grader.batch import run_batch

    extra = []
    if args.weights:
        extra += ["--weights", args.weights]
    if args.voc_root:
        extra += ["--voc-root", args.voc_root]
    if args.retrain:
        extra.append("--retrain")
    if args.device:
        extra += ["--device", args.device]
    if args.retrain_iters is not None:
        extra += ["--retrain-iters", str(args.retrain_iters)]
    if args.no_overfit:
        extra.append("--no-overfit")
    if args.no_map:
        extra.append("--no-map")
    if args.sandbox:
        extra += ["--sandbox", args.sandbox]
    if args.functions:
        extra += ["--functions", args.functions]
    from grader.batch import BatchInterrupted
    from grader.grade import EXIT_CANNOT_GRADE, GraderInfrastructureError
    from grader.shards import parse_shard

    try:
        parse_shard(args.shard)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rows = run_batch(args.folder, args.assignment, jobs=args.jobs, out=args.out, results_dir=args.results_dir,
                         extra_args=extra, timeout=args.timeout, force=args.force, shard=args.shard)
    except BatchInterrupted as error:
        print(error, file=sys.stderr)
        return 130
    except GraderInfrastructureError as error:
        print(f"grader error: {error}\nThe batch stopped; submissions graded so far are in {args.out}; "
              "rerun the same command once the problem is fixed (graded ones are skipped).", file=sys.stderr)
        return EXIT_CANNOT_GRADE
    print(f"wrote {args.out} ({len(rows)} rows)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "grade":
        from grader.grade import EXIT_CANNOT_GRADE, GraderInfrastructureError

        try:
            return cmd_grade(args)
        except GraderInfrastructureError as error:
            # Loud on purpose: no report, no results.json, exit 3 -- never a zero for the student.
            print(f"grader error: {error}\nNo grade was recorded for {args.submission}.", file=sys.stderr)
            return EXIT_CANNOT_GRADE
    if args.command == "batch":
        return cmd_batch(args)
    if args.command == "merge":
        from grader.shards import merge_reports

        try:
            rows = merge_reports(args.report_dirs, args.out, assignment=args.assignment)
        except ValueError as error:
            # Reports that are missing, corrupt or contradict each other: a failure, not bad usage.
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"wrote {args.out} ({len(rows)} rows from {len(args.report_dirs)} report folders)")
        return EXIT_OK
    if args.command == "gradescope-bundle":
        from grader.gradescope import build_bundle

        path = build_bundle(args.assignment, args.out)
        print(f"wrote {path}")
        return EXIT_OK
    if args.command == "export-sanity":
        from grader.sanity import export_sanity_fixtures

        print(f"wrote {export_sanity_fixtures(args.assignment, args.out)}")
        return EXIT_OK
    if args.command == "sandbox-info":
        from grader.sandbox import detect_mode

        mode, note = detect_mode("auto")
        print(f"{mode}: {note}")
        return EXIT_OK
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
