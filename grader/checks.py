"""The check registry: what is checked for every student function.

A :class:`Check` names one graded property of one student function.  Its
``make()`` (run in the grader's process, where :mod:`solutions` is available)
returns a :class:`Job`: one or more procedure specs for the sandbox (see
:mod:`grader.harness.procedures`) and a ``judge`` that compares the submission's outputs
with the reference's and returns a :class:`~grader.compare.Verdict`.

The reference's outputs are computed by running *the same procedure* on the
reference namespace in this process (:func:`run_reference`), so the student's
and the reference's code paths differ only in the function under test.

Points come from ``grader/rubric.toml`` (``tests/test_grader.py`` checks that
every check has an entry and every entry a check).  The checks of an
assignment are listed by :func:`grader.suites.registry`; the modules that
define them register them (:data:`grader.registry.CHECK_SUITES`).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from grader.compare import Verdict
from grader.functions import CLASSES, DEPENDENCIES, all_names, reference
from grader.harness import procedures
from grader.parsing import parse as parse_python

Judge = Callable[[list], Verdict]


@dataclass
class Job:
    specs: list[dict]
    judge: Judge
    #: Seconds of wall-clock time per spec (None: the rubric's default).
    wall_seconds: float | None = None
    #: Names a known mistake behind a crash: error text -> message (None: the plain error).
    explain: Callable[[str], str | None] | None = None


@dataclass
class Check:
    id: str
    function: str
    title: str
    visible: bool
    make: Callable[[], Job]
    cuda: bool = False
    #: Replace the assignment's other functions by the reference (oracle) while checking this one.
    isolate: bool = True
    limits: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Reference side
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def reference_namespace(assignment: str) -> dict:
    return {name: reference(name) for name in all_names(assignment)}


def run_reference(assignment: str, spec: dict):
    """Run ``spec`` on the reference in this process; return the procedure's value."""
    record = procedures.run_procedure(dict(reference_namespace(assignment)), copy.deepcopy(spec))
    if not record.get("ok"):
        raise RuntimeError(f"the reference failed on {spec.get('op')} {spec.get('name')}: {record.get('error_type')}: "
                           f"{record.get('error')}\n{record.get('traceback')}")
    return record["value"]


_JOBS: dict[tuple[str, str], Job] = {}


def cached_job(assignment: str, check: Check) -> Job:
    """``check.make()``, computed once per process (inputs are seeded, so the job never changes)."""
    key = (assignment, check.id)
    if key not in _JOBS:
        _JOBS[key] = check.make()
    return _JOBS[key]


#: Reference functions that compute another function's value *inline* (not by calling
#: it), so that their answers would reveal it: the reference ``nms`` computes the IoUs
#: it thresholds (two boxes and a bisection over the threshold give any IoU).  Calls
#: are found in the reference's source (:func:`reference_reaches`); this table holds
#: what an AST cannot see.
COMPUTES_INLINE: dict[str, tuple[str, ...]] = {"nms": ("iou",), "class_spec_nms": ("iou",)}


@functools.lru_cache(maxsize=None)
def reference_reaches(assignment: str) -> dict[str, frozenset[str]]:
    """``{name: every assignment name whose value the reference of name computes}``.

    Derived from the reference source (:func:`grader.source.reference_source`, the
    solutions modules as one module): a top-level definition reaches every
    top-level name it mentions, transitively through helpers (``_iou_per_image``,
    ``box_area``), plus :data:`COMPUTES_INLINE`.  Over-approximate on purpose (a
    local variable named like a function counts): an oracle too few costs nothing
    to an honest submission, an oracle too many answers the function under test.
    """
    import ast

    from grader.source import reference_source

    tree = parse_python(reference_source(assignment))
    defs = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    mentions = {name: {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in defs} - {name}
                for name, node in defs.items()}
    names = set(all_names(assignment))
    reaches: dict[str, frozenset[str]] = {}
    for name in names:
        seen, todo = set(), list(mentions.get(name, ()))
        while todo:
            other = todo.pop()
            if other not in seen:
                seen.add(other)
                todo.extend(mentions.get(other, ()))
        for other in list(seen):
            seen.update(COMPUTES_INLINE.get(other, ()))
        seen.update(COMPUTES_INLINE.get(name, ()))
        reaches[name] = frozenset((seen & names) - {name})
    return reaches


