"""Throughput of the uint8 tensor cache against decoding JPEGs, in one run.

    python benchmarks/bench_cache.py [--voc-dir DIR] [--split train] [--epochs 2]

Both paths produce the same normalised (B, 3, 224, 224) batches with flips;
the JPEG path uses the default DataLoader workers.  Target: cache >= 20x.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from data_utils.cache import CachedVOC
from data_utils.loaders import build_loader, default_num_workers
from data_utils.synthetic import ensure_embedded_dataset
from data_utils.voc import VOCDetection


def images_per_second(loader, epochs: int, device: torch.device) -> float:
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for _, images, _ in loader:
            images = images.to(device)
            count += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc-dir", type=Path, default=None, help="VOC2007 folder (default: the embedded dataset)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    voc_dir = args.voc_dir or ensure_embedded_dataset()
    dataset = VOCDetection(voc_dir, args.split, train=True)
    cpu = torch.device("cpu")
    print(f"{len(dataset)} images of {voc_dir} [{args.split}], batch {args.batch_size}, {args.epochs} epochs, "
          f"{torch.get_num_threads()} threads, {default_num_workers()} loader workers")

    jpeg = images_per_second(build_loader(dataset, args.batch_size), args.epochs, cpu)
    started = time.perf_counter()
    cached_set = CachedVOC(dataset, progress=False)
    build_s = time.perf_counter() - started
    cached = images_per_second(build_loader(cached_set, args.batch_size), args.epochs, cpu)
    print(f"JPEG decode + letterbox : {jpeg:10.0f} img/s")
    print(f"uint8 cache (CPU)       : {cached:10.0f} img/s   ratio {cached / jpeg:6.1f}x  (target >= 20x)  "
          f"[building/loading the cache took {build_s:.1f} s]")
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        gpu_set = CachedVOC(dataset, device=cuda, progress=False)
        gpu = images_per_second(build_loader(gpu_set, args.batch_size), args.epochs, cuda)
        jpeg_to_gpu = images_per_second(build_loader(dataset, args.batch_size), 1, cuda)
        print(f"JPEG -> GPU             : {jpeg_to_gpu:10.0f} img/s")
        print(f"uint8 cache (GPU)       : {gpu:10.0f} img/s   ratio {gpu / jpeg_to_gpu:6.1f}x")


if __name__ == "__main__":
    main()
