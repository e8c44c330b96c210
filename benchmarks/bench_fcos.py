"""FCOS overheads: what the detector adds around its network, measured in one run.

    python benchmarks/bench_fcos.py                              # CPU, batch 16 at 224x224
    python benchmarks/bench_fcos.py --threads 1 --clock cpu      # robust on a loaded machine
    python benchmarks/bench_fcos.py --device cuda --amp          # GPU, float16 autocast

1. Training step.  ``model(images, gt_boxes)`` + backward (backbone, FPN,
   head, target assignment and the three losses) against forward + backward
   of backbone + FPN + head alone (a stand-in loss: the sum of the outputs'
   means).  Target: ratio <= 1.15.  Also timed alone: targets + losses
   (forward and backward) on cached network outputs.
2. Inference.  ``model.inference(images)`` (network + decoding + clipping +
   class-specific NMS) against the forward of backbone + FPN alone and of
   backbone + FPN + head.  Target: inference throughput >= 0.85x the
   backbone + FPN forward.  Note that the head alone is ~27% of the
   inference multiply-adds at FPN 64 / stem [64, 64] (167M of 625M per
   image; 52% at FPN 128 / stem [128, 128]), so even free post-processing
   caps that ratio near 0.73; the ratio to backbone + FPN + head is the
   post-processing overhead proper.  Two post-processing loads: the model
   as initialised with the default thresholds (score 0.3, NMS 0.5: nothing
   passes), and a stress load whose head is biased so that every location of
   every image passes ``score_thresh=0.05`` (the evaluation threshold) with a
   real box: 1029 candidates per image.  Post-processing is also timed alone
   on cached network outputs.

Ground truth: 1-8 random objects per image padded to 40 rows (the VOC loader's
format).  Timings are medians (and minima) of ``--repeats`` interleaved runs
after ``--warmup`` runs; the ratios compare functions measured in the same run.
``--clock cpu`` measures this process's CPU time instead of wall-clock time:
with ``--threads 1`` it is nearly immune to other processes on the machine.
"""

from __future__ import annotations

import argparse
import copy

import torch
from timing import add_timing_arguments, apply_threads, interleaved_seconds, print_load_average

from data_utils.cli_options import add_deprecated_alias, add_device
from solutions.fcos import FCOS

TRAIN_TARGET = 1.15
INFERENCE_TARGET = 0.85