def oracle_names(assignment: str, function: str) -> list[str]:
    """Functions answered by the reference while ``function`` is checked: every other
    function, except those whose reference computes ``function`` (directly or through
    another function), which would launder the reference's answer for it (``nms``
    returning ``class_spec_nms(boxes, scores, zeros, t)``).  Those stay the
    submission's own while ``function`` is checked."""
    reaches = reference_reaches(assignment)
    return [n for n in all_names(assignment)
            if n not in CLASSES and n != function and function not in reaches.get(n, ())]


#: Largest work an oracle call may ask of the grader's process (product of the two
#: largest leading dimensions of its tensor arguments, e.g. an IoU matrix's size).
ORACLE_WORK_LIMIT = 5e7
ORACLE_ELEMENT_LIMIT = 2e7


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def oracle_handler(name: str, args: list, kwargs: dict):
    """Answer a sandboxed call of ``name`` with the reference (bounded work: the
    arguments come from untrusted code and the answer is computed here)."""
    tensors = list(_tensors([args, kwargs]))
    if sum(t.numel() for t in tensors) > ORACLE_ELEMENT_LIMIT:
        raise ValueError("arguments too large")
    leading = sorted((t.shape[0] if t.dim() else 1 for t in tensors), reverse=True)[:2] + [1, 1]
    if leading[0] * leading[1] > ORACLE_WORK_LIMIT:
        raise ValueError("arguments too large")
    return reference(name)(*args, **kwargs)


# ---------------------------------------------------------------------------
# Input generators (seeded, in the grader's process)
# ---------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_boxes(g: torch.Generator, n: int, width: float = 224.0, height: float | None = None,
               min_size: float = 4.0, max_frac: float = 0.7, dtype=torch.float32) -> torch.Tensor:
    """``(n, 4)`` XYXY boxes inside ``width x height``."""
    height = width if height is None else height
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height], dtype=torch.float64) * max_frac + min_size
    wh = torch.minimum(wh, torch.tensor([width, height], dtype=torch.float64))
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * (torch.tensor([width, height], dtype=torch.float64) - wh)
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def rand_gt(g: torch.Generator, batch: int, real: list[int], total: int, width: float = 224.0,
            height: float | None = None, num_classes: int = 20, dtype=torch.float32) -> torch.Tensor:
    """``(batch, total, 5)`` padded ground truth with ``real[b]`` objects in image ``b``."""
    gt = torch.full((batch, total, 5), -1.0, dtype=dtype)
    for b in range(batch):
        n = real[b]
        if n:
            gt[b, :n, :4] = rand_boxes(g, n, width, height, min_size=8.0, dtype=dtype)
            gt[b, :n, 4] = torch.randint(0, num_classes, (n,), generator=g).to(dtype)
    return gt


def level_shapes(batch: int, channels: int, height: int, width: int, strides=None) -> dict:
    strides = strides or {"p3": 8, "p4": 16, "p5": 32}
    return {lvl: (batch, channels, math.ceil(height / s), math.ceil(width / s)) for lvl, s in strides.items()}


# ---------------------------------------------------------------------------
# Common judges
# ---------------------------------------------------------------------------


def structure_verdict(expected_convs: int | None, structure: list, kernel: tuple | None) -> Verdict:
    """The layer layout, named layer by layer (checked before the initialisation: a wrong
    kernel makes every later message about statistics beside the point)."""
    if expected_convs is None:
        return Verdict(True)
    convs = [r for r in structure if r["type"] == "Conv2d" and (kernel is None or tuple(r["kernel"]) == kernel)]
    if len(convs) == expected_convs:
        return Verdict(True)
    size = "x".join(map(str, kernel or ()))
    others = [r for r in structure if r["type"] == "Conv2d" and kernel is not None and tuple(r["kernel"]) != kernel]
    listed = ", ".join(f"{r['name']} {'x'.join(map(str, r['kernel']))} conv of weight {tuple(r['weight'])}" for r in others[:4])
    return Verdict(False, f"expected {expected_convs} {size} convs in total, found {len(convs)}"
                          + (f"; other convs: {listed}" if listed else "")
                          + (f" (every stem conv is {size} with padding 1)" if size == "3x3" else ""))


