"""Comparing a submission's outputs with the reference's, in the grader's process.

Every comparison returns a :class:`Verdict` whose message says *what* is wrong
(type, shape, dtype, device, NaN, values, mutated input) and, when a known
mistake explains the values, *which* mistake -- without printing hidden inputs
or reference outputs.  Visible checks (whose expected values the student has)
also say by how much (relative errors, expected shapes); hidden checks never do:
over resubmissions a relative error pins the hidden reference value (a loss of
0.5 with "rel error 4.3e-01" leaves 1.2536 or 0.199), and an expected size
reveals how many boxes the reference keeps.  The grader judges hidden checks
inside :func:`hidden_feedback` and passes their messages through
:func:`redact_hidden`.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

Diagnosis = tuple[Callable[[torch.Tensor], bool], str]


@dataclass
class Verdict:
    passed: bool
    message: str = ""
    rel_error: float | None = None
    #: Fraction of the points earned (None: all or nothing).
    fraction: float | None = None

    def __bool__(self) -> bool:  # pragma: no cover - convenience
        return self.passed


OK = Verdict(True)

_HIDDEN: contextvars.ContextVar[bool] = contextvars.ContextVar("grader_hidden_feedback", default=False)


@contextlib.contextmanager
def hidden_feedback(hidden: bool = True) -> Iterator[None]:
    """Inside, comparisons word their messages for a hidden check: what differs, not by how much."""
    token = _HIDDEN.set(bool(hidden))
    try:
        yield
    finally:
        _HIDDEN.reset(token)


def is_hidden() -> bool:
    return _HIDDEN.get()


#: Phrases of a message that quantify a hidden reference output (see the module docstring).
_REDACTIONS = (
    # "(rel error 4.3e-01)", "rel error 4.3e-01", "relative error: 0.43"
    (re.compile(r"\s*\(\s*rel(?:ative)?\.? error[^()]*\)", re.I), ""),
    (re.compile(r"\s*,?\s*\brel(?:ative)?\.? error\s*[:=]?\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.I), ""),
    # "expected (100, 4)", "expected [100, 4]", "expected torch.Size([100, 4])"
    (re.compile(r"\bexpected\s+(?:torch\.Size\()?[(\[][\d,\s]*[)\]]\)?"), "expected another shape"),
    # "12 RoIs sampled, expected 16 (...)": a count the reference produced
    (re.compile(r"\bexpected\s+[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?=\s*(?:[(),;:]|$|items|boxes|rows|values|proposals|RoIs))"),
     "expected a different number"),
)


def redact_hidden(message: str) -> str:
    """``message`` without the numbers that quantify a hidden check's reference output
    (relative errors, expected shapes and counts).  A backstop for judges that format
    their own numbers; :func:`compare_tensor` already words hidden messages without them."""
    for pattern, replacement in _REDACTIONS:
        message = pattern.sub(replacement, message)
    return message


def rel_error(x, y, eps: float = 1e-10) -> float:
    """The course's relative error, ``max|x - y| / max(|x| + |y|)`` (the denominator at least ``eps``):
    0 for equal values, about 1e-7 for float32 round-off.

    The one definition: the notebooks print it (``course_tools`` re-exports it) and the grader's
    messages quote it, so a student sees one number for one comparison.  It is a figure to read,
    not the pass mark (:func:`compare_tensor` decides with ``allclose``).  Entries NaN in both, or
    the same infinity in both, count as equal; any other non-finite difference gives 1, the
    largest value the ratio takes.  ``x`` and ``y`` are anything ``torch.as_tensor`` takes, of one
    shape (``ValueError`` otherwise).
    """
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.numel() == 0:
        return 0.0
    same = (torch.isnan(x) & torch.isnan(y)) | (torch.isinf(x) & torch.isinf(y) & (torch.sign(x) == torch.sign(y)))
    diff = torch.where(same, torch.zeros_like(x), (x - y).abs())
    if not bool(torch.isfinite(diff).all()):
        return 1.0
    size = x.abs() + y.abs()
    size = torch.where(torch.isfinite(size), size, torch.zeros_like(size))
    return float(diff.max() / size.max().clamp(min=eps))


def describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return f"{type(x).__name__}"


def close(a, b, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and values (NaN equal NaN), tolerant; never raises."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    try:
        return bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=True))
    except RuntimeError:
        return False


def compare_tensor(
    out,
    ref: torch.Tensor,
    *,
    what: str = "output",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = True,
    exact: bool = False,
    device: str | None = None,
    diagnoses: Sequence[Diagnosis] = (),
    hint: str = "",
) -> Verdict:
    """Compare one returned tensor with the reference's."""
    if not isinstance(out, torch.Tensor):
        return Verdict(False, f"{what}: expected a tensor, got {describe(out)}")
    if device is not None and getattr(out, "_grader_device", None) not in (None, device):
        return Verdict(False, f"{what}: returned on device {out._grader_device!r}; it must be on the input's device ({device})")
    if out.shape != ref.shape:
        if out.numel() == ref.numel() and out.numel() > 0:
            for test, message in diagnoses:
                try:
                    if test(out):
                        return Verdict(False, f"{what}: {message}")
                except Exception:  # noqa: BLE001 - a diagnosis must never break grading
                    pass
        if is_hidden():
            if out.dim() != ref.dim():
                return Verdict(False, f"{what}: shape {tuple(out.shape)}, expected {ref.dim()} dimension{'s' * (ref.dim() != 1)}")
            dims = [str(i) for i, (a, b) in enumerate(zip(out.shape, ref.shape)) if a != b]
            return Verdict(False, f"{what}: shape {tuple(out.shape)}: wrong size in dimension{'s' * (len(dims) > 1)} {', '.join(dims)}")
        return Verdict(False, f"{what}: shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    if check_dtype and out.dtype != ref.dtype:
        return Verdict(False, f"{what}: dtype {out.dtype}, expected {ref.dtype} (follow the input's dtype)")
    if out.is_floating_point() and ref.is_floating_point():
        bad = ~torch.isfinite(out) & torch.isfinite(ref)
        if bool(bad.any()):
            kind = "NaN" if bool(torch.isnan(out[bad]).any()) else "inf"
            return Verdict(False, f"{what}: contains {kind} where finite values are expected")
    if out.numel() == 0:
        return Verdict(True, rel_error=0.0)
    if exact or not (out.is_floating_point() or ref.is_floating_point()):
        if torch.equal(out.to(ref.dtype) if out.dtype != ref.dtype else out, ref):
            return Verdict(True, rel_error=0.0)
        err = rel_error(out.double(), ref.double())
    else:
        err = rel_error(out, ref)
        if torch.allclose(out.double(), ref.double(), atol=atol, rtol=rtol, equal_nan=True):
            return Verdict(True, rel_error=err)
    for test, message in diagnoses:
        try:
            if test(out):
                return Verdict(False, f"{what}: {message}", rel_error=err)
        except Exception:  # noqa: BLE001 - a diagnosis must never break grading
            pass
    text = f"{what}: values differ from the expected ones" + ("" if is_hidden() else f" (rel error {err:.1e})")
    if hint:
        text += f"; {hint}"
    return Verdict(False, text, rel_error=err)


def compare_tree(out, ref, *, what: str = "output", **kwargs) -> Verdict:
    """Compare nested dicts/lists/tuples of tensors; the first difference wins."""
    if isinstance(ref, torch.Tensor):
        return compare_tensor(out, ref, what=what, **kwargs)
    if isinstance(ref, dict):
        if not isinstance(out, dict):
            return Verdict(False, f"{what}: expected a dict with keys {sorted(ref)}, got {describe(out)}")
        missing = [k for k in ref if k not in out]
        if missing:
            return Verdict(False, f"{what}: missing keys {missing}")
        worst = 0.0
        for key in ref:
            verdict = compare_tree(out[key], ref[key], what=f"{what}[{key!r}]", **kwargs)
            if not verdict.passed:
                return verdict
            worst = max(worst, verdict.rel_error or 0.0)
        return Verdict(True, rel_error=worst)
    if isinstance(ref, (list, tuple)):
        if not isinstance(out, (list, tuple)):
            return Verdict(False, f"{what}: expected a {type(ref).__name__} of {len(ref)} items, got {describe(out)}")
        if len(out) != len(ref):
            if is_hidden():
                return Verdict(False, f"{what}: {len(out)} items, not the expected number")
            return Verdict(False, f"{what}: {len(out)} items, expected {len(ref)}")
        worst = 0.0
        for i, (o, r) in enumerate(zip(out, ref)):
            verdict = compare_tree(o, r, what=f"{what}[{i}]", **kwargs)
            if not verdict.passed:
                return verdict
            worst = max(worst, verdict.rel_error or 0.0)
        return Verdict(True, rel_error=worst)
    if isinstance(ref, float):
        if not isinstance(out, (int, float)) or abs(out - ref) > kwargs.get("atol", 1e-5) + kwargs.get("rtol", 1e-4) * abs(ref):
            return Verdict(False, f"{what}: value differs from the expected one")
        return OK
    if out != ref:
        return Verdict(False, f"{what}: {out!r} differs from the expected value")
    return OK


def tree_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(tree_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(tree_equal(x, y) for x, y in zip(a, b))
    return a == b


def tree_close(x, y) -> bool:
    """Equal nested structures, floating tensors equal up to float round-off
    (vectorised log/exp kernels differ in the last bit between CPUs and torch
    builds); integers, shapes, dtypes and everything else exactly."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape \
                or x.dtype != y.dtype:
            return False
        if not x.is_floating_point():
            return torch.equal(x, y)
        return bool(torch.isclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True).all())
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(tree_close(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(tree_close(a, b) for a, b in zip(x, y))
    return x == y


def check_not_mutated(before: dict, after: dict | None, names: Sequence[str] | None = None) -> Verdict:
    """Inputs (``{"args": [...], "kwargs": {...}}``) must be unchanged by the call."""
    if after is None:
        return OK
    args_before, args_after = before.get("args", []), after.get("args", [])
    for i, (b, a) in enumerate(zip(args_before, args_after)):
        if not tree_equal(b, a):
            name = names[i] if names and i < len(names) else f"argument {i + 1}"
            return Verdict(False, f"modified its input `{name}` in place (work on a copy: "
                                  "e.g. use out-of-place ops like x.clamp(...) instead of x.clamp_(...))")
    for key, b in before.get("kwargs", {}).items():
        if key in after.get("kwargs", {}) and not tree_equal(b, after["kwargs"][key]):
            return Verdict(False, f"modified its input `{key}` in place (work on a copy)")
    return OK


def devices_ok(devices: Sequence[str], expected: str) -> Verdict:
    wrong = sorted({d for d in devices if d != expected})
    if wrong:
        return Verdict(False, f"returned tensors on {', '.join(wrong)}; outputs must be on the input's device ({expected})")
    return OK
