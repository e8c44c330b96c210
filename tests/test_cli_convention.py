"""Every command line of the project follows the one convention of :mod:`data_utils.cli_options`.

The four CLIs (``python -m data_utils``, ``python -m solutions``, ``python -m grader``, ``python -m assignments``) and the
scripts in ``benchmarks/`` are read through their ``build_parser()``: every subcommand's options
are inspected (the same names for the same things, no retired spelling in any help), every
deprecated spelling still parses to the same value with a one-line note, bad usage exits 2 and a
failure exits 1.  Nothing here trains, grades or downloads: failures are provoked with empty or
missing folders.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_utils.cli_options import CANONICAL_OPTIONS, EXIT_FAILURE, EXIT_USAGE, RETIRED_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))

#: The ``dest`` each canonical option stores into.
CANONICAL_DEST = {option: option.lstrip("-").replace("-", "_") for option in CANONICAL_OPTIONS}
#: Other spellings people reach for; no command may offer them for these things.
SYNONYMS = {*RETIRED_OPTIONS, "--output", "--outdir", "--out-dir", "--data-dir", "--dataset", "--voc-dir", "--cuda",
            "--random-seed", "--quiet-progress"}


def benchmark_parser(name: str) -> argparse.ArgumentParser:
    """``benchmarks/<name>.py``'s parser; the scripts import their sibling ``timing`` module as scripts do."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name).build_parser()
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def top_parsers() -> dict[str, argparse.ArgumentParser]:
    from assignments.__main__ import build_parser as assignments_parser
    from data_utils.__main__ import build_parser as data_utils_parser
    from grader.cli import build_parser as grader_parser
    from solutions.__main__ import build_parser as solutions_parser

    parsers = {"data_utils": data_utils_parser(), "solutions": solutions_parser(), "grader": grader_parser(),
               "assignments": assignments_parser()}
    parsers.update({f"benchmarks/{name}": benchmark_parser(name) for name in BENCHMARKS})
    return parsers


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands() -> Iterator[tuple[str, list[str], argparse.ArgumentParser]]:
    """(label, argv prefix, parser) of every command: each subcommand, or the script itself."""
    for name, parser in top_parsers().items():
        subs = subcommands(parser)
        if not subs:
            yield name, [], parser
        for sub, sub_parser in subs.items():
            yield f"{name} {sub}", [sub], sub_parser


COMMANDS = {label: (prefix, parser) for label, prefix, parser in commands()}


def visible_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions if action.help != argparse.SUPPRESS
            for option in action.option_strings}


def hidden_aliases(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions if action.help == argparse.SUPPRESS
            for option in action.option_strings}


def test_the_walk_sees_every_cli() -> None:
    """A guard for the tests below: they would pass vacuously on an empty walk."""
    assert {"solutions main", "solutions train", "data_utils download", "grader grade", "grader batch", "assignments build",
            "assignments selftest", "benchmarks/bench_cache"} <= set(COMMANDS)
    assert len(BENCHMARKS) >= 7


@pytest.mark.parametrize("label", sorted(COMMANDS))
def test_options_use_the_shared_names(label: str) -> None:
    _, parser = COMMANDS[label]
    options = visible_options(parser)
    assert not SYNONYMS & set(options), f"{label} offers {sorted(SYNONYMS & set(options))}; see data_utils/cli_options.py"
    for option, action in options.items():
        if option in CANONICAL_DEST:
            assert action.dest == CANONICAL_DEST[option], f"{label}: {option} stores into {action.dest}"
    # The things themselves, whatever they are called, go by the canonical name.
    for action in parser._actions:
        canonical = next((o for o, d in CANONICAL_DEST.items() if d == action.dest), None)
        if canonical and action.help != argparse.SUPPRESS and action.option_strings:
            assert canonical in action.option_strings, f"{label}: {action.dest} is spelled {action.option_strings}"


@pytest.mark.parametrize("label", sorted(COMMANDS))
def test_every_hidden_spelling_is_a_deprecated_alias_of_a_shown_one(label: str, capsys) -> None:
    _, parser = COMMANDS[label]
    shown = {action.dest for action in parser._actions if action.help != argparse.SUPPRESS}
    for option, action in hidden_aliases(parser).items():
        assert action.dest in shown, f"{label}: hidden {option} stores into {action.dest}, which nothing shows"


#: (argv, dest, value): old spellings in notes and scripts that must keep working.
DEPRECATED = [
    ("solutions main", ["--data", "/tmp/d"], "data_root", Path("/tmp/d")),
    ("data_utils generate", ["--root", "/tmp/d"], "data_root", Path("/tmp/d")),
    ("data_utils download", ["--root", "/tmp/d"], "data_root", Path("/tmp/d")),
    ("benchmarks/bench_cache", ["--voc-dir", "/tmp/v"], "voc_root", Path("/tmp/v")),
    ("benchmarks/bench_fcos", ["--batch", "3"], "batch_size", 3),
    ("benchmarks/bench_two_stage", ["--batch", "3"], "batch_size", 3),
]


