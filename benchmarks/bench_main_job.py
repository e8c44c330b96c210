"""The main job's training-step recipe (channels-last, fused AdamW) against the
earlier ones (channels-last with the per-parameter AdamW loop; contiguous NCHW
with the loop, the recipe the main job started from), measured in one run.

    python benchmarks/bench_main_job.py                 # per-iteration timing, ~3 minutes
    python benchmarks/bench_main_job.py --full --seeds 0 1 2 --parallel 2 --write
                                                        # every seed of both recipes end to end (~1.5 h on 2 cores)

Default mode.  For each detector, every recipe trains on the same cached
batches of the embedded dataset through the real engine
(:func:`data_utils.training.engine.train_detector`, AdamW, the preset's model),
``--iters`` iterations per round, rounds interleaved so that load from other
processes hits both alike; the figures are medians.  It prints the seconds
per iteration of each, its ratio to the baseline (contiguous), the training
time of the whole main job each way (iterations x seconds per iteration,
summed over the detectors) and the mean mAP of each recipe over the seeds recorded in
:mod:`solutions.main_job_figures`.  Target: the main job at most 15
minutes on a 2-core machine.

``--full``.  Runs ``python -m solutions main`` once per (recipe, seed), in
``--parallel`` processes at a time (each with ``cores / parallel`` torch
threads; last-bit floating-point differences from the thread count are part
of the spread the figures record), and prints every run's mAP and time, the
mean and range per recipe and detector, and the ratio of the mean total
times against the baseline.  ``--write`` stores the runs in ``solutions/main_job_figures.py``,
which the main job reads to print the range a newcomer should expect.
Timings of ``--full`` with ``--parallel`` above 1 are not the solo figures;
the README's time comes from a solo run (``--parallel 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import re
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
from timing import add_timing_arguments, apply_threads, interleaved_seconds, print_load_average

from data_utils.cli_options import add_out
from data_utils.data.loaders import build_loader
from data_utils.data.synthetic import ensure_embedded_dataset
from data_utils.data.voc import VOCDetection
from data_utils.training.engine import TrainConfig, train_detector
from data_utils.training.experiment import machine_description
from solutions import main_job_figures
from solutions.presets import DETECTORS, MAIN_JOB_RECIPE, PRESETS, STEP_RECIPES, build_detector, step_recipe

ROOT = Path(__file__).resolve().parents[1]
FIGURES_FILE = ROOT / "solutions" / "main_job_figures.py"
RECIPES = STEP_RECIPES  # the main job's first
BASELINE = "contiguous"


def per_iteration(args: argparse.Namespace) -> None:
    apply_threads(args)
    voc_dir = ensure_embedded_dataset()
    print(f"{machine_description()}, {torch.get_num_threads()} torch threads; {args.iters} iterations per round, "
          f"{args.repeats} rounds")
    projected = dict.fromkeys(RECIPES, 0.0)
    for detector in DETECTORS:
        preset = PRESETS[f"{detector}-embedded"]
        runs = []
        for settings in RECIPES.values():
            config = replace(preset.train, max_iters=args.iters, warmup_iters=0, **settings)
            torch.manual_seed(0)
            model = build_detector(preset)
            loader = build_loader(VOCDetection(voc_dir, "train", train=True), preset.batch_size, cache=True,
                                  seed=0, uint8=True, progress=False)
            runs.append(lambda m=model, c=config, dl=loader: train_detector(m, dl, c, device="cpu", progress=False))
        medians = {recipe: median / args.iters for recipe, (median, _) in
                   zip(RECIPES, interleaved_seconds(runs, args.repeats, "cpu", warmup=1, clock=args.clock))}
        for recipe, seconds in medians.items():
            projected[recipe] += seconds * preset.train.max_iters
        print(f"{detector}: " + ", ".join(f"{recipe} {seconds:.3f} s/iteration (ratio {seconds / medians[BASELINE]:.2f})"
                                          for recipe, seconds in medians.items()))
    base = projected[BASELINE]
    print("training time of the main job: " + ", ".join(
        f"{recipe} {seconds / 60:.1f} min (ratio {seconds / base:.2f})" for recipe, seconds in projected.items())
        + f"; main job's recipe: {MAIN_JOB_RECIPE}; evaluation and plots add ~20 s")
    for recipe in RECIPES:
        for detector in DETECTORS:
            summary = main_job_figures.summary(detector, recipe)
            if summary is None:
                print(f"mAP {recipe} {detector}: no recorded runs (run --full --write)")
            else:
                print(f"mAP {recipe} {detector}: mean {100 * summary['mean']:.1f}%, range "
                      f"{100 * summary['min']:.1f}-{100 * summary['max']:.1f}% over {summary['runs']} runs")
    print_load_average()


def _one_run(recipe: str, seed: int, threads: int, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    with out.with_suffix(".log").open("w") as stream:
        subprocess.run([sys.executable, "-m", "solutions", "main", "--seed", str(seed), "--recipe", recipe,
                        "--out", str(out), "--no-progress"], cwd=ROOT, env=env, stdout=stream,
                       stderr=subprocess.STDOUT, check=True)
    return collect(out)


def collect(out: Path) -> dict:
    """One run's record from a main-job output folder (its metrics.json and the "done in N s" line of its log)."""
    results = json.loads((out / "metrics.json").read_text())
    first = next(iter(results.values()))
    done = re.findall(r"^done in (\d+) s", out.with_suffix(".log").read_text(), re.MULTILINE)
    recipe = step_recipe(TrainConfig(channels_last=first["memory_format"] == "channels_last",
                                     fused_optimizer=first.get("fused_optimizer", False)))
    return {"recipe": recipe, "seed": first["seed"], "threads": first["torch_threads"], "machine": first["machine"],
            "total_seconds": float(done[-1]) if done else None,
            "detectors": {d: {"map_voc07": round(m["map_voc07"], 4), "map_all_point": round(m["map_all_point"], 4),
                              "train_seconds": round(m["train_seconds"], 1)} for d, m in results.items()}}


