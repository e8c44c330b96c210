"""Helpers for the detection course notebooks (student side).

The notebooks import them from the student package
(``from data_utils.course_tools import check, train, ...``): one copy, installed
with ``data_utils`` and the grader's visible-check runner ``grader.sanity``
(the student wheel), never the course's reference solutions:

* :func:`check` -- the visible sanity check after each function you write:
  runs your function on small stored inputs and prints the relative error
  against stored expected values (``<assignment>_sanity.pt``, generated from
  the reference implementation);
* :func:`train` -- the training cells' loop: checkpoints as it goes, resumes an
  interrupted run, and says where it stopped when you interrupt it;
* :func:`overfit_verdict` -- after the "overfit a few images" cell: did the
  loss fall, and does the model find the objects of its training images?
* :func:`make_submission` -- checks that your notebook is saved and contains
  every required function, then writes ``<assignment>_submission.zip`` with
  exactly the files the grader needs (the notebook and the trained weights).

The sanity fixtures are not code: they stay next to the notebook in the
assignment folder, which is the current directory of the notebook's kernel
(the first cell checks that they are there); :data:`FIXTURE_DIR` overrides it.

``grader.functions`` and ``grader.sanity`` are imported inside the functions:
importing this module (the notebook's imports cell) costs nothing, and the
grader's modules never depend on it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: Folder of the ``<assignment>_sanity.pt`` fixtures; None: the current directory (the notebook's folder).
FIXTURE_DIR: Path | None = None

STUB_MARKER = "raise NotImplementedError()"


class NotebookMessage(Exception):
    """An error whose whole story is its message: IPython shows only that line
    (``_render_traceback_``), not a traceback into this file."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class NotImplementedYet(NotebookMessage, NotImplementedError):
    """A function still holds its stub (``raise NotImplementedError()``)."""


class SanityCheckFailed(NotebookMessage, AssertionError):
    """Some visible cases failed (each printed its own line above)."""


class SubmissionError(NotebookMessage, RuntimeError):
    """The submission cannot be built; the message lists every problem."""


class TrainingStopped(NotebookMessage, KeyboardInterrupt):
    """The training cell was interrupted; the message says where it stopped."""


def rel_error(x, y, eps: float = 1e-10) -> float:
    """``max|x - y| / max(|x| + |y|, eps)``: 0 means equal, ~1e-7 is float32 round-off.

    The grader's own (:func:`grader.compare.rel_error`), so the number a check prints and the
    number this prints for the same tensors are one number."""
    from grader.compare import rel_error as course_rel_error

    return course_rel_error(x, y, eps)


def _caller_namespace(depth: int = 2) -> dict:
    return inspect.stack()[depth].frame.f_globals


def required_functions(assignment: str) -> list[str]:
    """The functions ``assignment`` grades, in notebook order."""
    from grader.functions import STUDENT_FUNCTIONS

    return list(STUDENT_FUNCTIONS[assignment])


def fixture_dir() -> Path:
    """Where :func:`check` reads ``<assignment>_sanity.pt``: :data:`FIXTURE_DIR`, else the current directory
    (a notebook's kernel runs in the notebook's folder, and the released folder holds the fixtures there)."""
    return FIXTURE_DIR if FIXTURE_DIR is not None else Path.cwd()


def check(name: str, assignment: str | None = None, namespace: dict | None = None) -> None:
    """Sanity-check your ``name`` against stored expected values.

    Runs the visible cases of ``name`` (inputs and expected outputs stored in
    ``<assignment>_sanity.pt`` in :func:`fixture_dir`, computed by the reference)
    on the function defined in your notebook, prints one line per case with
    its relative error (where a value is compared), and raises
    :class:`SanityCheckFailed` (an ``AssertionError``) when a case fails --
    except while nbgrader grades the notebook (``NBGRADER_EXECUTION``): then
    the hidden tests after it decide the cell's points, with the other
    functions isolated.  A stub raises :class:`NotImplementedYet`.
    ``assignment`` defaults to the one whose functions include ``name``
    (this folder's assignment first).
    """
    from grader.functions import STUDENT_FUNCTIONS
    from grader.sanity import run_sanity

    namespace = namespace if namespace is not None else _caller_namespace()
    folder = fixture_dir()
    if assignment is None:
        here = [p.name.removesuffix("_sanity.pt") for p in sorted(folder.glob("*_sanity.pt"))]
        owners = [a for a in STUDENT_FUNCTIONS if name in STUDENT_FUNCTIONS[a]]
        owners.sort(key=lambda a: (a not in here, a))
        if not owners:
            raise KeyError(f"{name!r} is not a function of this course")
        assignment = owners[0]
    fixture = folder / f"{assignment}_sanity.pt"
    if name not in namespace:
        raise NameError(f"{name} is not defined yet: run the cell that defines it first")
    print(f"{name}:")
    results = run_sanity(assignment, name, namespace, fixture_path=fixture, verbose=False)
    failed = [r for r in results if not r.passed]
    if results and all(r.message.startswith("NotImplementedError") for r in failed) and len(failed) == len(results):
        raise NotImplementedYet(f"{name} is not implemented yet: replace `raise NotImplementedError()` in its cell "
                                "with your code, run that cell, then this one")
    from grader.sanity import print_results

    print_results(results)
    if failed:
        message = f"{len(failed)} of {len(results)} sanity checks of {name} failed (see above)"
        if any("fixed_losses" in r.id for r in failed):
            message += ("; the loss checks also run the functions your class calls (matching, deltas, "
                        "centerness, sampling): make their checks pass first")
        if os.environ.get("NBGRADER_EXECUTION"):
            # Grading: the hidden tests that follow decide this cell's points, with the
            # other functions replaced by working ones, so one bug costs points once.
            print(f"  ({message})")
            return
        raise SanityCheckFailed(message)


