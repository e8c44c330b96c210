"""The Gradescope autograder bundle: ``python -m grader gradescope-bundle -a ASG --out bundle.zip``.

The zip holds ``setup.sh`` and ``run_autograder`` (Gradescope's entry points)
and ``source/``: this project's ``grader``, ``solutions``, ``data_utils``,
``pyproject.toml`` and ``constraints/ci.txt``.  Gradescope extracts it to
``/autograder/source``:

* ``setup.sh`` (image build) installs Python >= 3.11, bubblewrap, a venv with
  the CPU build of the pinned torch, the project, and generates the embedded
  dataset the overfit test trains on.  Choose Gradescope's Ubuntu 24.04 base
  image (Python 3.12).
* ``run_autograder`` (per submission) grades ``/autograder/submission`` (the
  notebook, or a folder with it; a ``*.pt`` file there is used as trained
  weights for the mAP gate, which is otherwise skipped) and writes
  ``/autograder/results/results.json`` in Gradescope's format (see
  :func:`grader.report.gradescope_results`).  If the grader itself fails
  (its sandbox does not work, it crashed), it writes no results.json and
  exits non-zero: Gradescope shows the run as failed rather than a zero.

Isolation on Gradescope: bubblewrap may not be able to create namespaces in
Gradescope's containers; the grader then falls back and, running as root,
executes the student's code as an unprivileged uid of its own (see
:class:`grader.sandbox.UidLease`) after ``run_autograder`` made the reference
and grader directories unreadable to other users.

``AUTOGRADER_ROOT`` (default ``/autograder``) and ``GRADER_PYTHON`` let the
tests run the bundle in a temporary folder with the project's interpreter.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

from data_utils.atomic import atomic_write_bytes
from grader.functions import check_assignment

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("grader", "solutions", "data_utils")
FILES = ("pyproject.toml", "constraints/ci.txt", "README.md")

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope image build: Python >= 3.11, bubblewrap, the pinned CPU torch, this project.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
cd "$ROOT/source"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip bubblewrap ca-certificates
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "Python >= 3.11 is needed: choose Gradescope's Ubuntu 24.04 base image" >&2; exit 1; }
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/pip" install --quiet --upgrade pip
TORCH=$(grep -E '^torch==' constraints/ci.txt | cut -d= -f3)
VISION=$(grep -E '^torchvision==' constraints/ci.txt | cut -d= -f3)
"$ROOT/venv/bin/pip" install --quiet --index-url https://download.pytorch.org/whl/cpu "torch==$TORCH" "torchvision==$VISION"
"$ROOT/venv/bin/pip" install --quiet -c constraints/ci.txt -e .
COURSE_DATA="$ROOT/data" "$ROOT/venv/bin/python" -c "from data_utils.data.synthetic import ensure_embedded_dataset; ensure_embedded_dataset()"
"$ROOT/venv/bin/python" -m grader sandbox-info
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope: grade /autograder/submission, write /autograder/results/results.json.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PY="${GRADER_PYTHON:-$ROOT/venv/bin/python}"
ASSIGNMENT="$(cat "$ROOT/source/ASSIGNMENT")"
export COURSE_DATA="${COURSE_DATA:-$ROOT/data}"
mkdir -p "$ROOT/results"
# Student code runs as an unprivileged uid (never root): keep the reference away from it.
if [ "$(id -u)" = 0 ]; then chmod -R go-rwx "$ROOT/source/solutions" "$ROOT/source/grader" 2>/dev/null || true; fi
ARGS=()
WEIGHTS="$(find "$ROOT/submission" -maxdepth 2 -name '*.pt' -print -quit 2>/dev/null)"
if [ -n "$WEIGHTS" ]; then ARGS+=(--weights "$WEIGHTS"); fi
if [ -n "${VOC_ROOT:-}" ]; then ARGS+=(--voc-root "$VOC_ROOT"); fi
cd "$ROOT/source"
# GRADER_EXTRA_ARGS: more options for the grader (e.g. "--no-overfit"), set by staff or tests.
read -r -a EXTRA <<< "${GRADER_EXTRA_ARGS:-}"
"$PY" -m grader grade "$ROOT/submission" --assignment "$ASSIGNMENT" --gradescope "$ROOT/results/results.json" \
    --feedback "$ROOT/results/feedback.md" "${ARGS[@]}" "${EXTRA[@]}"
STATUS=$?
if [ "$STATUS" != 0 ]; then
    # No results.json on purpose: Gradescope then shows the run as failed (the
    # student can resubmit, staff see this output) instead of a recorded zero.
    rm -f "$ROOT/results/results.json"
    echo "The grader failed (exit $STATUS); no score was recorded. Course staff: see the messages above." >&2
    exit "$STATUS"
fi
"""


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    mode = 0o755 if executable else 0o644
    info.external_attr = (stat.S_IFREG | mode) << 16
    zf.writestr(info, data)


def build_bundle(assignment: str, out: str | os.PathLike) -> Path:
    """Write the Gradescope zip for ``assignment``; returns its path."""
    check_assignment(assignment)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        _add(zf, "setup.sh", SETUP_SH.encode(), executable=True)
        _add(zf, "run_autograder", RUN_AUTOGRADER.encode(), executable=True)
        _add(zf, "ASSIGNMENT", f"{assignment}\n".encode())
        for package in PACKAGES:
            for path in sorted((ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    _add(zf, path.relative_to(ROOT).as_posix(), path.read_bytes())
        for name in FILES:
            if (ROOT / name).is_file():
                _add(zf, name, (ROOT / name).read_bytes())
    return atomic_write_bytes(out, buffer.getvalue())


def install_bundle(bundle: str | os.PathLike, autograder_root: str | os.PathLike) -> Path:
    """Extract a bundle the way Gradescope does (``<root>/source``, ``<root>/run_autograder``); for tests."""
    root = Path(autograder_root)
    source = root / "source"
    source.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            target = source / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            os.chmod(target, (info.external_attr >> 16) & 0o777 or 0o644)
    run = root / "run_autograder"
    run.write_bytes((source / "run_autograder").read_bytes())
    run.chmod(0o755)
    (root / "results").mkdir(exist_ok=True)
    return root