@pytest.mark.parametrize(("label", "old", "dest", "value"), DEPRECATED, ids=[d[0] + " " + d[1][0] for d in DEPRECATED])
def test_old_spellings_still_work_with_a_note(label: str, old: list[str], dest: str, value, capsys) -> None:
    _, parser = COMMANDS[label]
    new = next(o for o, a in visible_options(parser).items() if a.dest == dest)
    assert getattr(parser.parse_args(old), dest) == value == getattr(parser.parse_args([new, old[1]]), dest)
    err = capsys.readouterr().err
    assert err == f"note: {old[0]} is deprecated; use {new}\n"


@pytest.mark.parametrize("label", sorted(COMMANDS))
def test_help_exits_0_and_an_unknown_option_exits_2(label: str, capsys) -> None:
    _, parser = COMMANDS[label]
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--no-such-option"])
    assert done.value.code == EXIT_USAGE


def _main(cli: str):
    if cli == "data_utils":
        from data_utils.__main__ import main
    elif cli == "solutions":
        from solutions.__main__ import main
    elif cli == "grader":
        from grader.cli import main
    else:
        from assignments.__main__ import main
    return main


@pytest.mark.parametrize(("cli", "argv"), [
    ("data_utils", []), ("grader", []), ("assignments", []),
    ("data_utils", ["frobnicate"]), ("grader", ["frobnicate"]), ("assignments", ["frobnicate"]),
    ("grader", ["grade", ".", "--assignment", "three_stage"]),
    ("grader", ["gradescope-bundle", "--assignment", "three_stage", "--out", "x.zip"]),
    ("assignments", ["build", "three_stage"]),
    ("assignments", ["selftest", "one_stage", "three_stage"]),
    ("data_utils", ["samples", "/no/such/VOC2007"]),
    ("grader", ["grade", "/no/such/submission.ipynb", "--assignment", "one_stage"]),
    ("grader", ["batch", "/no/such/folder", "--assignment", "one_stage"]),
    ("solutions", ["train", "--preset", "yolo-voc"]), ("solutions", []),
])
def test_bad_usage_exits_2(cli: str, argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        _main(cli)(argv)
    assert done.value.code == EXIT_USAGE
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["main", "train"])
def test_the_moved_commands_say_where_they_went(command: str, capsys) -> None:
    """``python -m data_utils main|train`` (old notes) names ``python -m solutions`` and exits 2, without
    running anything: the student package cannot build the reference detectors."""
    from data_utils.__main__ import build_parser, main

    assert main([command, "--preset", "fcos-voc"]) == EXIT_USAGE
    assert f"moved: run `python -m solutions {command}`" in capsys.readouterr().err
    assert command not in subcommands(build_parser()), "hidden: not offered as a data_utils command"


def test_bad_shard_is_bad_usage(tmp_path: Path, capsys) -> None:
    from grader.cli import main

    assert main(["batch", str(tmp_path), "--assignment", "one_stage", "--shard", "3/2"]) == EXIT_USAGE


def test_a_failed_download_check_exits_1(tmp_path: Path, capsys) -> None:
    from data_utils.__main__ import main

    assert main(["download", "--voc-root", str(tmp_path), "--no-progress"]) == EXIT_FAILURE
    assert "error:" in capsys.readouterr().err


def test_merging_a_corrupt_report_exits_1(tmp_path: Path, capsys) -> None:
    from grader.cli import main

    (tmp_path / "shard").mkdir()
    (tmp_path / "shard" / "ann.json").write_text("{not json")
    assert main(["merge", str(tmp_path / "shard"), "--out", str(tmp_path / "all.csv")]) == EXIT_FAILURE
    assert "not a grader report" in capsys.readouterr().err
    assert not (tmp_path / "all.csv").exists()


def test_a_failed_check_exits_1(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import assignments.build
    from assignments.__main__ import main

    monkeypatch.setattr(assignments.build, "drift", lambda: ["one_stage.ipynb differs"])
    monkeypatch.setattr(assignments.build, "describe_drift", lambda problems: "\n".join(problems))
    assert main(["check"]) == EXIT_FAILURE
    assert "one_stage.ipynb differs" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "status"), [(["--help"], 0), ([], EXIT_USAGE), (["frobnicate"], EXIT_USAGE)])
def test_the_shell_entry_follows_the_same_statuses(argv: list[str], status: int) -> None:
    """``./run``'s own usage handling (it never reaches the set-up for these)."""
    import subprocess

    proc = subprocess.run([str(ROOT / "run"), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == status
    assert "./run main" in (proc.stdout if status == 0 else proc.stderr)
