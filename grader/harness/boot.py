"""Start the zygote inside the sandbox: ``python -I -c <this file's text> --zygote IN,OUT NAME SOURCE ...``.

Under ``-I`` (and bubblewrap) the grader is not importable from disk, and must not be: a
submission may not import it.  So the grader passes the harness's sources as command-line
arguments (:func:`zygote_command`); this program serves them under their usual names
(``grader.harness.wire``, ...) through a ``sys.meta_path`` finder, imports
:mod:`grader.harness.zygote`, removes the finder again and runs
:func:`grader.harness.zygote.zygote_main`.  From then on nothing of ``grader`` can be
imported: the finder is gone, and each child drops the loaded modules from
``sys.modules`` and installs the :class:`~grader.harness.submission.ImportBlocker` before
the submission runs.  The harness modules therefore import each other at module level only
(``tests/test_grader_harness.py`` checks it): an import inside a function would fail there.

Standard library only; nothing here runs a submission.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

PACKAGE = "grader.harness"
#: Largest single command-line argument Linux accepts (``MAX_ARG_STRLEN``, 32 pages of 4 KiB).
MAX_ARGUMENT_BYTES = 32 * 4096


def harness_sources() -> dict[str, str]:
    """``{dotted module name: source}`` of the harness package (this module excepted: it is the
    program itself) and an empty ``grader`` package above it, which the sandbox must not run."""
    folder = Path(__file__).resolve().parent
    sources = {"grader": ""}
    for path in sorted(folder.glob("*.py")):
        if path.stem == "boot":
            continue
        sources[PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"] = path.read_text()
    return sources


def zygote_command(python: str, fds: str) -> list[str]:
    """The command line that starts a zygote with ``python`` on the control pipes ``fds`` (``"IN,OUT"``)."""
    arguments = [python, "-I", "-c", Path(__file__).read_text(), "--zygote", fds]
    for name, text in harness_sources().items():
        arguments += [name, text]
    return arguments


class SourceFinder:
    """A ``sys.meta_path`` finder and loader for modules given as source text; a name that
    other names extend is a package."""

    def __init__(self, sources: dict[str, str]):
        self.sources = dict(sources)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.sources:
            return None
        is_package = any(other.startswith(fullname + ".") for other in self.sources)
        return importlib.util.spec_from_loader(fullname, self, origin=self.filename(fullname), is_package=is_package)

    def filename(self, fullname: str) -> str:
        """The repository path of a module, for tracebacks (the file itself is not read)."""
        is_package = any(other.startswith(fullname + ".") for other in self.sources)
        return fullname.replace(".", "/") + ("/__init__.py" if is_package else ".py")

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        name = module.__name__
        module.__file__ = self.filename(name)
        exec(compile(self.sources[name], module.__file__, "exec", dont_inherit=True), module.__dict__)

    def get_source(self, fullname: str) -> str:
        """For :mod:`linecache`: a traceback through the zygote shows its lines."""
        return self.sources[fullname]


def load_harness(sources: dict[str, str]):
    """Import :mod:`grader.harness.zygote` (and what it imports) from ``sources``; the finder
    is removed afterwards, so later imports of these names find nothing."""
    finder = SourceFinder(sources)
    sys.meta_path.insert(0, finder)  # first: a grader on sys.path (an editable install) must not win
    try:
        return importlib.import_module(f"{PACKAGE}.zygote")
    finally:
        sys.meta_path.remove(finder)


def main(argv: list[str]) -> None:
    """``argv``: ``[-c, --zygote, IN,OUT, NAME, SOURCE, NAME, SOURCE, ...]``."""
    pairs = argv[3:]
    zygote = load_harness(dict(zip(pairs[0::2], pairs[1::2])))
    fds = argv[2].split(",")
    zygote.zygote_main(int(fds[0]), int(fds[1]))


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "--zygote":
    main(sys.argv)
