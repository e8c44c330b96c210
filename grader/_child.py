"""The grader's harness inside the sandbox: a zygote process and the procedures
that exercise a submission.

This file is deliberately self-contained (standard library + torch +
torchvision only, never :mod:`grader` or :mod:`solutions`): the sandbox runs
it with ``python -I -c <this file's text>``, and :mod:`grader.sanity` imports
it in-process to run the visible checks in a student's notebook.  It holds no
secret: reading it tells a student nothing about the reference.

Processes
---------
The grader (parent, trusted) starts one *zygote* per submission.  The zygote
imports torch once (3-5 s) and then, for every check, forks a *child* that

1. puts itself in its own process group, reads ``/dev/null`` as stdin and
   sends stdout/stderr to a pipe the zygote reads (with a byte cap),
2. applies resource limits (address space, CPU seconds, file size, no core),
3. executes the submission's source in a fresh namespace with an import hook
   that refuses ``solutions`` and ``grader``,
4. runs one procedure (``call``, ``module``, ``fpn_permutations``, ``overfit``,
   ``predict``) and writes its result, as ``torch.save`` bytes of plain tensors
   and containers, to a pipe.

The zygote enforces the wall-clock limit (kills the child's process group),
caps output and result sizes and reports to the parent.  The parent decodes
results with ``torch.load(weights_only=True)`` and compares them with the
reference in its own process.

Framing on every pipe: an 8-byte big-endian length, then the payload.
Zygote -> parent: a JSON header frame, then (for ``done``/``oracle``) one
payload frame.  Parent -> zygote: a ``torch.save`` frame holding the job or
an oracle reply.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import signal
import struct
import sys
import time
import traceback

FRAME = struct.Struct(">Q")
#: Largest frame either side accepts (a full FCOS state dict is ~25 MB).
MAX_FRAME = 1 << 30
BLOCKED_PACKAGES = ("solutions", "grader")
SUBMISSION_FILE = "<submission>"


# ---------------------------------------------------------------------------
# Framing and (de)serialisation
# ---------------------------------------------------------------------------


def write_frame(fd: int, data: bytes) -> None:
    view = memoryview(FRAME.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = MAX_FRAME) -> bytes:
    (length,) = FRAME.unpack(read_exact(fd, FRAME.size))
    if length > limit:
        raise ValueError(f"frame of {length} bytes exceeds the limit of {limit}")
    return read_exact(fd, length)


def dumps(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def loads(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


class BadReturn(TypeError):
    """A submission returned something that is not plain data."""


def to_plain(obj, devices: list | None = None, _depth: int = 0):
    """Copy ``obj`` into plain tensors (on the CPU) and containers.

    Device types of the tensors are appended to ``devices`` in traversal
    order.  Named tuples become tuples; anything that is not a tensor, number,
    string, None, dtype, device or a list/tuple/dict of those raises
    :class:`BadReturn`.
    """
    import torch

    if _depth > 20:
        raise BadReturn("the returned value is nested too deeply")
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise BadReturn(f"a returned tensor has layout {obj.layout}; return dense tensors")
        tensor = obj.detach()
        if type(tensor) is not torch.Tensor:
            tensor = tensor.as_subclass(torch.Tensor)
        if devices is not None:
            devices.append(tensor.device.type)
        try:
            return tensor.to("cpu", copy=True).contiguous()
        except Exception as error:  # noqa: BLE001 - e.g. a tensor on the meta device
            raise BadReturn(f"a returned tensor on device {tensor.device.type!r} could not be read back "
                            f"({type(error).__name__}); return tensors on the input's device") from None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (torch.dtype, torch.device)):
        return obj
    if isinstance(obj, torch.Size):
        return tuple(int(v) for v in obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise BadReturn(f"a returned dict has a key of type {type(key).__name__}")
            out[key] = to_plain(value, devices, _depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, devices, _depth + 1) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    raise BadReturn(f"returned an object of type {type(obj).__name__}; expected tensors, numbers or lists/tuples/dicts of them")


def to_device(obj, device):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    return obj


def clone_data(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clone_data(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clone_data(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------
# Loading a submission
# ---------------------------------------------------------------------------


class ImportBlocker:
    """``sys.meta_path`` hook refusing :data:`BLOCKED_PACKAGES` (records attempts)."""

    def __init__(self):
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED_PACKAGES:
            self.attempts.append(fullname)
            raise ImportError(f"importing {fullname!r} is not allowed in a submission")
        return None

    def find_module(self, fullname, path=None):  # pragma: no cover - legacy protocol
        return None


class MissingName(NameError):
    pass


def load_submission(source: str, name: str = "submission", warnings: list | None = None) -> dict:
    """Execute ``source`` as a fresh module and return its namespace.

    Top-level statements run one by one: one that raises an ``Exception``
    (an import of a module the sandbox lacks, a bad constant) is skipped and
    noted in ``warnings``, so the other definitions are still graded.
    ``SystemExit``/``KeyboardInterrupt`` and syntax errors stop the load.
    """
    import ast
    import linecache
    import types

    module = types.ModuleType(name)
    module.__file__ = SUBMISSION_FILE
    sys.modules[name] = module
    linecache.cache[SUBMISSION_FILE] = (len(source), None, source.splitlines(True), SUBMISSION_FILE)
    tree = ast.parse(source, SUBMISSION_FILE)
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    flags = 0
    for node in future:
        for alias in node.names:
            import __future__

            feature = getattr(__future__, alias.name, None)
            flags |= getattr(feature, "compiler_flag", 0)
    for node in tree.body:
        code = compile(ast.Module(body=[node], type_ignores=[]), SUBMISSION_FILE, "exec", flags=flags, dont_inherit=True)
        try:
            exec(code, module.__dict__)
        except Exception as error:  # noqa: BLE001 - keep the rest of the submission
            if warnings is None:
                raise
            first = (str(error).splitlines() or [""])[0][:200]
            warnings.append(f"line {node.lineno}: {type(error).__name__}: {first} (statement skipped)")
    return module.__dict__


def submission_traceback(error: BaseException, limit: int = 12) -> str:
    """The traceback of ``error`` restricted to frames of the submission."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == SUBMISSION_FILE]
    lines = []
    for frame in frames[-limit:]:
        lines.append(f'  line {frame.lineno}, in {frame.name}: {(frame.line or "").strip()}')
    if isinstance(error, SyntaxError) and error.filename == SUBMISSION_FILE:
        lines.append(f"  line {error.lineno}: {(error.text or '').strip()}")
    return "\n".join(lines)


