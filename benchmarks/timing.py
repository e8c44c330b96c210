"""Timing shared by the benchmarks (run as scripts: ``python benchmarks/X.py``,
so this module is importable as ``timing``)."""

from __future__ import annotations

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
