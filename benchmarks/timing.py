"""Timing shared by the benchmarks (run as scripts: ``python benchmarks/X.py``,
so this module is importable as ``timing``)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_seconds(fns: Sequence[Callable[[], object]], repeats: int, device: str, *, warmup: int = 1,
                        clock: str = "wall") -> list[tuple[float, float]]:
    """``(median, min)`` seconds of each function, run alternately so that load
    from other processes hits all of them alike.  ``clock="cpu"`` measures this
    process's CPU time (robust on a loaded machine with one thread)."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            if device == "cuda":
                torch.cuda.synchronize()
            start = now()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            bucket.append(now() - start)
    return [(statistics.median(t), min(t)) for t in times]


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--clock``, shared by the benchmarks (apply with :func:`apply_threads`)."""
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall: time.perf_counter; cpu: time.process_time, the CPU time of this process, which "
                             "other processes' load barely changes (use with --threads 1: spinning threads count)")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def print_load_average() -> None:
    """The machine's load, printed after the figures: wall-clock ratios only compare within a quiet run."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"1-minute load average {load:.2f} on {os.cpu_count()} CPUs (wall-clock timings are only meaningful when it is low)")