def describe_error(error: BaseException) -> dict:
    if isinstance(error, SystemExit):
        return {"error_type": "SystemExit", "error": f"your code called sys.exit({error.code!r}) (or raised SystemExit)",
                "traceback": submission_traceback(error)}
    if isinstance(error, KeyboardInterrupt):
        return {"error_type": "KeyboardInterrupt", "error": "KeyboardInterrupt raised", "traceback": submission_traceback(error)}
    text = str(error)
    if len(text) > 2000:
        text = text[:2000] + " ..."
    return {"error_type": type(error).__name__, "error": text, "traceback": submission_traceback(error)}


# ---------------------------------------------------------------------------
# Oracle: functions answered by the grader (dependencies of the function under test)
# ---------------------------------------------------------------------------


class Oracle:
    def __init__(self, request_fd: int, reply_fd: int):
        self.request_fd, self.reply_fd = request_fd, reply_fd

    def proxy(self, name: str):
        oracle = self

        def call(*args, **kwargs):
            import torch

            devices: list = []
            payload = to_plain({"name": name, "args": list(args), "kwargs": kwargs}, devices)
            write_frame(oracle.request_fd, dumps(payload))
            reply = loads(read_frame(oracle.reply_fd))
            if not reply.get("ok"):
                raise RuntimeError(f"{name} (provided by the grader) could not handle your call: {reply.get('error')}")
            device = next((d for d in devices if d != "cpu"), "cpu")
            value = reply["value"]
            return to_device(value, torch.device(device)) if device != "cpu" else value

        call.__name__ = name
        call.__qualname__ = name
        call.__doc__ = f"{name}, provided by the grader while another function is checked."
        return call


# ---------------------------------------------------------------------------
# Harness modules: stand-ins with fixed outputs, so that one class is checked
# without its collaborators
# ---------------------------------------------------------------------------


