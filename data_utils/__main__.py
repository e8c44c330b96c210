"""Command line of the course package: ``python -m data_utils <command>``.

Commands:
  main      the main job: embedded dataset -> train both reference detectors on
            the CPU -> VOC07 mAP on its held-out split -> pictures and metrics
  train     one detector with a preset, e.g. the course's full VOC schedule:
            python -m data_utils train --preset fcos-voc
  generate  write the embedded offline dataset (VOC layout)
  download  download/verify/extract PASCAL VOC 2007, or check an existing copy
  samples   draw a grid of images with their boxes from any VOC-layout split
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
    existing_path,
)


def _summary_table(results: dict[str, dict]) -> str:
    lines = ["| detector | VOC07 mAP | all-point mAP | iterations | final loss | train s | infer img/s |",
             "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {100 * m['map_voc07']:.1f}% | {100 * m['map_all_point']:.1f}% | {m['iterations']} | "
                     f"{m['final_loss']:.3f} | {m['train_seconds']:.0f} | {m['inference_images_per_second']:.1f} |")
    return "\n".join(lines)


def add_main_arguments(parser: argparse.ArgumentParser) -> None:
    from data_utils.experiment import DETECTORS

    add_out(parser, default=Path("outputs/main"), help="output folder (default: %(default)s)")
    add_data_root(parser, deprecated=("--data",),
                  help="where the embedded dataset lives (default: $COURSE_DATA/embedded or ~/.cache/detection-course/embedded)")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated subset of %(default)s")
    parser.add_argument("--iters", type=int, default=None, help="training iterations per detector (default: the preset's)")
    add_device(parser)
    add_seed(parser, help="seed of the initialisation, the shuffling and the flips (default: the preset's, 0)")
    parser.add_argument("--memory-format", choices=("channels_last", "contiguous"), default=None,
                        help="memory format of the training step (default: the preset's, channels_last; "
                             "benchmarks/bench_main_job.py compares the two)")
    add_no_progress(parser, help="no progress bars; one line when each long stage starts and ends, for logs")


def cmd_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train and evaluate both reference detectors on the embedded offline dataset (CPU-sized)."""
    from data_utils import main_job_figures
    from data_utils.experiment import DETECTORS, preset_with, run_experiment
    from data_utils.synthetic import ensure_embedded_dataset, format_summary, summarize

    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = sorted(set(detectors) - set(DETECTORS))
    if unknown:
        parser.error(f"unknown detector(s) {unknown}; choose from {list(DETECTORS)}")

    started = time.perf_counter()
    voc_dir = ensure_embedded_dataset(args.data_root)
    print(f"embedded dataset: {voc_dir} (ready in {time.perf_counter() - started:.1f} s)")
    print(format_summary(summarize(voc_dir)))
    args.out.mkdir(parents=True, exist_ok=True)
    _write_samples(voc_dir, "train", args.out / "samples.png")
    print(f"wrote {args.out / 'samples.png'}")
    results = {}
    for detector in detectors:
        preset = preset_with(f"{detector}-embedded", max_iters=args.iters, seed=args.seed,
                             channels_last=None if args.memory_format is None else args.memory_format == "channels_last")
        print(f"\n== {detector}: {preset.train.max_iters} iterations, batch {preset.batch_size}, "
              f"FPN {preset.fpn_channels}, random init ==")
        results[detector] = run_experiment(preset, voc_dir, args.out / detector, device=args.device,
                                           resume=False, progress=not args.no_progress)
        m = results[detector]
        m["expected"] = main_job_figures.expected(detector, m["iterations"])
        m["expectation"] = main_job_figures.expectation(detector, m["map_voc07"], iterations=m["iterations"])
        (args.out / detector / "metrics.json").write_text(json.dumps(m, indent=2))
        print(f"{detector}: VOC07 mAP {100 * m['map_voc07']:.1f}% on {m['eval_images']} held-out images "
              f"(trained {m['train_seconds']:.0f} s); outputs in {args.out / detector}/")
        print(f"{detector}: {m['expectation']}")
    table = _summary_table(results)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "metrics.json").write_text(json.dumps(results, indent=2))
    print("\n" + table)
    print(f"\ndone in {time.perf_counter() - started:.0f} s; everything is in {args.out}/")
    return EXIT_OK


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from data_utils.experiment import PRESETS

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
    from data_utils.download import ensure_voc2007
    from data_utils.experiment import preset_with, run_experiment
    from data_utils.synthetic import ensure_embedded_dataset

    preset = preset_with(args.preset, max_iters=args.iters, lr=args.lr, batch_size=args.batch_size,
                         seed=args.seed)
    if args.preset.endswith("-embedded"):
        voc_dir = ensure_embedded_dataset()
    else:
        voc_dir = ensure_voc2007(args.data_root, voc_root=args.voc_root, progress=not args.no_progress)
    out = args.out or Path("outputs") / args.preset
    metrics = run_experiment(preset, voc_dir, out, train_split=args.train_split, eval_split=args.eval_split,
                             device=args.device, cache=not args.no_cache, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_class_ap"}, indent=2))
    print((out / "ap_table.txt").read_text())
    return EXIT_OK


def _write_samples(voc_dir: Path, split: str, path: Path, num: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from data_utils.visualize import plot_samples
    from data_utils.voc import VOCDetection

    fig = plot_samples(VOCDetection(voc_dir, split), num=num)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_samples_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("voc_dir", type=existing_path, help="a VOC2007 folder")
    parser.add_argument("--split", default="train")
    add_out(parser, default=Path("outputs/samples.png"), help="the picture (default: %(default)s)")
    parser.add_argument("--num", type=int, default=8)


def cmd_samples(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Draw images with their boxes."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_samples(args.voc_dir, args.split, args.out, args.num)
    print(args.out)
    return EXIT_OK


def cmd_generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from data_utils.synthetic import run

    return run(args)


def cmd_download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from data_utils.download import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (subcommands, the convention of :mod:`data_utils.cli_options`)."""
    from data_utils import download, synthetic

    parser = argparse.ArgumentParser(prog="python -m data_utils", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add, run, description in (
        ("main", add_main_arguments, cmd_main, cmd_main.__doc__),
        ("train", add_train_arguments, cmd_train, cmd_train.__doc__),
        ("generate", synthetic.add_arguments, cmd_generate, synthetic.DESCRIPTION),
        ("download", download.add_arguments, cmd_download, download.DESCRIPTION),
        ("samples", add_samples_arguments, cmd_samples, cmd_samples.__doc__),
    ):
        command = sub.add_parser(name, description=description)
        add(command)
        command.set_defaults(run=run, subparser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 when it did its work, 1 when it failed (bad dataset, failed download,
    non-finite loss), 2 (argparse's SystemExit) for bad usage."""
    from data_utils.engine import NonFiniteLossError
    from data_utils.errors import DatasetError, DownloadError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args, args.subparser)
    except (DatasetError, DownloadError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
