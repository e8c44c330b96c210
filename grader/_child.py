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


class Unbounded(ValueError):
    """A decoded message is too deep, too large or expands too much through shared references."""


def check_bounded(obj, max_depth: int = 32, max_nodes: int = 1_000_000, max_bytes: int = 2 << 30) -> None:
    """Raise :class:`Unbounded` unless ``obj`` (decoded from untrusted bytes) is a small tree.

    Every container and tensor is counted each time it is reached, so a
    structure sharing references (a 2 KB pickle of a list holding the same
    list twice, 48 levels deep, has 2^48 paths) fails after ``max_nodes``
    steps instead of expanding when the grader walks it; tensors count their
    bytes at every visit.  Iterative: a deep structure cannot overflow the stack.
    """
    import torch

    nodes, nbytes = 0, 0
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise Unbounded(f"more than {max_nodes} elements")
        if depth > max_depth:
            raise Unbounded(f"nested deeper than {max_depth} levels")
        if isinstance(item, torch.Tensor):
            nbytes += item.element_size() * item.numel()
            if nbytes > max_bytes:
                raise Unbounded(f"more than {max_bytes >> 20} MiB of tensors")
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item.keys())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str) and len(item) > max_bytes:
            raise Unbounded("a string too long")


def safe_text(error: BaseException, limit: int = 500) -> str:
    """``str(error)`` truncated to ``limit`` characters; never raises (a hostile ``__str__``)."""
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 - a hostile __str__ can raise anything
        return f"<{type(error).__name__} that cannot be printed>"
    if not isinstance(text, str):
        return ""
    return text if len(text) <= limit else text[:limit] + " ..."


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
        except Exception as error:  # keep the rest of the submission (re-raised when not collecting)
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


def given_classes(sources: dict) -> dict:
    """Classes the harness supplies (the second assignment's given backbone): their source
    comes with the job from the grader (``grader/_given.py``, never shipped to students)."""
    out = {}
    for name, text in (sources or {}).items():
        namespace: dict = {"__name__": "grader_given"}
        exec(compile(text, "<given by the grader>", "exec"), namespace)
        out[name] = namespace[name]
    return out


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
        except Exception as error:  # noqa: BLE001 - architecture differs: report, then go on with own weights
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
    # A backbone of the student's that failed its own checks was replaced by the
    # grader's given one before this procedure ran (``given_sources`` of the job).
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
    for _ in range(iters):
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
    from data_utils.cache import CachedVOC

    # The uint8 images stay in memory, never in a file: the scratch folder is a small tmpfs
    # (VOC's train split is ~0.4 GB, and a file there would hold a second copy in memory).
    # Decoded in this process: worker processes need shared-memory semaphores the sandbox refuses.
    cached = CachedVOC(dataset, device=device, progress=False, num_workers=0, in_memory=True)
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


class ForbiddenCall(RuntimeError):
    pass


def forbid_callables(ns: dict, names: list, function: str) -> None:
    """Make the library callables ``names`` (qualified, e.g. ``torchvision.ops.nms``) raise
    while ``function`` is checked: the notebook forbids them there (grader/forbidden.py
    reads the source; this catches what a static reading misses).  Replaces the
    attributes and every alias of the same objects in torch/torchvision modules and
    in the submission's namespace (this process is one check's fork: nothing is restored)."""
    import importlib

    originals: dict[int, object] = {}
    keep_alive = []  # ids stay unique only while the originals live
    for qualified in names:
        parts = qualified.split(".")
        try:
            owner = importlib.import_module(parts[0])
            for part in parts[1:-1]:
                owner = getattr(owner, part)
            original = getattr(owner, parts[-1])
        except Exception:  # noqa: BLE001 - not in this torchvision version
            continue

        def blocked(*args, _name=qualified, **kwargs):
            raise ForbiddenCall(f"{_name} is not allowed in `{function}` (the notebook asks you to write it yourself)")

        try:
            setattr(owner, parts[-1], blocked)
        except Exception:  # noqa: BLE001 - a read-only attribute: leave it
            continue
        originals.setdefault(id(original), blocked)  # the first (public) name in messages
        keep_alive.append(original)
    if not originals:
        return
    spaces = [ns] + [vars(m) for n, m in list(sys.modules.items())
                     if m is not None and n.split(".")[0] in ("torchvision", "torch") and hasattr(m, "__dict__")]
    for space in spaces:
        for key, value in list(space.items()):
            replacement = originals.get(id(value))
            if replacement is not None and not isinstance(value, (int, str, type(None))):
                try:
                    space[key] = replacement
                except Exception:  # noqa: BLE001 - a read-only namespace: leave it
                    pass


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


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - not Linux, or no libc
        return False


PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38


def drop_privileges(run_as) -> None:
    """Become the unprivileged ``run_as = [uid, gid]`` (all of real/effective/saved ids, no
    supplementary groups, no capabilities), and never gain privileges again (no set-uid
    programs).  Raises ``PermissionError`` if any id is still privileged afterwards."""
    if run_as:
        uid, gid = int(run_as[0]), int(run_as[1])
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
            raise PermissionError("the ids did not change")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if 0 in os.getresuid():
        raise PermissionError("student code would run as root")


def child_main(job: dict, result_fd: int, oracle_fds, baseline_vm: int) -> None:
    """Body of the forked child; never returns."""
    status = 0
    try:
        os.setpgid(0, 0)
        try:
            drop_privileges(job.get("run_as"))
        except OSError as error:
            # Refuse rather than run the submission with the grader's privileges.
            write_frame(result_fd, dumps({"ok": False, "stage": "setup", "error_type": "SandboxRefused",
                                          "error": f"could not drop root privileges ({error}); student code never runs as root"}))
            os._exit(71)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change (which clears it): dies with the zygote
        limits = dict(job.get("limits", {}))
        if not job.get("run_as"):
            limits.pop("nproc", None)  # the grader's own uid: its other processes would count too
        _apply_limits(limits, baseline_vm)
        workdir = job.get("workdir")
        if workdir:
            try:
                os.makedirs(workdir, exist_ok=True)
                os.chdir(workdir)
            except OSError as error:  # the grader's fault (a scratch folder the uid cannot reach)
                write_frame(result_fd, dumps({"ok": False, "stage": "setup", "error_type": "SandboxRefused",
                                              "error": f"the sandbox's scratch folder is not usable: {error}"}))
                os._exit(71)
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
        except BaseException as error:  # noqa: BLE001 - student code can raise anything, SystemExit included
            record = {"ok": False, "stage": "load", **describe_error(error)}
        else:
            oracle = Oracle(*oracle_fds)
            for name in job.get("oracle", []):
                ns[name] = oracle.proxy(name)
            # The parent sends a given class only for names the submission
            # lacks or left as the release's stub: the stub must not win.
            for name, cls in given_classes(job.get("given_sources") or {}).items():
                ns[name] = cls
            forbidden = job["spec"].get("forbidden") or {}
            if forbidden.get("names"):
                forbid_callables(ns, list(forbidden["names"]), str(forbidden.get("function", "")))
            record = run_procedure(ns, job["spec"])
            if job["spec"].get("op") == "load" and record.get("ok"):
                record["value"]["warnings"] = load_warnings
        record["blocked_imports"] = list(blocker.attempts)
        record["imported_blocked"] = sorted({n.split(".")[0] for n in sys.modules
                                             if n.split(".")[0] in BLOCKED_PACKAGES and sys.modules[n] is not None})
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - closed or hostile streams: the result still goes out
            pass
        try:
            payload = dumps(record)
        except BaseException as error:  # noqa: BLE001 - a hostile result object can raise anything
            payload = dumps({"ok": False, "error_type": "BadReturn", "error": f"result could not be serialised: {error}"})
        write_frame(result_fd, payload)
    except BaseException:  # noqa: BLE001 - whatever happened, the child reports and exits
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


def _tree_bytes(folder: str, skip: str | None = None, max_entries: int = 20000) -> int:
    """Disk blocks used below ``folder`` (iterative; a folder with more entries counts as full)."""
    total, entries, stack = 0, 0, [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    entries += 1
                    if entries > max_entries:
                        return 1 << 62
                    if skip is not None and entry.path == skip:
                        continue
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _clear_scratch(scratch: str | None, keep: str | None) -> None:
    """Remove what a job left in the scratch folder (the next job starts empty)."""
    import shutil

    if not scratch:
        return
    try:
        entries = list(os.scandir(scratch))
    except OSError:
        return
    for entry in entries:
        if keep is not None and entry.path == keep:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def kill_descendants(rounds: int = 50) -> None:
    """SIGKILL every process below this one and reap it.

    The zygote is a child subreaper, so a daemon that left its process group
    and session (``setsid()`` and a double fork) is still reparented here and
    found; repeated because a process may fork while we look."""
    me = os.getpid()
    for _ in range(rounds):
        parents: dict[int, int] = {}
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                parents[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        below, frontier = set(), {me}
        while frontier:
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in below}
            below |= frontier
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while True:  # reap (children of a subreaper)
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
        if not below:
            return
        time.sleep(0.01)


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
    # Oracle answers are computed by the grader; their time is added to the deadline only up to
    # this budget (a loop of oracle calls must still end).
    oracle_budget = float(limits.get("oracle_seconds", 30.0))
    scratch_cap = limits.get("scratch_bytes")
    keep = job.get("lib_dir")
    next_disk_check = started
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
        extended = deadline + min(oracle_seconds, oracle_budget)
        if now > extended:
            reason = "timeout"
            break
        if scratch_cap and now >= next_disk_check and job.get("scratch"):
            next_disk_check = now + 0.1
            if _tree_bytes(job["scratch"], skip=keep) > int(scratch_cap):
                reason = "disk_limit"
                break
        readable, _, _ = select.select(list(open_fds), [], [], min(0.05, max(0.0, extended - now)))
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
    kill_descendants()  # and those that left the process group or session
    if not reason and scratch_cap and job.get("scratch") and _tree_bytes(job["scratch"], skip=keep) > int(scratch_cap):
        reason = "disk_limit"
    _clear_scratch(job.get("scratch"), keep)
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


#: Modules imported once by the zygote: where the children run as another uid than the one
#: that installed Python, these stay importable even if the installation is not readable.
PRELOAD = ("copy", "random", "itertools", "functools", "collections", "collections.abc", "typing", "dataclasses",
           "statistics", "heapq", "bisect", "operator", "re", "json", "warnings", "contextlib", "numbers", "fractions",
           "decimal", "string", "textwrap", "abc", "enum", "pathlib", "shutil", "tempfile", "pickle", "array", "queue",
           "glob", "fnmatch", "csv", "ctypes", "resource", "pprint", "inspect", "types", "weakref", "traceback", "linecache",
           "ast", "__future__", "torch.nn.init", "torch.nn.functional", "torch.optim", "torch.utils.data",
           "torchvision.models", "torchvision.ops.boxes", "torchvision.transforms", "numpy.linalg", "numpy.random")


def zygote_main(ctl_in: int, ctl_out: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Orphans of a check (a setsid() daemon) are reparented here and killed after the check;
    # not dumpable: processes of the same uid cannot open /proc/<zygote>/fd (the control pipes).
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the grader died (SIGKILL, a batch stopped): so does the sandbox
    import importlib

    import numpy  # noqa: F401  (preloaded once in the zygote, for every check)
    import torch
    import torchvision.ops  # noqa: F401  (preloaded once in the zygote, for every check)

    try:  # notebooks import pyplot; loading it once here saves time in every check
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # preloaded once in the zygote
    except Exception:  # noqa: BLE001 - optional
        pass
    for module in PRELOAD:
        try:
            importlib.import_module(module)
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