def _harness_classes():
    import torch
    from torch import nn

    class FixedFeatures(nn.Module):
        """A backbone that returns fixed FPN features whatever the images."""

        def __init__(self, feats: dict, strides: dict, out_channels: int):
            super().__init__()
            self._feats = feats
            self._strides = dict(strides)
            self.out_channels = out_channels
            self.anchor = nn.Parameter(torch.zeros(()))  # so that .parameters() is not empty

        @property
        def fpn_strides(self):
            return dict(self._strides)

        def forward(self, images):
            return {k: v.clone().to(images.device) + 0 * self.anchor for k, v in self._feats.items()}

    class FixedOutputs(nn.Module):
        """A prediction network that returns fixed outputs whatever its input."""

        def __init__(self, outputs):
            super().__init__()
            self._outputs = outputs
            self.anchor = nn.Parameter(torch.zeros(()))

        def forward(self, *args, **kwargs):
            device = self.anchor.device
            return to_device(clone_data(self._outputs), device)

    class FixedRPN(nn.Module):
        """An RPN that returns fixed proposals (and zero losses)."""

        def __init__(self, proposals: list, scores: list):
            super().__init__()
            self._proposals, self._scores = proposals, scores
            self.anchor = nn.Parameter(torch.zeros(()))

        def forward(self, feats_per_fpn_level, strides_per_fpn_level, gt_boxes=None, image_size=None):
            device = self.anchor.device
            out = {"proposals": [p.clone().to(device) for p in self._proposals],
                   "proposal_scores": [s.clone().to(device) for s in self._scores]}
            if gt_boxes is not None:
                zero = self.anchor * 0
                out.update({"loss_rpn_obj": zero, "loss_rpn_box": zero, "rpn_num_fg": zero.detach()})
            return out

    class FixedClassifier(nn.Module):
        """RoI classifier ``logits = flatten(x) @ weight.T + bias`` with given weights."""

        def __init__(self, weight, bias):
            super().__init__()
            self.weight = nn.Parameter(weight.clone())
            self.bias = nn.Parameter(bias.clone())

        def forward(self, x):
            return torch.nn.functional.linear(x.flatten(1).to(self.weight.dtype), self.weight, self.bias)

    class Stub(nn.Module):
        """Stands in for a collaborator class while another class is checked
        (it is replaced by a fixed module right after construction)."""

        def __init__(self, *args, **kwargs):
            super().__init__()
            self.out_channels = kwargs.get("out_channels", args[0] if args and isinstance(args[0], int) else None)
            self.anchor = nn.Parameter(torch.zeros(()))

        @property
        def fpn_strides(self):
            return {"p3": 8, "p4": 16, "p5": 32}

        def forward(self, *args, **kwargs):
            raise RuntimeError("a stand-in module was called: replace it before use")

    return {"fixed_features": FixedFeatures, "fixed_outputs": FixedOutputs,
            "fixed_rpn": FixedRPN, "fixed_classifier": FixedClassifier, "stub": Stub}


