"""Throughput of the uint8 tensor cache against decoding JPEGs, in one run.

    python benchmarks/bench_cache.py [--voc-root DIR] [--split train] [--epochs 3]

Every path delivers what the training loop consumes: a shuffled, flipped,
normalised float32 batch ``(B, 3, 224, 224)`` on the device, i.e. the output
of :func:`data_utils.data.voc.to_network_input`.  The paths:

* JPEG: :class:`~data_utils.data.voc.VOCDetection` through the default
  ``DataLoader`` (``default_num_workers()`` worker processes), and with no
  worker process, for reference.
* cache, float: :class:`~data_utils.data.cache.CachedVOC` batches, normalised by
  the cache.
* cache, uint8: batches served as bytes and normalised by
  ``to_network_input`` on the device (what ``train_detector`` does): the same
  work on the CPU, a quarter of the host-to-device traffic with a GPU.

Each epoch of each path is timed in turn (``--epochs`` rounds, interleaved,
after one warm-up round); the figures are medians.  Target: cache >= 20x the
default JPEG loader.  With CUDA the cache also runs from GPU memory.
"""

from __future__ import annotations

import argparse

import torch
from timing import add_timing_arguments, apply_threads, interleaved_seconds, print_load_average

from data_utils.cli_options import add_voc_root
from data_utils.data.cache import CachedVOC
from data_utils.data.loaders import build_loader, default_num_workers
from data_utils.data.synthetic import ensure_embedded_dataset
from data_utils.data.voc import VOCDetection, to_network_input

TARGET = 20.0


def epoch(loader, device: torch.device):
    def run() -> int:
        count = 0
        for _, images, _ in loader:
            count += len(to_network_input(images, device))
        return count
    return run


def build_parser() -> argparse.ArgumentParser:
    """The options (the shared convention of data_utils/cli_options.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_voc_root(parser, deprecated=("--voc-dir",), help="VOC2007 folder (default: the embedded dataset)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="timed rounds of every path (default: %(default)s)")
    add_timing_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.clock == "cpu":
        parser.error("--clock cpu does not see the time the JPEG loader's worker processes spend; use wall time")
    apply_threads(args)
    voc_dir = args.voc_root or ensure_embedded_dataset()
    dataset = VOCDetection(voc_dir, args.split, train=True)
    cpu = torch.device("cpu")
    workers = default_num_workers()
    cached_set = CachedVOC(dataset, progress=False)  # builds the cache file once if needed
    b = args.batch_size
    paths = {
        f"JPEG decode + letterbox, {workers} worker(s)": (build_loader(dataset, b), cpu),
        "JPEG decode + letterbox, in process": (build_loader(dataset, b, num_workers=0), cpu),
        "uint8 cache (CPU), float batches": (build_loader(cached_set, b, seed=0), cpu),
        "uint8 cache (CPU), uint8 batches": (build_loader(cached_set, b, seed=0, uint8=True), cpu),
    }
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        gpu_set = CachedVOC(dataset, device=cuda, progress=False)
        paths.update({
            "JPEG -> GPU, default workers": (build_loader(dataset, b), cuda),
            "uint8 cache (CPU) -> GPU, uint8 batches": (build_loader(cached_set, b, seed=0, uint8=True), cuda),
            "uint8 cache (GPU), float batches": (build_loader(gpu_set, b, seed=0), cuda),
            "uint8 cache (GPU), uint8 batches": (build_loader(gpu_set, b, seed=0, uint8=True), cuda),
        })
    images = len(dataset) - len(dataset) % b  # training loaders drop the last partial batch
    print(f"{len(dataset)} images of {voc_dir} [{args.split}], batch {b}, {args.epochs} timed epochs per path, "
          f"{torch.get_num_threads()} threads, clock {args.clock}")
    fns = [epoch(loader, device) for loader, device in paths.values()]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    timings = interleaved_seconds(fns, args.epochs, device, warmup=1, clock=args.clock)
    rate = {name: images / median for name, (median, _) in zip(paths, timings)}
    baseline = next(iter(rate.values()))
    for name, value in rate.items():
        note = ""
        if name.startswith("uint8 cache (CPU)"):
            ratio = value / baseline
            note = f"   x{ratio:5.1f} the default JPEG loader (target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'})"
        elif "cache (GPU)" in name or "-> GPU, uint8" in name:
            note = f"   x{value / rate['JPEG -> GPU, default workers']:5.1f} JPEG -> GPU"
        print(f"{name:42s}: {value:8.0f} img/s{note}")
    print_load_average()


if __name__ == "__main__":
    main()
