"""Time ``data_utils.evaluation.voc_eval.evaluate_detections`` on VOC-val-sized synthetic data.

    python benchmarks/bench_voc_eval.py [--images 2510] [--repeats 7] [--seed 0] [--no-oracle]

Seeded synthetic data of the size of the VOC 2007 val split (2510 images,
~15k detections, ~7k ground-truth boxes, 20 classes, ~15% difficult), given as
float32 CPU tensors like the detectors' ``inference`` output.  Prints the
median time of ``evaluate_detections`` (VOC07 and all-point), the time of the
literal devkit transcription in ``tests/devkit_oracle.py`` (the test oracle),
their ratio, the largest AP difference between the two, and whether the
0.1 s target is met.  Wall times depend on the machine's load (printed); the
CPU time of the process is steadier.  A script, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.devkit_oracle when run as a script

import numpy as np  # noqa: E402  (after the sys.path entry above)

from data_utils.cli_options import add_seed  # noqa: E402  (after the sys.path entry above)
from data_utils.evaluation.voc_eval import evaluate_detections  # noqa: E402  (after the sys.path entry above)
from tests.devkit_oracle import devkit_eval, random_case  # noqa: E402  (after the sys.path entry above)

TARGET_S = 0.1


def median_time(fn, repeats: int) -> tuple[float, float, object]:
    """(median wall seconds, median process CPU seconds, last result) after one warm-up."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), out


def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2510)
    parser.add_argument("--repeats", type=int, default=7)
    add_seed(parser, default=0, help="seed of the random detections (default: %(default)s)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the slow literal devkit")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    dets, gts = random_case(
        rng, args.images, 20, gt_per_image=2.8, det_per_image=6.0, p_difficult=0.15,
        p_empty_gt=0.0, p_empty_dets=0.0, p_duplicate=0.1, as_torch=True,
    )
    n_det = sum(len(d.scores) for d in dets)
    n_gt = sum(len(g.classes) for g in gts)
    n_diff = sum(int(g.difficult.sum()) for g in gts)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data: {args.images} images, {n_det} detections, {n_gt} GT boxes ({n_diff} difficult), 20 classes, seed {args.seed}")
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {load:.2f}")

    t07, c07, res07 = median_time(lambda: evaluate_detections(dets, gts, use_07_metric=True), args.repeats)
    t_all, c_all, res_all = median_time(lambda: evaluate_detections(dets, gts, use_07_metric=False), args.repeats)
    for name, wall, cpu, res in (("VOC07 11-point", t07, c07, res07), ("all-point", t_all, c_all, res_all)):
        print(f"evaluate_detections {name:15s}: {1e3 * wall:7.1f} ms wall, {1e3 * cpu:7.1f} ms CPU "
              f"(medians of {args.repeats})  mAP {100 * res.map:.2f}")

    if not args.no_oracle:
        t0 = time.perf_counter()
        ref07 = devkit_eval(dets, gts, 20, 0.5, True)
        t_ref = time.perf_counter() - t0
        ref_all = devkit_eval(dets, gts, 20, 0.5, False)
        diff = max(np.nanmax(np.abs(ref07 - res07.ap)), np.nanmax(np.abs(ref_all - res_all.ap)))
        print(f"literal devkit (tests/devkit_oracle.py), VOC07: {1e3 * t_ref:7.1f} ms wall (1 run)")
        print(f"speed-up: {t_ref / t07:.0f}x   max |AP difference| vs literal devkit: {diff:.1e}")
    met = t07 < TARGET_S and t_all < TARGET_S
    print(f"target < {TARGET_S} s wall: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