def given_backbone_class():
    """RegNetX-400MF + FPN used when the second assignment's submission does not
    define ``DetectorBackboneWithFPN`` (it is the first assignment's, given)."""
    import torch.nn.functional as F
    from torch import nn
    from torchvision import models

    class DetectorBackboneWithFPN(nn.Module):
        def __init__(self, out_channels, weights=None):
            super().__init__()
            self.out_channels = out_channels
            trunk = models.regnet_x_400mf(weights=weights)
            self.stem, out = trunk.stem, trunk.trunk_output
            self.block1, self.block2, self.block3, self.block4 = out.block1, out.block2, out.block3, out.block4
            widths = [[m for m in b.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
                      for b in (self.block2, self.block3, self.block4)]
            self.fpn_params = nn.ModuleDict()
            for width, level in zip(widths, ("p3", "p4", "p5")):
                self.fpn_params[f"lateral_{level}"] = nn.Conv2d(width, out_channels, 1)
                self.fpn_params[f"output_{level}"] = nn.Conv2d(out_channels, out_channels, 3, padding=1)

        @property
        def fpn_strides(self):
            return {"p3": 8, "p4": 16, "p5": 32}

        def forward(self, images):
            c3 = self.block2(self.block1(self.stem(images)))
            c4 = self.block3(c3)
            c5 = self.block4(c4)
            top = {}
            lat = self.fpn_params["lateral_p5"](c5)
            top["p5"] = lat
            lat = self.fpn_params["lateral_p4"](c4) + F.interpolate(lat, size=c4.shape[-2:], mode="nearest")
            top["p4"] = lat
            lat = self.fpn_params["lateral_p3"](c3) + F.interpolate(lat, size=c3.shape[-2:], mode="nearest")
            top["p3"] = lat
            return {k: self.fpn_params[f"output_{k}"](top[k]) for k in ("p3", "p4", "p5")}

    return DetectorBackboneWithFPN


def materialize(obj, harness, ns=None):
    """Replace marker dicts by live objects.

    ``{"__harness__": kind, ...}``: a harness module (kwargs follow);
    ``{"__class__": name, "args": [...], "kwargs": {...}}``: an instance of the
    submission's class ``name``; ``{"__randn__": shape, "seed": s}``: a seeded
    standard-normal float32 tensor (keeps fixture files small).
    """
    if isinstance(obj, dict):
        if "__harness__" in obj:
            kwargs = {k: materialize(v, harness, ns) for k, v in obj.items() if k != "__harness__"}
            return harness[obj["__harness__"]](**kwargs)
        if "__class__" in obj:
            cls = _lookup(ns or {}, obj["__class__"])
            return cls(*materialize(obj.get("args", []), harness, ns), **materialize(obj.get("kwargs", {}), harness, ns))
        if "__randn__" in obj:
            import torch

            generator = torch.Generator().manual_seed(int(obj.get("seed", 0)))
            return torch.randn(*obj["__randn__"], generator=generator, dtype=obj.get("dtype", torch.float32))
        return {k: materialize(v, harness, ns) for k, v in obj.items()}
    if isinstance(obj, list):
        return [materialize(v, harness, ns) for v in obj]
    if isinstance(obj, tuple):
        return tuple(materialize(v, harness, ns) for v in obj)
    return obj


# ---------------------------------------------------------------------------
# Procedures (each returns plain data)
# ---------------------------------------------------------------------------


def _lookup(ns: dict, name: str):
    if name not in ns:
        raise MissingName(f"{name!r} is not defined in the submission")
    return ns[name]


def _seed(seed):
    import torch

    if seed is not None:
        torch.manual_seed(int(seed))


def proc_call(ns, spec, devices):
    """Call a function on the given arguments; return its output and the arguments afterwards."""
    import torch

    fn = _lookup(ns, spec["name"])
    device = torch.device(spec.get("device", "cpu"))
    args = to_device(materialize(spec.get("args", []), {}, ns), device)
    kwargs = to_device(materialize(spec.get("kwargs", {}), {}, ns), device)
    _seed(spec.get("seed", 0))
    output = fn(*args, **kwargs)
    out_devices: list = []
    result = {"output": to_plain(output, out_devices), "devices": out_devices}
    if spec.get("return_args", True):
        result["args_after"] = to_plain({"args": list(args), "kwargs": kwargs})
    devices.extend(out_devices)
    return result


def _structure(module):
    from torch import nn

    rows = []
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            rows.append({"name": name, "type": type(sub).__name__, "weight": tuple(sub.weight.shape),
                         "bias": tuple(sub.bias.shape) if sub.bias is not None else None,
                         "kernel": tuple(getattr(sub, "kernel_size", ())), "padding": str(getattr(sub, "padding", ""))})
    return rows


def proc_module(ns, spec, devices):
    """Construct a class, optionally load weights and swap collaborators, run method calls."""
    import torch

    harness = _harness_classes()
    for name in spec.get("stub_classes", []):
        ns[name] = harness["stub"]
    cls = _lookup(ns, spec["name"])
    device = torch.device(spec.get("device", "cpu"))
    _seed(spec.get("seed", 0))
    ctor_args = materialize(spec.get("ctor_args", []), harness, ns)
    ctor_kwargs = materialize(spec.get("ctor_kwargs", {}), harness, ns)
    model = cls(*ctor_args, **ctor_kwargs)
    if not isinstance(model, torch.nn.Module):
        raise BadReturn(f"{spec['name']}(...) is not an nn.Module")
    result = {}
    if "structure" in spec.get("return", ()):
        result["structure"] = _structure(model)
    if "init_state_dict" in spec.get("return", ()):
        result["init_state_dict"] = to_plain(dict(model.state_dict()))
    if spec.get("state_dict") is not None:
        try:
            model.load_state_dict(spec["state_dict"], strict=spec.get("strict", True))
            result["load_error"] = None
        except Exception as error:  # architecture differs: report, then go on with own weights
            result["load_error"] = str(error)[:1500]
    for attr, replacement in spec.get("replace", {}).items():
        setattr(model, attr, materialize(replacement, harness, ns))
    model.to(device)
    outputs = []
    for call in spec.get("calls", []):
        model.train(call.get("train", False))
        _seed(call.get("seed", 0))
        args = to_device(materialize(call.get("args", []), harness, ns), device)
        kwargs = to_device(materialize(call.get("kwargs", {}), harness, ns), device)
        method = getattr(model, call.get("method", "forward")) if call.get("method", "forward") != "forward" else model
        if call.get("no_grad", False):
            with torch.no_grad():
                out = method(*args, **kwargs)
        else:
            out = method(*args, **kwargs)
        call_devices: list = []
        outputs.append(to_plain(out, call_devices))
        devices.extend(call_devices)
        for name in call.get("return_buffers", []):
            value = getattr(model, name, None)
            result.setdefault("buffers", []).append(to_plain(value) if isinstance(value, torch.Tensor) else None)
    result["outputs"] = outputs
    result["devices"] = list(devices)
    if "state_dict" in spec.get("return", ()):
        result["state_dict"] = to_plain(dict(model.state_dict()))
    return result


def proc_fpn_permutations(ns, spec, devices):
    """Load the trunk and the FPN convs of given weights into the student's backbone.

    The FPN's lateral convs are identified by their input channels; the three
    3x3 output convs cannot be told apart by shape, so every assignment of the
    given output weights to them is tried (6 forward passes).
    """
    import itertools

    import torch
    from torch import nn

    cls = _lookup(ns, "DetectorBackboneWithFPN")
    _seed(spec.get("seed", 0))
    model = cls(spec["out_channels"], weights=None)
    state = spec["state_dict"]
    trunk = {k: v for k, v in state.items() if not k.startswith("fpn_params.")}
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    missing = [k for k in missing if not k.startswith("fpn_params.")]
    result = {"structure": _structure(getattr(model, "fpn_params", nn.ModuleDict())), "outputs": [], "trunk_missing": missing[:5]}
    if missing or unexpected:
        return result
    convs = [m for m in model.fpn_params.modules() if isinstance(m, nn.Conv2d)]
    laterals = [m for m in convs if m.kernel_size == (1, 1)]
    outputs = [m for m in convs if m.kernel_size == (3, 3)]
    ref_lateral = {state[f"fpn_params.lateral_{p}.weight"].shape[1]: p for p in ("p3", "p4", "p5")}
    if len(laterals) != 3 or len(outputs) != 3 or len(convs) != 6:
        return result
    try:
        with torch.no_grad():
            for conv in laterals:
                level = ref_lateral[conv.in_channels]
                conv.weight.copy_(state[f"fpn_params.lateral_{level}.weight"])
                if conv.bias is not None:
                    conv.bias.copy_(state[f"fpn_params.lateral_{level}.bias"])
    except (KeyError, RuntimeError):
        return result
    images = materialize(spec["images"], {}, ns)
    model.eval()
    for perm in itertools.permutations(("p3", "p4", "p5")):
        try:
            with torch.no_grad():
                for conv, level in zip(outputs, perm):
                    conv.weight.copy_(state[f"fpn_params.output_{level}.weight"])
                    if conv.bias is not None:
                        conv.bias.copy_(state[f"fpn_params.output_{level}.bias"])
                out = model(images)
        except RuntimeError:
            return result
        result["outputs"].append(to_plain(out))
    return result


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(images_uint8, device):
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (images_uint8.to(device).float() / 255.0 - mean) / std


def build_detector(ns, spec):
    """The student's detector built from their own classes (``spec["model"]``)."""
    kind = spec["model"]
    cfg = spec.get("config", {})
    if kind == "FCOS":
        return _lookup(ns, "FCOS")(cfg.get("num_classes", 20), cfg["fpn_channels"], list(cfg["stem_channels"]), weights=None)
    backbone = _lookup(ns, "DetectorBackboneWithFPN")(cfg["fpn_channels"], weights=None)
    rpn = _lookup(ns, "RPN")(cfg["fpn_channels"], list(cfg["rpn_stem_channels"]), **cfg.get("rpn_kwargs", {}))
    return _lookup(ns, "FasterRCNN")(backbone, rpn, list(cfg["stem_channels"]), num_classes=cfg.get("num_classes", 20),
                                     batch_size_per_image=cfg.get("batch_size_per_image", 32))


def proc_overfit(ns, spec, devices):
    """Train the student's detector on a fixed small set; return the loss history.

    Stops early once the mean total loss of the last ``window`` iterations is
    below ``stop_below`` (the grader re-checks the history)."""
    import torch

    device = torch.device(spec.get("device", "cpu"))
    _seed(spec.get("seed", 0))
    if spec.get("given_backbone"):
        # The student's backbone failed its own checks: the harness's stands in
        # (the grader says so), so that one bug does not also cost the overfit test.
        ns["DetectorBackboneWithFPN"] = given_backbone_class()
    model = build_detector(ns, spec).to(device)
    frozen = []
    if spec.get("freeze_trunk"):
        # The RegNet trunk (given code: backbone.stem, backbone.block1..4) stays at
        # its random initialisation, in eval mode: the overfit test is about the
        # student's FPN, head, targets and losses, and a frozen trunk makes it
        # several times cheaper on a CPU.
        backbone = getattr(model, "backbone", None)
        for name in ("stem", "block1", "block2", "block3", "block4"):
            part = getattr(backbone, name, None)
            if isinstance(part, torch.nn.Module):
                part.requires_grad_(False)
                frozen.append(part)
    if spec.get("normalizer") is not None and isinstance(getattr(model, "normalizer", None), torch.Tensor):
        # FCOS divides its losses by a running average of positives per image
        # that starts at 150; starting it at this data's value removes the
        # early rise of the curve that is only that average settling.
        with torch.no_grad():
            model.normalizer.fill_(float(spec["normalizer"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.9), weight_decay=spec.get("weight_decay", 1e-4))
    images, gt = spec["images"], spec["gt_boxes"]
    batch, iters = spec["batch_size"], spec["iters"]
    window, stop_below = spec.get("window", 10), spec.get("stop_below")
    generator = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    order = torch.randperm(len(images), generator=generator)
    history: dict[str, list] = {"total": []}
    start = time.perf_counter()
    position = 0
    model.train()
    for iteration in range(iters):
        for part in frozen:
            part.eval()
        if position + batch > len(order):
            order, position = torch.randperm(len(images), generator=generator), 0
        idx = order[position:position + batch]
        position += batch
        losses = model(_normalize(images[idx], device), gt[idx].to(device))
        if not isinstance(losses, dict):
            raise BadReturn("the model's forward in training mode must return a dict of losses")
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        if not isinstance(total, torch.Tensor):
            raise BadReturn("the model returned no 'loss_*' tensors")
        value = float(total.detach())
        history["total"].append(value)
        for k, v in losses.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                history.setdefault(k, []).append(float(v.detach()))
        if not math.isfinite(value):
            break
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        recent = history["total"][-window:]
        if stop_below is not None and len(recent) == window and sum(recent) / window < stop_below:
            break
    # The trained weights go back to the grader, which judges them itself (the
    # history above is only shown to the student: it is the student's own loss).
    model.eval()
    return {"history": history, "seconds": time.perf_counter() - start, "iterations": len(history["total"]),
            "state_dict": to_plain(dict(model.state_dict()))}


def proc_predict(ns, spec, devices):
    """Detections of the student's detector with given weights on given images."""
    import torch

    device = torch.device(spec.get("device", "cpu"))
    model = build_detector(ns, spec)
    model.load_state_dict(spec["state_dict"])
    model.to(device).eval()
    detections = []
    images = spec["images"]
    batch = spec.get("batch_size", 16)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            out = model.inference(_normalize(images[start:start + batch], device),
                                  score_thresh=spec["score_thresh"], nms_thresh=spec["nms_thresh"])
            for det in out:
                boxes, scores, classes = det[0], det[1], det[2]
                detections.append((to_plain(boxes), to_plain(scores), to_plain(classes)))
    return {"detections": detections}


def proc_train(ns, spec, devices):
    """Train the student's detector on the dataset in ``spec["voc_dir"]`` (bound
    read-only into the sandbox) with ``spec["train_config"]``; return only its
    weights (the grader evaluates them itself) and how long it took.

    The same code on CPU and GPU: images are cached as uint8 on ``device`` and
    normalised there, as the main job does."""
    import torch
    from data_utils.engine import TrainConfig, train_detector
    from data_utils.loaders import build_loader
    from data_utils.voc import VOCDetection

    device = torch.device(spec.get("device", "cuda"))
    seed = int(spec.get("seed", 0))
    _seed(seed)
    model = build_detector(ns, spec)
    if spec.get("head_init") == "pytorch":
        # The from-scratch recipe of the embedded presets (data_utils.head_init).
        from data_utils.head_init import reinit_head_stems

        reinit_head_stems(model)
    dataset = VOCDetection(spec["voc_dir"], spec.get("split", "train"), train=True)
    # The uint8 cache file goes to the sandbox's scratch folder (the dataset is read-only).
    from pathlib import Path

    from data_utils.cache import CachedVOC

    cached = CachedVOC(dataset, cache_path=Path.cwd() / "train_cache.pt", device=device, progress=False)
    loader = build_loader(cached, int(spec["batch_size"]), seed=seed, uint8=True)
    config = TrainConfig(**spec["train_config"])
    start = time.perf_counter()
    train_detector(model, loader, config, device=str(device), progress=False)
    model.eval()
    return {"state_dict": to_plain(dict(model.state_dict())), "seconds": time.perf_counter() - start}


def proc_load(ns, spec, devices):
    """Only load the submission (catches load-time failures once); return the names it defines."""
    return {"names": sorted(k for k in ns if not k.startswith("__"))}


PROCEDURES = {
    "load": proc_load,
    "call": proc_call,
    "module": proc_module,
    "fpn_permutations": proc_fpn_permutations,
    "overfit": proc_overfit,
    "predict": proc_predict,
    "train": proc_train,
}


def run_procedure(ns: dict, spec: dict) -> dict:
    """Run ``spec`` on a namespace; returns ``{"ok": True, "value": ...}`` or an error record."""
    devices: list = []
    try:
        value = PROCEDURES[spec["op"]](ns, spec, devices)
        return {"ok": True, "value": value}
    except MissingName as error:
        return {"ok": False, "error_type": "MissingName", "error": str(error), "traceback": ""}
    except BadReturn as error:
        return {"ok": False, "error_type": "BadReturn", "error": str(error), "traceback": submission_traceback(error)}
    except BaseException as error:  # noqa: BLE001 - student code can raise anything, SystemExit included
        return {"ok": False, **describe_error(error)}


# ---------------------------------------------------------------------------
# The child: one job, in a forked process
# ---------------------------------------------------------------------------


def _apply_limits(limits: dict, baseline_vm: int) -> None:
    import resource

    def setlimit(which, value):
        try:
            soft, hard = resource.getrlimit(which)
            value = int(value)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))
        except (ValueError, OSError):
            pass

    setlimit(resource.RLIMIT_CORE, 0)
    if limits.get("memory_mb"):
        setlimit(resource.RLIMIT_AS, baseline_vm + int(limits["memory_mb"]) * (1 << 20))
    if limits.get("cpu_seconds"):
        setlimit(resource.RLIMIT_CPU, math.ceil(limits["cpu_seconds"]))
    if limits.get("file_bytes") is not None:
        setlimit(resource.RLIMIT_FSIZE, limits["file_bytes"])
    if limits.get("nproc"):
        setlimit(resource.RLIMIT_NPROC, limits["nproc"])


