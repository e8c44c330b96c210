"""The one command-line convention of the project's commands, and the helpers that keep them to it.

``python -m data_utils``, ``python -m solutions``, ``python -m grader``, ``python -m assignments`` and the scripts in
``benchmarks/`` each keep their own :mod:`argparse` parser (with subcommands where there are
several commands), and spell the same thing the same way:

===================  ==========================================================================
``--data-root DIR``  the folder datasets are downloaded or generated into
``--voc-root DIR``   an existing PASCAL VOC copy (a ``VOCdevkit`` or ``VOC2007`` folder)
``--out PATH``       where the command writes its result (a file or a folder, as its help says)
``--device DEV``     ``cpu`` or ``cuda`` (default: cuda when available)
``--seed N``         the seed of everything random in the command
``--no-progress``    no progress bars (for logs)
===================  ==========================================================================

Exit status: :data:`EXIT_OK` (0) when the command did its work, :data:`EXIT_FAILURE` (1) when
it could not (a check failed, a download failed, a file is corrupt), :data:`EXIT_USAGE` (2) for
bad usage -- argparse's own status, also used for an unknown assignment or a path argument that
does not exist.  ``python -m grader`` adds one status, 3 (``grader.grade.EXIT_CANNOT_GRADE``):
the grader cannot grade on this machine, so a scheduler tells a broken node from a bad call.

Spellings that were replaced (``--root``, ``--data``, ...) stay accepted as hidden aliases that
print a one-line deprecation note, so commands in old notes and scripts keep working.
``tests/test_cli_convention.py`` parses every subcommand of every command and checks all this.

This module lives in ``data_utils`` (a leaf package the grader and the assignments tooling
already import) and imports nothing of the project, so any command can use it without a cycle.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Canonical option -> what it means; the names every command uses for these things.
CANONICAL_OPTIONS: dict[str, str] = {
    "--data-root": "the folder datasets are downloaded or generated into",
    "--voc-root": "an existing PASCAL VOC copy",
    "--out": "where the result is written",
    "--device": "cpu or cuda",
    "--seed": "the seed of everything random",
    "--no-progress": "no progress bars",
}

#: Spellings no command may show in its help any more (each still works where it used to, hidden).
RETIRED_OPTIONS: dict[str, str] = {
    "--root": "--data-root", "--data": "--data-root", "--voc-dir": "--voc-root", "--progress": "--no-progress",
}


class _DeprecatedAlias(argparse.Action):
    """Stores like the canonical option, after a one-line note on stderr naming the new spelling."""

    def __init__(self, option_strings: Sequence[str], dest: str, canonical: str, **kwargs: Any) -> None:
        self.canonical = canonical
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"note: {option_string} is deprecated; use {self.canonical}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, canonical: str, dest: str,
                         type: Any = None) -> None:
    """Accept ``old`` as a hidden spelling of ``canonical`` (same ``dest``), with a deprecation note."""
    parser.add_argument(old, dest=dest, type=type, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        action=_DeprecatedAlias, canonical=canonical)


def add_data_root(parser: argparse.ArgumentParser, help: str, deprecated: Sequence[str] = ()) -> None:
    """``--data-root DIR`` (``args.data_root``, a Path or None), plus hidden ``deprecated`` spellings."""
    parser.add_argument("--data-root", type=Path, default=None, metavar="DIR", help=help)
    for old in deprecated:
        add_deprecated_alias(parser, old, "--data-root", "data_root", type=Path)


def add_voc_root(parser: argparse.ArgumentParser, help: str, deprecated: Sequence[str] = (),
                 type: Any = Path) -> None:
    """``--voc-root DIR`` (``args.voc_root``, None when absent), plus hidden ``deprecated`` spellings."""
    parser.add_argument("--voc-root", type=type, default=None, metavar="DIR", help=help)
    for old in deprecated:
        add_deprecated_alias(parser, old, "--voc-root", "voc_root", type=type)


def add_out(parser: argparse.ArgumentParser, help: str, default: Any = None, required: bool = False,
            type: Any = Path) -> None:
    """``--out PATH`` (``args.out``)."""
    parser.add_argument("--out", type=type, default=default, required=required, metavar="PATH", help=help)


def add_device(parser: argparse.ArgumentParser, help: str = "cpu or cuda (default: cuda when available)",
               default: str | None = None, choices: Sequence[str] | None = None) -> None:
    """``--device DEV`` (``args.device``)."""
    parser.add_argument("--device", default=default, choices=choices, help=help)


def add_seed(parser: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """``--seed N`` (``args.seed``)."""
    parser.add_argument("--seed", type=int, default=default, metavar="N", help=help)


def add_no_progress(parser: argparse.ArgumentParser, help: str = "no progress bars (for logs)",
                    keep_progress: bool = False) -> None:
    """``--no-progress`` (``args.no_progress``); ``keep_progress``: also a hidden, silent ``--progress``
    (the default anyway) for a command that used to offer both."""
    parser.add_argument("--no-progress", action="store_true", help=help)
    if keep_progress:
        parser.add_argument("--progress", dest="no_progress", action="store_false", help=argparse.SUPPRESS)


def existing_path(text: str) -> Path:
    """An argparse ``type`` for a path that must exist: a missing one is bad usage (exit 2), not a failure."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


def one_of(names: Sequence[str], what: str = "assignment") -> Callable[[str], str]:
    """An argparse ``type`` accepting only ``names`` (bad usage, exit 2, for any other).

    For a ``nargs="*"`` positional, where ``choices=`` cannot be used: argparse 3.11 checks the
    empty list given for no arguments against the choices and rejects it."""
    allowed = tuple(names)

    def check(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; choose from {', '.join(allowed)}")
        return text

    check.__name__ = what  # argparse names the type in its messages
    return check