# --------------------------------------------------------------------------- training


class _CountingLoader:
    """Iterates ``loader`` and counts the batches it handed out (the iteration an
    interrupt happened at, without reaching into the training loop)."""

    def __init__(self, loader, start: int = 0):
        self.loader, self.drawn, self.fetching = loader, start, False

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            self.fetching = True  # an interrupt now: every batch handed out was trained on
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.fetching = False
            self.drawn += 1
            yield batch

    @property
    def completed(self) -> int:
        """Iterations finished when an interrupt arrived (the batch in training did not finish)."""
        return self.drawn if self.fetching else max(0, self.drawn - 1)


def train(model, loader, config, *, device=None, checkpoint=None, model_config=None, progress: bool = True,
          every: int = 50):
    """``data_utils.training.engine.train_detector`` for a notebook cell.

    With ``checkpoint`` (a path), saves every ``every`` iterations and, when the
    file holds an *unfinished* run with the same settings (``config`` and
    ``model_config``), resumes it: a Colab session cut off mid-run continues
    where it stopped when you run the cell again.  A finished or different
    run there is started over (delete the file to force a fresh start).
    Interrupting (the stop button, Ctrl-C) ends the cell with one line saying
    the iteration and where the checkpoint is, instead of a traceback.
    Returns the :class:`~data_utils.training.engine.TrainState`.
    """
    import dataclasses

    import torch

    from data_utils.training.engine import train_detector

    resume = False
    start = 0
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        config = dataclasses.replace(config, checkpoint_every=config.checkpoint_every or every)
        if checkpoint.is_file():
            try:
                saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
            except Exception:  # noqa: BLE001 - unreadable (truncated) file: start over
                saved = {}
            same = saved.get("train_config") == dataclasses.asdict(config) and \
                saved.get("model_config") == dict(model_config or {})
            start = int(saved.get("iteration", 0)) if same else 0
            resume = same and 0 < start < config.max_iters
            if resume:
                print(f"resuming from iteration {start} of {config.max_iters} ({checkpoint}; delete it to start over)")
            else:
                start = 0  # a finished or different run: train_detector overwrites the file
    counting = _CountingLoader(loader, start)
    try:
        return train_detector(model, counting, config, device=device, checkpoint_path=checkpoint, resume=resume,
                              model_config=model_config, progress=progress)
    except KeyboardInterrupt:
        done = counting.completed
        where = "no checkpoint (this cell does not save one)"
        if checkpoint is not None and checkpoint.is_file():
            saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
            where = (f"the checkpoint is at {checkpoint} (iteration {saved.get('iteration', 0)}): "
                     "run this cell again to resume from it")
        raise TrainingStopped(f"stopped at iteration {done} of {config.max_iters}; {where}") from None


# --------------------------------------------------------------------------- overfit verdict

#: The overfit run passes when the loss of its last iterations is at most this
#: fraction of its first iteration's, ...
OVERFIT_LOSS_RATIO = 0.5
#: ... and at least this fraction of the training images' objects is found.
OVERFIT_MIN_FOUND = 0.5


def laptop_threads() -> int:
    """A sensible number of CPU threads for PyTorch on a laptop or a small VM.

    Half the logical cores (hyper-threads share one core's arithmetic units),
    at most 4: on a shared 2-core machine two threads ran 5x slower than one,
    because every parallel region waits for its slowest thread.
    """
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