def child_main(job: dict, result_fd: int, oracle_fds, baseline_vm: int) -> None:
    """Body of the forked child; never returns."""
    status = 0
    try:
        os.setpgid(0, 0)
        _apply_limits(job.get("limits", {}), baseline_vm)
        workdir = job.get("workdir")
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        if job.get("lib_dir"):
            sys.path.insert(0, job["lib_dir"])
            for name in [n for n in sys.modules if n == "data_utils" or n.startswith("data_utils.")]:
                del sys.modules[name]
        blocker = ImportBlocker()
        sys.meta_path.insert(0, blocker)
        for name in list(sys.modules):
            if name.split(".")[0] in BLOCKED_PACKAGES:
                del sys.modules[name]
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        import torch

        torch.set_num_threads(int(job.get("threads", 1)))
        load_warnings: list = []
        try:
            ns = load_submission(job["source"], warnings=load_warnings)
            # Imports refused while loading (top level) gained nothing; only
            # attempts made while the checked code runs count against it.
            del blocker.attempts[:]
        except BaseException as error:  # noqa: BLE001
            record = {"ok": False, "stage": "load", **describe_error(error)}
        else:
            oracle = Oracle(*oracle_fds)
            for name in job.get("oracle", []):
                ns[name] = oracle.proxy(name)
            for name in job.get("given_classes", []):
                if name == "DetectorBackboneWithFPN" and name not in ns:
                    ns[name] = given_backbone_class()
            record = run_procedure(ns, job["spec"])
            if job["spec"].get("op") == "load" and record.get("ok"):
                record["value"]["warnings"] = load_warnings
        record["blocked_imports"] = list(blocker.attempts)
        record["imported_blocked"] = sorted({n.split(".")[0] for n in sys.modules
                                             if n.split(".")[0] in BLOCKED_PACKAGES and sys.modules[n] is not None})
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        try:
            payload = dumps(record)
        except BaseException as error:  # noqa: BLE001
            payload = dumps({"ok": False, "error_type": "BadReturn", "error": f"result could not be serialised: {error}"})
        write_frame(result_fd, payload)
    except BaseException:  # noqa: BLE001
        status = 70
    os._exit(status)


