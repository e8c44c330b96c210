"""RegNetX-400MF trunk with a small Feature Pyramid Network on top."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from data_utils.conventions import FPN_STRIDES


def _regnet_trunk(weights: str | None) -> nn.Module:
    """Build RegNetX-400MF, explaining what to do when its weights cannot be fetched."""
    try:
        return models.regnet_x_400mf(weights=weights)
    except Exception as error:  # network errors surface as many exception types
        url = models.get_weight(f"RegNet_X_400MF_Weights.{weights}").url
        raise RuntimeError(
            f"Could not load the ImageNet weights of RegNetX-400MF ({error}).\n"
            f"  - Download {url} by hand into {torch.hub.get_dir()}/checkpoints/, or\n"
            "  - pass weights=None to train from a random initialisation (fine for the offline dataset and tests)."
        ) from error


class DetectorBackboneWithFPN(nn.Module):
    """RegNetX-400MF features c3/c4/c5 (strides 8/16/32) refined by an FPN.

    ``forward(images (B, 3, H, W))`` returns ``{"p3", "p4", "p5"}``, each
    ``(B, out_channels, H/stride, W/stride)``; ``fpn_strides`` maps each level
    to its stride.  ``weights`` is a torchvision weights name ("DEFAULT",
    "IMAGENET1K_V1", ...) or ``None`` for random initialisation.
    """

    def __init__(self, out_channels: int, weights: str | None = "DEFAULT"):
        super().__init__()
        self.out_channels = out_channels
        trunk = _regnet_trunk(weights)
        self.stem = trunk.stem
        self.block1 = trunk.trunk_output.block1
        self.block2 = trunk.trunk_output.block2  # c3, stride 8
        self.block3 = trunk.trunk_output.block3  # c4, stride 16
        self.block4 = trunk.trunk_output.block4  # c5, stride 32
        self.trunk_channels = {
            "c3": _out_channels(self.block2),
            "c4": _out_channels(self.block3),
            "c5": _out_channels(self.block4),
        }
        self.fpn_params = nn.ModuleDict()
        ### BEGIN SOLUTION
        for c, p in (("c3", "p3"), ("c4", "p4"), ("c5", "p5")):
            self.fpn_params[f"lateral_{p}"] = nn.Conv2d(self.trunk_channels[c], out_channels, kernel_size=1)
            self.fpn_params[f"output_{p}"] = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        ### END SOLUTION

    @property
    def fpn_strides(self) -> dict[str, int]:
        return dict(FPN_STRIDES)

    def trunk(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``{"c3", "c4", "c5"}`` trunk features."""
        x = self.block1(self.stem(images))
        c3 = self.block2(x)
        c4 = self.block3(c3)
        c5 = self.block4(c4)
        return {"c3": c3, "c4": c4, "c5": c5}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.trunk(images)
        fpn_feats = {"p3": None, "p4": None, "p5": None}
        ### BEGIN SOLUTION
        # Top-down pathway: coarser levels are upsampled (nearest) to the next
        # finer level's size and added to its lateral projection.
        lat5 = self.fpn_params["lateral_p5"](feats["c5"])
        lat4 = self.fpn_params["lateral_p4"](feats["c4"]) + F.interpolate(lat5, size=feats["c4"].shape[-2:], mode="nearest")
        lat3 = self.fpn_params["lateral_p3"](feats["c3"]) + F.interpolate(lat4, size=feats["c3"].shape[-2:], mode="nearest")
        fpn_feats["p5"] = self.fpn_params["output_p5"](lat5)
        fpn_feats["p4"] = self.fpn_params["output_p4"](lat4)
        fpn_feats["p3"] = self.fpn_params["output_p3"](lat3)
        ### END SOLUTION
        return fpn_feats


def _out_channels(stage: nn.Module) -> int:
    """Number of output channels of a RegNet stage (its last conv's width)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels
