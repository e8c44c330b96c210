"""How long the grader takes on this machine (CPU only).

1. One submission graded fully -- every check of every function *and* the
   overfit test -- through the command line (``python -m grader grade``, so
   interpreter start-up, the sandbox's boot and the reference computations are
   included), for the reference-completed submission of each assignment.
   Target: under 3 minutes each.
2. Batch throughput: ``python -m grader batch`` over N copies of a submission
   with ``--jobs 1`` and ``--jobs 2`` (overfit test left out unless ``--full``),
   in submissions per minute, and the ratio of the two.

The load average is printed: on a shared machine the figures are only
comparable within one run.

    .venv/bin/python benchmarks/bench_grader.py [--assignments one_stage two_stage] [--batch 4] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grader.source import reference_source  # noqa: E402  (after the sys.path entry above)


def grade_once(assignment: str, folder: Path) -> tuple[float, dict]:
    path = folder / f"{assignment}.py"
    path.write_text(reference_source(assignment))
    out = folder / f"{assignment}.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "grader", "grade", str(path), "--assignment", assignment, "--json", str(out), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return seconds, json.loads(out.read_text())


def batch(assignment: str, folder: Path, n: int, jobs: int, full: bool) -> float:
    subs = folder / f"subs-{jobs}"
    subs.mkdir()
    text = reference_source(assignment)
    for i in range(n):
        (subs / f"student{i:02d}.py").write_text(text)
    args = [sys.executable, "-m", "grader", "batch", str(subs), "--assignment", assignment, "--jobs", str(jobs),
            "--out", str(folder / f"grades-{jobs}.csv")]
    if not full:
        args.append("--no-overfit")
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignments", nargs="+", default=["one_stage", "two_stage"])
    parser.add_argument("--batch", type=int, default=4, help="submissions in the batch runs (0: skip)")
    parser.add_argument("--batch-assignment", default="one_stage")
    parser.add_argument("--full", action="store_true", help="include the overfit test in the batch runs")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    from grader.sandbox import detect_mode

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; sandbox: {detect_mode()[0]}")
    folder = Path(tempfile.mkdtemp(prefix="bench-grader-"))
    try:
        for assignment in args.assignments:
            seconds, report = grade_once(assignment, folder)
            checks = [c for c in report["checks"] if c["kind"] == "check"]
            overfit = [c for c in report["checks"] if c["kind"] == "overfit"]
            in_checks = sum(c["seconds"] for c in checks)
            print(f"{assignment}: one submission graded fully in {seconds:.1f} s (target < 180 s): "
                  f"{len(checks)} checks {in_checks:.1f} s, overfit {overfit[0]['message'].rsplit('[', 1)[-1].rstrip(']') if overfit else '-'}, "
                  f"score {report['score']:g}/{report['max_score']:g}")
        if args.batch:
            t1 = batch(args.batch_assignment, folder, args.batch, 1, args.full)
            t2 = batch(args.batch_assignment, folder, args.batch, 2, args.full)
            what = "full" if args.full else "without the overfit test"
            print(f"batch of {args.batch} {args.batch_assignment} submissions ({what}): "
                  f"--jobs 1 {t1:.1f} s ({60 * args.batch / t1:.2f}/min), --jobs 2 {t2:.1f} s ({60 * args.batch / t2:.2f}/min); "
                  f"speed-up x{t1 / t2:.2f}")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