# ---------------------------------------------------------------------------
# The zygote
# ---------------------------------------------------------------------------


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _send_header(fd: int, header: dict, payload: bytes | None = None) -> None:
    write_frame(fd, json.dumps(header).encode())
    if payload is not None:
        write_frame(fd, payload)


class _FrameBuffer:
    """Accumulates bytes from a non-blocking pipe and yields complete frames."""

    def __init__(self, limit: int):
        self.data = bytearray()
        self.limit = limit
        self.overflow = False

    def feed(self, chunk: bytes):
        self.data += chunk
        frames = []
        while len(self.data) >= FRAME.size:
            (length,) = FRAME.unpack(self.data[:FRAME.size])
            if length > self.limit:
                self.overflow = True
                self.data.clear()
                break
            if len(self.data) < FRAME.size + length:
                break
            frames.append(bytes(self.data[FRAME.size:FRAME.size + length]))
            del self.data[:FRAME.size + length]
        return frames


def run_job(job: dict, ctl_in: int, ctl_out: int, baseline_vm: int, counter: int) -> None:
    limits = job.get("limits", {})
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    orq_r, orq_w = os.pipe()  # child -> zygote oracle requests
    orp_r, orp_w = os.pipe()  # zygote -> child oracle replies
    if job.get("workdir") is None and job.get("scratch"):
        job["workdir"] = os.path.join(job["scratch"], f"job-{counter}")
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (out_r, res_r, orq_r, orp_w, ctl_in, ctl_out):
                os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.close(out_w)
        finally:
            child_main(job, res_w, (orq_w, orp_r), baseline_vm)
    for fd in (out_w, res_w, orq_w, orp_r):
        os.close(fd)
    for fd in (out_r, res_r, orq_r):
        os.set_blocking(fd, False)

    wall = float(limits.get("wall_seconds", 60))
    out_cap = int(limits.get("output_bytes", 1 << 16))
    out_hard = int(limits.get("output_hard_bytes", 16 << 20))
    result_cap = int(limits.get("result_bytes", 512 << 20))
    stdout_head = bytearray()
    stdout_total = 0
    result = bytearray()
    oracle_buffer = _FrameBuffer(256 << 20)
    reason = None
    open_fds = {out_r, res_r, orq_r}
    exited, exit_status = False, None
    deadline = started + wall
    oracle_seconds = 0.0
    while True:
        if not exited:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exited, exit_status = True, status
        if exited and res_r not in open_fds:
            break
        if exited:
            # The child is gone; drain what is left without waiting for
            # grandchildren that may hold the pipes open.
            for fd in list(open_fds):
                try:
                    while True:
                        chunk = os.read(fd, 1 << 20)
                        if not chunk:
                            break
                        if fd == res_r:
                            result += chunk
                        elif fd == out_r:
                            stdout_total += len(chunk)
                            if len(stdout_head) < out_cap:
                                stdout_head += chunk[: out_cap - len(stdout_head)]
                except (BlockingIOError, OSError):
                    pass
            break
        now = time.monotonic()
        if now > deadline + oracle_seconds:
            reason = "timeout"
            break
        readable, _, _ = select.select(list(open_fds), [], [], min(0.05, max(0.0, deadline + oracle_seconds - now)))
        for fd in readable:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                open_fds.discard(fd)
                continue
            if fd == out_r:
                stdout_total += len(chunk)
                if len(stdout_head) < out_cap:
                    stdout_head += chunk[: out_cap - len(stdout_head)]
                if stdout_total > out_hard:
                    reason = "output_limit"
            elif fd == res_r:
                result += chunk
                if len(result) > result_cap:
                    reason = "result_limit"
            elif fd == orq_r:
                for frame in oracle_buffer.feed(chunk):
                    asked = time.monotonic()
                    _send_header(ctl_out, {"type": "oracle"}, frame)
                    reply = read_frame(ctl_in)
                    oracle_seconds += time.monotonic() - asked
                    try:
                        write_frame(orp_w, reply)
                    except OSError:
                        pass
                if oracle_buffer.overflow:
                    reason = "oracle_limit"
        if reason:
            break
    if reason or not exited:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _, exit_status = os.waitpid(pid, 0)
    try:
        os.killpg(pid, signal.SIGKILL)  # grandchildren left behind
    except OSError:
        pass
    for fd in (out_r, res_r, orq_r, orp_w):
        try:
            os.close(fd)
        except OSError:
            pass
    payload = None
    if not reason and len(result) >= FRAME.size:
        (length,) = FRAME.unpack(bytes(result[:FRAME.size]))
        if len(result) == FRAME.size + length:
            payload = bytes(result[FRAME.size:])
    header = {
        "type": "done",
        "reason": reason,
        "exit_code": os.WEXITSTATUS(exit_status) if exit_status is not None and os.WIFEXITED(exit_status) else None,
        "signal": os.WTERMSIG(exit_status) if exit_status is not None and os.WIFSIGNALED(exit_status) else None,
        "stdout": stdout_head.decode("utf-8", errors="replace"),
        "stdout_bytes": stdout_total,
        "seconds": time.monotonic() - started,
        "has_result": payload is not None,
    }
    _send_header(ctl_out, header, payload if payload is not None else b"")


def zygote_main(ctl_in: int, ctl_out: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy  # noqa: F401
    import torch
    import torchvision  # noqa: F401
    import torchvision.ops  # noqa: F401

    try:  # notebooks import pyplot; loading it once here saves time in every check
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except Exception:  # noqa: BLE001 - optional
        pass
    torch.set_num_threads(1)
    baseline = _vm_size()
    _send_header(ctl_out, {"type": "ready", "vm_size": baseline, "pid": os.getpid(), "torch": torch.__version__})
    counter = 0
    while True:
        try:
            frame = read_frame(ctl_in)
        except EOFError:
            break
        job = loads(frame)
        counter += 1
        run_job(job, ctl_in, ctl_out, baseline, counter)
    os._exit(0)


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "--zygote":
    fds = sys.argv[2].split(",")
    zygote_main(int(fds[0]), int(fds[1]))