def random_gt(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    gt = torch.full((batch, 40, 5), -1.0)
    for b in range(batch):
        n = int(torch.randint(1, 9, (1,), generator=generator))
        xy = torch.rand(n, 2, generator=generator) * size * 0.7
        wh = torch.rand(n, 2, generator=generator) * (size - xy) + 4
        gt[b, :n, :2] = xy
        gt[b, :n, 2:4] = (xy + wh).clamp(max=size)
        gt[b, :n, 4] = torch.randint(0, 20, (n,), generator=generator).float()
    return gt

def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device(parser, default="cpu", choices=["cpu", "cuda"], help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default: %(default)s)")
    add_deprecated_alias(parser, "--batch", "--batch-size", "batch_size", type=int)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fpn-channels", type=int, default=64)
    parser.add_argument("--stem-channels", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    add_timing_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    apply_threads(args)
    device = args.device

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = FCOS(20, args.fpn_channels, args.stem_channels, weights=None).to(device)
    images = torch.randn(args.batch_size, 3, args.size, args.size, generator=generator).to(device)
    gt_boxes = random_gt(args.batch_size, args.size, generator).to(device)
    autocast = torch.autocast(device_type=device, dtype=torch.float16, enabled=args.amp)
    print(f"clock {args.clock}, torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, {args.size}x{args.size}, FPN {args.fpn_channels}, stem {args.stem_channels}, amp {args.amp}")

    # ---- 1. training step
    model.train()
    normalizer = model.normalizer.clone()

    def full_step():
        with autocast:
            losses = model(images, gt_boxes)
            total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        total.backward()
        model.zero_grad(set_to_none=True)

    def network_step():
        with autocast:
            cls, box, ctr = model.pred_net(model.backbone(images))
            total = sum(t.float().mean() for d in (cls, box, ctr) for t in d.values())
        total.backward()
        model.zero_grad(set_to_none=True)

    # The detector's own work in isolation: the network's outputs are cached
    # (as leaf tensors, so backward stops there) and only targets + losses run.
    with torch.no_grad(), autocast:
        cached = model._predict(images)

    def targets_and_losses():
        outputs = tuple(t.detach().requires_grad_() for t in cached[:3]) + (cached[3],)
        model._predict = lambda _images: outputs
        try:
            with autocast:
                losses = model(images, gt_boxes)
            sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
        finally:
            del model._predict

    (t_full, m_full), (t_net, m_net), (t_loss, m_loss) = interleaved_seconds(
        [full_step, network_step, targets_and_losses], args.repeats, device, warmup=args.warmup, clock=args.clock)
    model.normalizer.copy_(normalizer)
    ratio = t_full / t_net
    print(f"training step: full FCOS {t_full * 1e3:.1f} ms, backbone+FPN+head fwd+bwd {t_net * 1e3:.1f} ms, "
          f"targets+losses fwd+bwd alone {t_loss * 1e3:.1f} ms")
    print(f"  ratio full / network {ratio:.3f} (of minima {m_full / m_net:.3f}; from the parts "
          f"{(t_net + t_loss) / t_net:.3f}); target <= {TRAIN_TARGET}: {'met' if ratio <= TRAIN_TARGET else 'NOT met'}")

    # ---- 2. inference
    model.eval()
    stressed = copy.deepcopy(model)
    with torch.no_grad():
        stressed.pred_net.pred_cls.bias.fill_(0.0)           # class probability ~0.5
        stressed.pred_net.pred_cls.weight.mul_(30)           # varied scores and classes
        stressed.pred_net.pred_box.bias.fill_(2.0)           # boxes ~4 strides wide
        stressed.pred_net.pred_box.weight.mul_(30)
        cached = model._predict(images)
        cached_stressed = stressed._predict(images)

    def no_grad(fn):
        def run():
            with torch.no_grad(), autocast:
                fn()
        return run

    def postprocess_only(detector, outputs, **kwargs):
        def run():
            detector._predict = lambda _images: outputs
            try:
                detector.inference(images, **kwargs)
            finally:
                del detector._predict
        return run

    stress_args = {"score_thresh": 0.05, "nms_thresh": 0.5}
    timings = interleaved_seconds([
        no_grad(lambda: model.backbone(images)),
        no_grad(lambda: model.pred_net(model.backbone(images))),
        no_grad(lambda: model.inference(images)),
        no_grad(lambda: stressed.inference(images, **stress_args)),
        no_grad(postprocess_only(model, cached)),
        no_grad(postprocess_only(stressed, cached_stressed, **stress_args)),
    ], args.repeats, device, warmup=args.warmup, clock=args.clock)
    (t_backbone, m_backbone), (t_network, m_network) = timings[:2]
    with torch.no_grad(), autocast:
        kept = sum(len(d.scores) for d in stressed.inference(images, **stress_args))
    b = args.batch_size
    print(f"forward: backbone+FPN {b / t_backbone:.1f} img/s ({t_backbone * 1e3:.1f} ms), "
          f"backbone+FPN+head {b / t_network:.1f} img/s ({t_network * 1e3:.1f} ms)")
    for name, (t, m), (t_post, _) in (("inference (defaults)", timings[2], timings[4]),
                                      (f"inference (stress, {kept} kept)", timings[3], timings[5])):
        vs_backbone = t_backbone / t
        print(f"{name}: {b / t:.1f} img/s, post-processing alone {t_post * 1e3:.1f} ms")
        print(f"  x{vs_backbone:.3f} of backbone+FPN (of minima x{m_backbone / m:.3f}); target >= {INFERENCE_TARGET}: "
              f"{'met' if vs_backbone >= INFERENCE_TARGET else 'NOT met'}")
        print(f"  x{t_network / t:.3f} of backbone+FPN+head (of minima x{m_network / m:.3f}; from the parts "
              f"x{t_network / (t_network + t_post):.3f})")
    print_load_average()


if __name__ == "__main__":
    main()
