"""Command line of the student package: ``python -m data_utils <command>``.

Commands:
  generate  write the embedded offline dataset (VOC layout)
  download  download/verify/extract PASCAL VOC 2007, or check an existing copy
  samples   draw a grid of images with their boxes from any VOC-layout split

Training the reference detectors (the main job, ``./run main``, and the full-VOC
presets) is instructor-side: ``python -m solutions main|train``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_utils.cli_options import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, add_out, existing_path

#: Commands that moved out of the student package (they build the reference detectors, which
#: students do not have), and where: ``python -m data_utils main`` says so instead of running.
MOVED_COMMANDS = {"main": "python -m solutions main", "train": "python -m solutions train"}


def add_samples_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("voc_dir", type=existing_path, help="a VOC2007 folder")
    parser.add_argument("--split", default="train")
    add_out(parser, default=Path("outputs/samples.png"), help="the picture (default: %(default)s)")
    parser.add_argument("--num", type=int, default=8)


def cmd_samples(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Draw images with their boxes."""
    from data_utils.training.experiment import save_samples_figure

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_samples_figure(args.voc_dir, args.split, args.out, args.num)
    print(args.out)
    return EXIT_OK


def cmd_generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from data_utils.data.synthetic import run

    return run(args)


def cmd_download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from data_utils.data.download import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (subcommands, the convention of :mod:`data_utils.cli_options`)."""
    from data_utils.data import download, synthetic

    parser = argparse.ArgumentParser(prog="python -m data_utils", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add, run, description in (
        ("generate", synthetic.add_arguments, cmd_generate, synthetic.DESCRIPTION),
        ("download", download.add_arguments, cmd_download, download.DESCRIPTION),
        ("samples", add_samples_arguments, cmd_samples, cmd_samples.__doc__),
    ):
        command = sub.add_parser(name, description=description)
        add(command)
        command.set_defaults(run=run, subparser=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 when it did its work, 1 when it failed (bad dataset, failed download),
    2 (argparse's SystemExit) for bad usage, and 2 returned for a command that moved
    (:data:`MOVED_COMMANDS`)."""
    from data_utils.errors import DatasetError, DownloadError

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MOVED_COMMANDS:
        # A hidden alias only: it names the new command and imports nothing of the reference.
        print(f"error: moved: run `{MOVED_COMMANDS[argv[0]]}` (the reference's command line) instead of "
              f"`python -m data_utils {argv[0]}`", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, args.subparser)
    except (DatasetError, DownloadError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
