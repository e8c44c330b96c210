"""Stand-ins with fixed outputs (so that one class is checked without its collaborators),
classes given by the grader, and :func:`materialize`, which turns the marker dicts of a
procedure spec into live objects."""

from __future__ import annotations

from grader.harness.submission import lookup
from grader.harness.wire import clone_data, to_device


def harness_classes():
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
            cls = lookup(ns or {}, obj["__class__"])
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
