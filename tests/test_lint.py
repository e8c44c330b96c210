"""The lint gate: ruff's configuration, where CI runs it, and honest ``noqa``s.

Ruff itself runs in ``.ci/run`` (``ruff check .``, configured by
``[tool.ruff]`` in pyproject.toml); these tests keep that wiring and the
house rule that every suppression says why.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: A noqa comment: its codes, then a reason ("- why" or "(why)").
NOQA_WITH_REASON = re.compile(r"#\s*noqa:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*\s+(-\s*\S|\(\S)")


def _tracked_python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # The copies next to the notebooks are generated (python -m assignments build).
    return [ROOT / p for p in out.split() if not p.startswith("assignments/course/source/")]


def noqa_without_reason(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: comment`` (``file`` relative to ``root``) for every noqa comment in ``path``
    that names no code or no reason."""
    bad = []
    with tokenize.open(path) as handle:
        for token in tokenize.generate_tokens(handle.readline):
            if token.type == tokenize.COMMENT and re.search(r"#\s*noqa\b", token.string, flags=re.I):
                if not NOQA_WITH_REASON.search(token.string):
                    bad.append(f"{path.relative_to(root)}:{token.start[0]}: {token.string}")
    return bad


def test_every_noqa_names_its_codes_and_a_reason():
    bad = [line for path in _tracked_python_files() for line in noqa_without_reason(path)]
    assert not bad, "a `# noqa` must name its codes and why, e.g. `# noqa: E402  (why)`:\n" + "\n".join(bad)


def test_the_reason_check_rejects_a_bare_noqa(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os  # noqa\nimport sys  # noqa: F401\nimport re  # noqa: F401  (kept for re-export)\n"
                      "x = '# noqa inside a string is no comment'\n")
    found = noqa_without_reason(sample, tmp_path)
    assert [line.split(": ", 1)[1] for line in found] == ["# noqa", "# noqa: F401"]


def test_ci_runs_ruff_before_the_tests():
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    lint = [i for i, line in enumerate(lines) if re.search(r"\bruff check\b", line)]
    assert lint, ".ci/run does not run `ruff check`"
    assert lint[0] < lines.index("./run test"), "ruff must run before the tests (it fails in seconds)"


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_ruff_passes():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
