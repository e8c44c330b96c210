"""The procedures that exercise a submission (``call``, ``module``, ``fpn_permutations``,
``overfit``, ``predict``, ``train``, ``load``); each returns plain data.

:func:`run_procedure` is the one entry: the sandbox's child calls it on the submission,
:mod:`grader.checks` on the reference and :mod:`grader.sanity` in a student's notebook.
"""

from __future__ import annotations

import math
import time

from grader.harness.standins import harness_classes, materialize
from grader.harness.submission import MissingName, describe_error, lookup, submission_traceback
from grader.harness.wire import BadReturn, to_device, to_plain


def _seed(seed):
    import torch

    if seed is not None:
        torch.manual_seed(int(seed))


def proc_call(ns, spec, devices):
    """Call a function on the given arguments; return its output and the arguments afterwards."""
    import torch

    fn = lookup(ns, spec["name"])
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

    harness = harness_classes()
    for name in spec.get("stub_classes", []):
        ns[name] = harness["stub"]
    cls = lookup(ns, spec["name"])
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

    cls = lookup(ns, "DetectorBackboneWithFPN")
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


def _normalize(images_uint8, device, spec):
    """The networks' float input; the grader sends the mean and std (``data_utils.data.voc``'s, the
    one definition) in the spec, so the child imports nothing for them."""
    import torch

    mean = torch.tensor(spec["pixel_mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec["pixel_std"], device=device).view(1, 3, 1, 1)
    return (images_uint8.to(device).float() / 255.0 - mean) / std


def build_detector(ns, spec):
    """The student's detector built from their own classes (``spec["model"]``)."""
    kind = spec["model"]
    cfg = spec.get("config", {})
    if kind == "FCOS":
        return lookup(ns, "FCOS")(cfg.get("num_classes", 20), cfg["fpn_channels"], list(cfg["stem_channels"]), weights=None)
    backbone = lookup(ns, "DetectorBackboneWithFPN")(cfg["fpn_channels"], weights=None)
    rpn = lookup(ns, "RPN")(cfg["fpn_channels"], list(cfg["rpn_stem_channels"]), **cfg.get("rpn_kwargs", {}))
    return lookup(ns, "FasterRCNN")(backbone, rpn, list(cfg["stem_channels"]), num_classes=cfg.get("num_classes", 20),
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
        losses = model(_normalize(images[idx], device, spec), gt[idx].to(device))
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
            out = model.inference(_normalize(images[start:start + batch], device, spec),
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

    from data_utils.data.loaders import build_loader
    from data_utils.data.voc import VOCDetection
    from data_utils.training.engine import TrainConfig, train_detector

    device = torch.device(spec.get("device", "cuda"))
    seed = int(spec.get("seed", 0))
    _seed(seed)
    model = build_detector(ns, spec)
    if spec.get("head_init") == "pytorch":
        # The from-scratch recipe of the embedded presets (data_utils.training.head_init).
        from data_utils.training.head_init import reinit_head_stems

        reinit_head_stems(model)
    dataset = VOCDetection(spec["voc_dir"], spec.get("split", "train"), train=True)
    from data_utils.data.cache import CachedVOC

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
