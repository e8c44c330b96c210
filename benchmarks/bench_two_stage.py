"""Faster R-CNN costs: what the two stages add around backbone + FPN, measured in one run.

    python benchmarks/bench_two_stage.py                      # CPU, batch 16 at 224x224
    python benchmarks/bench_two_stage.py --device cuda --amp  # GPU, float16 autocast

Training (forward + backward, median of ``--repeats`` after ``--warmup``):

* ``backbone``: backbone + FPN alone, stand-in loss = sum of the levels' means;
* ``rpn step``: backbone + FPN + RPN (head, anchors, matching, sampling, losses
  and proposal selection with NMS);
* ``full step``: ``model(images, gt_boxes)`` + backward, the whole Faster R-CNN.

The second stage's share is ``(full - rpn step) / full``: sampling RoIs (GT
mixed in, matching, sampling), RoIAlign over three levels, the classifier and
its loss, forward and backward.  Inference: ``model.inference(images)`` against
the backbone + FPN forward.  Ratios are taken between timings of the same run.

Ground truth: 1-8 random objects per image padded to 40 rows (the loader's format).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from data_utils.cli_options import add_deprecated_alias, add_device
from solutions.backbone import DetectorBackboneWithFPN
from solutions.faster_rcnn import FasterRCNN
from solutions.rpn import RPN


def random_gt(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    gt = torch.full((batch, 40, 5), -1.0)
    for b in range(batch):
        n = int(torch.randint(1, 9, (1,), generator=generator))
        xy = torch.rand(n, 2, generator=generator) * size * 0.7
        wh = torch.rand(n, 2, generator=generator) * (size - xy) * 0.9 + 6
        gt[b, :n, :2] = xy
        gt[b, :n, 2:4] = (xy + wh).clamp(max=size)
        gt[b, :n, 4] = torch.randint(0, 20, (n,), generator=generator).float()
    return gt


def median_seconds(fn, warmup: int, repeats: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device(parser, default="cpu", choices=["cpu", "cuda"], help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    add_deprecated_alias(parser, "--batch", "--batch-size", "batch_size", type=int)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fpn-channels", type=int, default=128, help="the course's full-training setting")
    parser.add_argument("--amp", action="store_true", help="float16 autocast (CUDA) / bfloat16 (CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    device = args.device
    channels = args.fpn_channels
    model = FasterRCNN(
        DetectorBackboneWithFPN(channels, weights=None),
        RPN(channels, [channels, channels]),
        stem_channels=[channels, channels],
        num_classes=20,
        batch_size_per_image=32,
    ).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.size, args.size, generator=generator).to(device)
    gt = random_gt(args.batch_size, args.size, generator).to(device)
    strides = model.backbone.fpn_strides

    def autocast():
        if not args.amp:
            return contextlib.nullcontext()
        return torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16)

    def backbone_step():
        with autocast():
            feats = model.backbone(images)
            loss = sum(f.float().mean() for f in feats.values())
        loss.backward()

    def rpn_step():
        with autocast():
            feats = model.backbone(images)
            out = model.rpn(feats, strides, gt, image_size=(args.size, args.size))
            loss = out["loss_rpn_obj"] + out["loss_rpn_box"]
        loss.backward()

    def full_step():
        with autocast():
            losses = model(images, gt)
            loss = sum(v for k, v in losses.items() if k.startswith("loss_"))
        loss.backward()

    def backbone_forward():
        with torch.no_grad(), autocast():
            model.backbone(images)

    def inference():
        with autocast():
            model.inference(images, score_thresh=0.0, nms_thresh=0.5)

    model.train()
    timings = {}
    for name, fn in (("backbone", backbone_step), ("rpn step", rpn_step), ("full step", full_step)):
        timings[name] = median_seconds(fn, args.warmup, args.repeats, device)
        model.zero_grad(set_to_none=True)
    model.eval()
    for name, fn in (("backbone forward", backbone_forward), ("inference", inference)):
        timings[name] = median_seconds(fn, args.warmup, args.repeats, device)

    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"Faster R-CNN, batch {args.batch_size} at {args.size}x{args.size}, FPN {channels}, "
          f"{'AMP' if args.amp else 'float32'}, {name}; median of {args.repeats}")
    print("training (forward + backward):")
    for key in ("backbone", "rpn step", "full step"):
        print(f"  {key:<10} {timings[key] * 1000:9.1f} ms   {args.batch_size / timings[key]:7.1f} img/s")
    full, rpn, backbone = timings["full step"], timings["rpn step"], timings["backbone"]
    print(f"  full step / backbone + FPN:      {full / backbone:5.2f}x")
    print(f"  RPN's share of the full step:    {(rpn - backbone) / full:6.1%}")
    print(f"  second stage's share:            {(full - rpn) / full:6.1%}")
    print("inference (score_thresh 0, every proposal classified):")
    print(f"  backbone + FPN forward {timings['backbone forward'] * 1000:9.1f} ms")
    print(f"  model.inference        {timings['inference'] * 1000:9.1f} ms   "
          f"{timings['inference'] / timings['backbone forward']:5.2f}x the backbone + FPN forward")


if __name__ == "__main__":
    main()