def found_in_top_k(detections, gt_boxes, iou_threshold: float = 0.5) -> tuple[int, int]:
    """``(found, total)``: objects found among each image's ``k`` best detections
    (``k`` = its number of objects); a detection finds an object of its own class
    with IoU >= ``iou_threshold``, each object at most once.  ``gt_boxes`` is
    ``(B, N, 5)`` padded with -1 rows; ``detections`` one ``Detections`` per image."""
    import torch
    from torchvision.ops import box_iou

    found = total = 0
    for det, gt in zip(detections, gt_boxes):
        gt = gt[gt[:, 4] >= 0].float().cpu()
        total += len(gt)
        if len(gt) == 0 or len(det.boxes) == 0:
            continue
        order = torch.argsort(det.scores.detach().float().cpu(), descending=True)[: len(gt)]
        boxes, classes = det.boxes.detach().float().cpu()[order], det.classes.cpu()[order]
        overlap = box_iou(boxes, gt[:, :4]) * (classes[:, None].long() == gt[None, :, 4].long())
        used: set[int] = set()
        for row in overlap:  # by decreasing score
            row = row.clone()
            if used:
                row[list(used)] = 0
            j = int(row.argmax())
            if row[j] >= iou_threshold:
                used.add(j)
                found += 1
    return found, total


@dataclass
class OverfitVerdict:
    """What :func:`overfit_verdict` measured (``passed`` is the verdict)."""

    first_loss: float
    last_loss: float
    found: int
    total: int
    passed: bool
    message: str


def overfit_verdict(model, dataset, history: dict, *, device=None, batch_size: int = 8,
                    judge: bool = True) -> OverfitVerdict:
    """Judge an "overfit a few images" run and print the verdict.

    ``history`` is the training history (``train_detector(...).history``);
    ``dataset`` the images it trained on (without random flips).  The run
    passes when the total loss of the last 5 iterations fell to at most
    ``OVERFIT_LOSS_RATIO`` of the first iteration's, and the model, in eval
    mode, finds at least ``OVERFIT_MIN_FOUND`` of the objects of those images
    among its top-k detections at IoU 0.5.  ``judge=False`` (the tiny profile:
    too few iterations to learn anything) prints the figures without a verdict.
    Never raises for a failed run: the message says where to look.
    """
    import math

    import torch

    losses = history.get("total", [])
    if not losses:
        raise ValueError("the training history has no 'total' loss: pass train_detector(...).history")
    first, last = losses[0], sum(losses[-5:]) / len(losses[-5:])
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    found = total = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            images = torch.stack([item[1] for item in items]).to(device)
            gt_boxes = torch.stack([item[2] for item in items])
            detections = model.inference(images, score_thresh=0.05, nms_thresh=0.5)
            f, t = found_in_top_k(detections, gt_boxes)
            found, total = found + f, total + t
    figures = (f"loss fell from {first:.2f} to {last:.2f}; {found} of {total} training boxes found at IoU 0.5"
               if last < first else
               f"loss did not fall: {first:.2f} -> {last:.2f}; {found} of {total} training boxes found at IoU 0.5")
    loss_ok = math.isfinite(last) and last <= OVERFIT_LOSS_RATIO * first
    found_ok = total > 0 and found >= OVERFIT_MIN_FOUND * total
    passed = loss_ok and found_ok
    if not judge:
        message = f"{figures} (too few iterations for a verdict with these settings)"
    elif passed:
        message = f"{figures}: the pipeline learns. PASSED"
    else:
        hints = []
        if not loss_ok:
            hints.append(f"the loss should fall below {OVERFIT_LOSS_RATIO:.0%} of its start: look at the losses "
                         "(targets for the right locations? normalised by the number of matched locations?)")
        if loss_ok and not found_ok:
            hints.append(f"at least {OVERFIT_MIN_FOUND:.0%} of the boxes should be found although the loss fell: "
                         "look at inference (decoding the deltas with the right locations and stride, "
                         "score, clipping, NMS)")
        message = f"{figures}: NOT PASSED; " + "; ".join(hints) + \
            ". These settings overfit with the reference code, so the cause is in your code."
    print(message)
    return OverfitVerdict(first, last, found, total, passed, message)


# --------------------------------------------------------------------------- submission


def _load_notebook(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RuntimeError(f"{path} is not a readable notebook ({error})") from None


def _code_cells(nb: dict) -> list[tuple[str, str]]:
    out = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
        out.append((grade_id, source))
    return out


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^(def|class)\s+{re.escape(name)}\b", source, flags=re.M) is not None


def _normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _last_executed_definition(name: str, history: list[str]) -> str | None:
    for source in reversed(history):
        if _defines(source, name):
            return source
    return None


def submission_problems(assignment: str, notebook: Path, history: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``(errors, unimplemented)`` for a saved notebook.

    errors: missing file, unreadable file, a required function missing from it,
    or (when the kernel's ``history`` of executed cells is given) a function
    whose last executed definition differs from the saved one (unsaved edits).
    unimplemented: required functions still containing the stub.
    """
    errors: list[str] = []
    unimplemented: list[str] = []
    if not notebook.is_file():
        return [f"{notebook} does not exist: save the notebook under this name in the assignment folder"], []
    try:
        cells = _code_cells(_load_notebook(notebook))
    except RuntimeError as error:
        return [str(error)], []
    for name in required_functions(assignment):
        defining = [source for grade_id, source in cells if grade_id == name or _defines(source, name)]
        if not defining:
            errors.append(f"{name}: no cell of the saved notebook defines it (was its cell deleted?)")
            continue
        saved = defining[-1]
        if STUB_MARKER in saved:
            unimplemented.append(name)
        if history is not None:
            executed = _last_executed_definition(name, history)
            if executed is not None and _normalise(executed) != _normalise(saved):
                errors.append(f"{name}: the saved notebook differs from the code you last ran "
                              "(save the notebook, or re-run the cell, then try again)")
    return errors, unimplemented


#: Largest weights file a submission may carry (FCOS with FPN 128 is about 25 MiB).
WEIGHTS_LIMIT_MIB = 60


def weights_file(assignment: str) -> str:
    """Name of the trained weights next to the notebook (what the grader looks for)."""
    return f"{assignment}_weights.pt"


def weights_problems(path: Path) -> list[str]:
    """Why ``path`` cannot go into a submission (empty: it can)."""
    if not path.is_file():
        return [f"{path.name} is missing next to the notebook: run the cell that saves the weights (after the "
                "training section), or make_submission(..., weights=False) to submit the notebook alone"]
    size = path.stat().st_size / 2**20
    if size > WEIGHTS_LIMIT_MIB:
        return [f"{path.name} is {size:.0f} MiB, more than the {WEIGHTS_LIMIT_MIB} MiB a submission may hold: save the "
                "model's weights only, save_checkpoint(path, model, model_config=...) (no optimizer)"]
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        return [f"{path.name} is not a readable checkpoint ({type(error).__name__}): run the save cell again"]
    if not isinstance(payload, dict) or "model" not in payload or not payload.get("model_config"):
        return [f"{path.name} is not a checkpoint with its model_config: save it with "
                "data_utils.training.engine.save_checkpoint(path, model, model_config={...})"]
    return []


def make_submission(assignment: str, notebook: str | Path | None = None, *, allow_incomplete: bool = False,
                    weights: bool = True, out: str | Path | None = None) -> Path:
    """Check the saved notebook, then write ``<assignment>_submission.zip``.

    The archive holds ``<assignment>.ipynb`` and, unless ``weights=False``, the
    trained weights ``<assignment>_weights.pt`` saved next to it (at most
    ``WEIGHTS_LIMIT_MIB``).  Fails with a list of problems when the notebook is
    missing, not saved, or lacks a required function, or the weights are
    missing or too large; an unimplemented function (still
    ``raise NotImplementedError()``) is an error unless ``allow_incomplete``.
    """
    from grader.functions import STUDENT_FUNCTIONS

    if assignment not in STUDENT_FUNCTIONS:
        raise ValueError(f"unknown assignment {assignment!r}; expected one of {sorted(STUDENT_FUNCTIONS)}")
    notebook = Path(notebook) if notebook is not None else Path.cwd() / f"{assignment}.ipynb"
    history = None
    try:  # the cells this kernel executed, when running inside IPython
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            history = [s for s in shell.user_ns.get("In", []) if isinstance(s, str)]
    except ImportError:
        pass
    errors, unimplemented = submission_problems(assignment, notebook, history)
    if unimplemented and not allow_incomplete:
        errors.append("not implemented yet: " + ", ".join(unimplemented) +
                      " (to submit anyway: make_submission(..., allow_incomplete=True))")
    weights_path = notebook.parent / weights_file(assignment)
    if weights:
        errors += weights_problems(weights_path)
    if errors:
        raise SubmissionError("cannot build the submission:\n  - " + "\n  - ".join(errors))
    out = Path(out) if out is not None else notebook.parent / f"{assignment}_submission.zip"
    members = [(f"{assignment}.ipynb", notebook)] + ([(weights_path.name, weights_path)] if weights else [])
    described = []
    with zipfile.ZipFile(out, "w") as archive:
        for name, path in members:
            info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
            # weights barely compress; the notebook does
            info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".ipynb") else zipfile.ZIP_STORED
            data = path.read_bytes()
            archive.writestr(info, data)
            described.append(f"{name} (sha256 {hashlib.sha256(data).hexdigest()[:12]})")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): " + ", ".join(described))
    if unimplemented:
        print("warning: not implemented: " + ", ".join(unimplemented), file=sys.stderr)
    return out