def init_verdict(state: dict, special_bias: dict[str, float], expected_convs: int | None, structure: list,
                 kernel: tuple | None = (3, 3)) -> Verdict:
    """A head's initialisation: the layer layout first (:func:`structure_verdict`), then the biases named
    in ``special_bias`` at their values, every other bias 0 and every large weight from N(0, 0.01)."""
    layout = structure_verdict(expected_convs, structure, kernel)
    if not layout.passed:
        return layout
    for key, value in special_bias.items():
        if key not in state:
            return Verdict(False, f"no parameter {key!r} (keep the attribute names of the skeleton)")
        if not torch.allclose(state[key].double(), torch.full_like(state[key].double(), value), atol=1e-4):
            return Verdict(False, f"{key} must be initialised to {value:.4f}" + (" (-log(99): prior probability 0.01)" if value < 0 else ""))
    for key, value in state.items():
        if key.endswith(".bias") and key not in special_bias and value.numel() and float(value.abs().max()) > 1e-6:
            return Verdict(False, f"{key}: biases must be initialised to 0")
        if key.endswith(".weight") and value.dim() in (2, 4) and value.numel() >= 256:
            std = float(value.double().std())
            tol = 0.003 if value.numel() >= 1000 else 0.004
            if abs(std - 0.01) > tol or abs(float(value.double().mean())) > 0.003:
                return Verdict(False, f"{key}: weights must be initialised from N(0, 0.01) (found std {std:.4f})")
    return Verdict(True)


def call_spec(name: str, *args, seed: int = 0, device: str = "cpu", **kwargs) -> dict:
    return {"op": "call", "name": name, "args": list(args), "kwargs": kwargs, "seed": seed, "device": device}


def first(values: list) -> dict:
    return values[0]


def output_of(value: dict):
    return value["output"]


def mutation_check(name: str, spec: dict, arg_names: list[str]) -> Job:
    """A job whose verdict is whether the call left its inputs unchanged."""
    from grader.compare import check_not_mutated

    before = {"args": copy.deepcopy(spec["args"]), "kwargs": copy.deepcopy(spec.get("kwargs", {}))}

    def judge(values):
        return check_not_mutated(before, values[0].get("args_after"), arg_names)

    return Job([spec], judge)


__all__ = ["Check", "Job", "run_reference", "oracle_names", "oracle_handler", "DEPENDENCIES"]


# ---------------------------------------------------------------------------
# Check builders
# ---------------------------------------------------------------------------

Diagnose = Callable[[object, object], "str | None"]


def judge_output(ref_value: dict, *, atol: float = 1e-5, rtol: float = 1e-4, check_dtype: bool = True,
                 device: str = "cpu", diagnose: Diagnose | None = None, hint: str = "", what: str = "output") -> Judge:
    """A judge comparing ``values[0]["output"]`` with the reference's output."""
    from grader.compare import compare_tree, devices_ok

    def judge(values):
        value = values[0]
        out = value["output"]
        verdict = compare_tree(out, ref_value["output"], what=what, atol=atol, rtol=rtol, check_dtype=check_dtype)
        if not verdict.passed:
            if diagnose is not None:
                try:
                    message = diagnose(out, ref_value["output"])
                except Exception:  # noqa: BLE001 - diagnoses are best effort
                    message = None
                if message:
                    return Verdict(False, message, rel_error=verdict.rel_error)
            if hint and "values differ" in verdict.message:
                verdict.message += f"; {hint}"
            return verdict
        on_device = devices_ok(value.get("devices", []), device)
        return verdict if on_device.passed else on_device

    return judge


def call_check(assignment: str, check_id: str, function: str, title: str, build: Callable[[], dict], *,
               atol: float = 1e-5, rtol: float = 1e-4, check_dtype: bool = True, diagnose: Diagnose | None = None,
               hint: str = "", cuda: bool = False, visible: bool = False, wall_seconds: float | None = None) -> Check:
    """A hidden check: call ``function`` on the spec ``build()`` returns and compare with the reference."""

    def make():
        spec = build()
        if cuda:
            spec["device"] = "cuda"
        ref = run_reference(assignment, spec)
        judge = judge_output(ref, atol=atol, rtol=rtol, check_dtype=check_dtype, device=spec.get("device", "cpu"),
                             diagnose=diagnose, hint=hint)
        return Job([spec], judge, wall_seconds=wall_seconds)

    return Check(check_id, function, title, visible, make, cuda=cuda)


def mutation_check_of(check_id: str, function: str, build: Callable[[], dict], arg_names: list[str],
                      title: str | None = None) -> Check:
    """A hidden check that the call leaves every input unchanged."""
    return Check(check_id, function, title or f"{function} does not modify its inputs", False,
                 lambda: mutation_check(function, build(), arg_names))


def close_to(out, candidate, atol: float = 1e-4, rtol: float = 1e-4) -> bool:
    from grader.compare import close

    return close(out, candidate, atol=atol, rtol=rtol)
