"""Code the harness supplies to a submission that lacks it: the first assignment's
``DetectorBackboneWithFPN`` (RegNetX-400MF + FPN), given to the second assignment.

Instructor-only: it is a complete answer to a graded class of the first
assignment, so it is not in the student wheel (see
:mod:`assignments.student_package`).  :func:`given_sources` sends this
module's text with a job; the sandboxed child executes it
(:func:`grader.harness.standins.given_classes`) only when the submission does not define
the class.  Standard library, torch and torchvision only.
"""

import torch.nn.functional as F
from torch import nn
from torchvision import models


class DetectorBackboneWithFPN(nn.Module):
    """RegNetX-400MF trunk, c3/c4/c5 from blocks 2-4, FPN with 1x1 laterals, nearest
    top-down upsampling and 3x3 output convs."""

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


def given_sources(names) -> dict:
    """``{name: source}`` for the given classes a job needs (this module's text)."""
    from pathlib import Path

    text = Path(__file__).read_text()
    return {name: text for name in names if name == "DetectorBackboneWithFPN"}
