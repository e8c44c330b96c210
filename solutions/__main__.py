"""Instructor-side command line: ``python -m solutions <command>`` (``./run main`` runs ``main``).

Commands:
  main      the main job: embedded dataset -> train both reference detectors on
            the CPU -> VOC07 mAP on its held-out split -> pictures and metrics
  train     one reference detector with a preset, e.g. the course's full VOC schedule:
            python -m solutions train --preset fcos-voc

They live here, beside the reference, because they build the reference detectors
(:mod:`solutions.presets`); the student package's ``python -m data_utils`` keeps the
data commands (generate, download, samples).  Options follow :mod:`data_utils.cli_options`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from data_utils.cli_options import (
    EXIT_FAILURE,
    EXIT_OK,
    add_data_root,
    add_device,
    add_no_progress,
    add_out,
    add_seed,
    add_voc_root,
)
from solutions.presets import DETECTORS, MAIN_JOB_RECIPE, PRESETS, STEP_RECIPES


def summary_table(results: dict[str, dict]) -> str:
    """The main job's Markdown table: one row per detector's metrics dict."""
    lines = ["| detector | VOC07 mAP | all-point mAP | iterations | final loss | train s | infer img/s |",
             "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {100 * m['map_voc07']:.1f}% | {100 * m['map_all_point']:.1f}% | {m['iterations']} | "
                     f"{m['final_loss']:.3f} | {m['train_seconds']:.0f} | {m['inference_images_per_second']:.1f} |")
    return "\n".join(lines)


def add_main_arguments(parser: argparse.ArgumentParser) -> None:
    add_out(parser, default=Path("outputs/main"), help="output folder (default: %(default)s)")
    add_data_root(parser, deprecated=("--data",),
                  help="where the embedded dataset lives (default: $COURSE_DATA/embedded or ~/.cache/detection-course/embedded)")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated subset of %(default)s")
    parser.add_argument("--iters", type=int, default=None, help="training iterations per detector (default: the preset's)")
    add_device(parser)
    add_seed(parser, help="seed of the initialisation, the shuffling and the flips (default: the preset's, 0)")
    parser.add_argument("--recipe", choices=tuple(STEP_RECIPES), default=MAIN_JOB_RECIPE,
                        help="how the training step is computed: memory format and optimiser kernel (default: "
                             "%(default)s; benchmarks/bench_main_job.py compares them)")
    add_no_progress(parser, help="no progress bars; one line when each long stage starts and ends, for logs")


def cmd_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train and evaluate both reference detectors on the embedded offline dataset (CPU-sized)."""
    from data_utils.data.synthetic import ensure_embedded_dataset, format_summary, summarize
    from data_utils.training.experiment import run_experiment, save_samples_figure
    from solutions import main_job_figures
    from solutions.presets import build_detector, preset_with

    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = sorted(set(detectors) - set(DETECTORS))
    if unknown:
        parser.error(f"unknown detector(s) {unknown}; choose from {list(DETECTORS)}")

    started = time.perf_counter()
    voc_dir = ensure_embedded_dataset(args.data_root)
    print(f"embedded dataset: {voc_dir} (ready in {time.perf_counter() - started:.1f} s)")
    print(format_summary(summarize(voc_dir)))
    args.out.mkdir(parents=True, exist_ok=True)
    save_samples_figure(voc_dir, "train", args.out / "samples.png")
    print(f"wrote {args.out / 'samples.png'}")
    results = {}
    for detector in detectors:
        preset = preset_with(f"{detector}-embedded", max_iters=args.iters, seed=args.seed,
                             **STEP_RECIPES[args.recipe])
        print(f"\n== {detector}: {preset.train.max_iters} iterations, batch {preset.batch_size}, "
              f"FPN {preset.fpn_channels}, random init ==")
        results[detector] = run_experiment(preset, voc_dir, args.out / detector, model=lambda p=preset: build_detector(p),
                                           device=args.device, resume=False, progress=not args.no_progress)
        m = results[detector]
        m["expected"] = main_job_figures.expected(detector, m["iterations"])
        m["expectation"] = main_job_figures.expectation(detector, m["map_voc07"], iterations=m["iterations"])
        (args.out / detector / "metrics.json").write_text(json.dumps(m, indent=2))
        print(f"{detector}: VOC07 mAP {100 * m['map_voc07']:.1f}% on {m['eval_images']} held-out images "
              f"(trained {m['train_seconds']:.0f} s); outputs in {args.out / detector}/")
        print(f"{detector}: {m['expectation']}")
    table = summary_table(results)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2))
    print("\n" + table)
    print(f"\ndone in {time.perf_counter() - started:.0f} s; everything is in {args.out}/")
    return EXIT_OK


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    add_voc_root(parser, help="existing VOCdevkit or VOC2007 folder (default: $VOC_ROOT, else download)")
    add_data_root(parser, help="download/extract VOC here")
    add_out(parser, help="output folder (default: outputs/<preset>)")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    add_device(parser)
    add_seed(parser, help="seed of the initialisation, the shuffling and the flips (default: the preset's, 0)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="val")
    parser.add_argument("--no-cache", action="store_true", help="decode JPEGs every epoch instead of caching tensors")
    add_no_progress(parser)


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train and evaluate one reference detector with a preset."""
    from data_utils.data.download import ensure_voc2007
    from data_utils.data.synthetic import ensure_embedded_dataset
    from data_utils.training.experiment import run_experiment
    from solutions.presets import build_detector, preset_with

    preset = preset_with(args.preset, max_iters=args.iters, lr=args.lr, batch_size=args.batch_size,
                         seed=args.seed)
    if args.preset.endswith("-embedded"):
        voc_dir = ensure_embedded_dataset()
    else:
        voc_dir = ensure_voc2007(args.data_root, voc_root=args.voc_root, progress=not args.no_progress)
    out = args.out or Path("outputs") / args.preset
    metrics = run_experiment(preset, voc_dir, out, model=lambda: build_detector(preset), train_split=args.train_split,
                             eval_split=args.eval_split, device=args.device, cache=not args.no_cache,
                             progress=not args.no_progress)
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_class_ap"}, indent=2))
    print((out / "ap_table.txt").read_text())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (subcommands, the convention of :mod:`data_utils.cli_options`)."""
    parser = argparse.ArgumentParser(prog="python -m solutions", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add, run in (("main", add_main_arguments, cmd_main), ("train", add_train_arguments, cmd_train)):
        command = sub.add_parser(name, description=run.__doc__)
        add(command)
        command.set_defaults(run=run, subparser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 when it did its work, 1 when it failed (bad dataset, failed download,
    non-finite loss), 2 (argparse's SystemExit) for bad usage."""
    from data_utils.errors import DatasetError, DownloadError
    from data_utils.training.engine import NonFiniteLossError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args, args.subparser)
    except (DatasetError, DownloadError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