def full(args: argparse.Namespace) -> None:
    threads = max(1, (os.cpu_count() or 1) // args.parallel)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_main_job_"))
    out.mkdir(parents=True, exist_ok=True)  # a --out that does not exist yet
    jobs = [(recipe, seed) for seed in args.seeds for recipe in args.recipes]
    print(f"{len(jobs)} main-job runs, {args.parallel} at a time with {threads} torch threads each; logs in {out}/")
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(lambda job: _one_run(job[0], job[1], threads, out / f"{job[0]}_seed{job[1]}"), jobs))
    for run in runs:
        maps = ", ".join(f"{d} {100 * m['map_voc07']:.1f}% ({m['train_seconds']:.0f} s)"
                         for d, m in run["detectors"].items())
        print(f"{run['recipe']} seed {run['seed']}: {maps}; total {run['total_seconds']:.0f} s")
    totals = {r: statistics.mean(run["total_seconds"] for run in runs if run["recipe"] == r) for r in args.recipes}
    for recipe in args.recipes:
        for detector in DETECTORS:
            stats = main_job_figures.summary(detector, recipe, runs)
            print(f"{recipe} {detector}: mean {100 * stats['mean']:.1f}%, "
                  f"range {100 * stats['min']:.1f}-{100 * stats['max']:.1f}%")
    for recipe in totals:
        if recipe != BASELINE and BASELINE in totals:
            print(f"mean total time: {recipe} / {BASELINE} = {totals[recipe] / totals[BASELINE]:.2f}")
    if args.write:
        write_figures(runs)


def write_figures(runs: list[dict]) -> None:
    """Merge ``runs`` into solutions/main_job_figures.py (a run replaces an earlier one of the same recipe, seed,
    thread count and machine)."""
    key = lambda run: (run["recipe"], run["seed"], run["threads"], run["machine"])  # noqa: E731  (a one-line sort key)
    merged = {key(run): run for run in main_job_figures.RUNS}
    merged.update({key(run): run for run in runs})
    text = FIGURES_FILE.read_text()
    head = text[: text.index("RUNS: list")]
    body = f"RUNS: list[dict[str, Any]] = {pprint.pformat(sorted(merged.values(), key=key), width=110, sort_dicts=True)}\n"
    tail = text[text.index("\n\n# --- end of measured figures"):]
    FIGURES_FILE.write_text(head + body + tail)
    print(f"wrote {FIGURES_FILE}")


def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=6, help="training iterations per timed round")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per recipe")
    parser.add_argument("--full", action="store_true", help="run the whole main job per recipe and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=[MAIN_JOB_RECIPE, BASELINE],
                        help="recipes of the --full runs (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=1, help="main-job runs at a time (--full)")
    add_out(parser, help="folder of the --full runs (default: a temp folder)")
    parser.add_argument("--write", action="store_true", help="record the --full runs in solutions/main_job_figures.py")
    add_timing_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    full(args) if args.full else per_iteration(args)


if __name__ == "__main__":
    main()
