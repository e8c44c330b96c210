"""Reference NMS vs ``torchvision.ops.nms`` (the course's check: random integer
boxes on a 100 px canvas), median of repeats, both measured in the same run.

    python benchmarks/bench_nms.py                 # CPU, 1k and 5k boxes
    python benchmarks/bench_nms.py --threads 1 --clock cpu   # robust on a loaded machine
    python benchmarks/bench_nms.py --device cuda   # GPU (the target is a CPU target)

Target on CPU: the reference takes at most 2x torchvision's time.  Kept sets
are checked for equality on every configuration before timing.  Timings on a
shared machine are noisy (the vectorised reference uses every intra-op
thread, torchvision's CPU kernel one, and a parallel region stalls whenever
one of its threads is descheduled): compare wall-clock ratios from a quiet
machine, or use ``--threads 1 --clock cpu``.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from timing import add_timing_arguments, apply_threads, interleaved_seconds, print_load_average

from data_utils.cli_options import add_device
from solutions.non_max_suppression import nms

TARGET_RATIO = 2.0


def course_boxes(n: int, generator: torch.Generator, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.randint(0, 100, (n, 2), generator=generator).float()
    wh = torch.randint(1, 30, (n, 2), generator=generator).float()
    scores = torch.rand(n, generator=generator)
    return torch.cat([xy, xy + wh], dim=1).to(device), scores.to(device)

def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device(parser, default="cpu", choices=["cpu", "cuda"], help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--repeats", type=int, default=15)
    add_timing_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    apply_threads(args)

    print(f"clock {args.clock}, torch {torch.__version__}, torchvision {torchvision.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'boxes':>6} {'IoU':>4} {'kept':>5} {'reference ms':>13} {'torchvision ms':>15} {'ratio':>6} "
          f"{'(ratio of minima)':>17}")
    generator = torch.Generator().manual_seed(0)
    worst = worst_min = 0.0
    for n in args.sizes:
        boxes, scores = course_boxes(n, generator, args.device)
        for threshold in args.thresholds:
            ours = nms(boxes, scores, threshold)
            theirs = torchvision.ops.nms(boxes, scores, threshold)
            assert torch.equal(ours.cpu(), theirs.cpu()), f"kept sets differ ({n} boxes, IoU {threshold})"
            (t_ours, m_ours), (t_tv, m_tv) = interleaved_seconds(
                [lambda b=boxes, s=scores, t=threshold: nms(b, s, t),
                 lambda b=boxes, s=scores, t=threshold: torchvision.ops.nms(b, s, t)],
                args.repeats, args.device, clock=args.clock)
            worst, worst_min = max(worst, t_ours / t_tv), max(worst_min, m_ours / m_tv)
            print(f"{n:>6} {threshold:>4} {len(ours):>5} {t_ours * 1e3:>13.2f} {t_tv * 1e3:>15.2f} "
                  f"{t_ours / t_tv:>6.2f} {m_ours / m_tv:>17.2f}")
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"worst ratio of medians {worst:.2f}, of minima {worst_min:.2f} "
          f"(target <= {TARGET_RATIO:.1f}x torchvision): {verdict}")
    print_load_average()


if __name__ == "__main__":
    main()
