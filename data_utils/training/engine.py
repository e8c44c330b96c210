"""Training loop shared by both detectors (anything following the detector
protocol in :mod:`data_utils.conventions`).

SGD with momentum and weight decay, optional linear warm-up, step decay at
60% and 90% of the iterations (the course's schedule), automatic mixed
precision on CUDA, a tqdm bar with smoothed losses, a loss history, and
checkpoints that hold everything needed to resume exactly: model, optimiser,
scheduler, AMP scaler, iteration, history, RNG states and the configs.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from data_utils.atomic import atomic_torch_save
from data_utils.data.voc import to_network_input

Batch = tuple[list[str], torch.Tensor, torch.Tensor]


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: the course's full FCOS schedule)."""

    max_iters: int = 9000
    lr: float = 8e-3
    #: "sgd" (the course's, with ``momentum``) or "adamw".  SGD at the course's
    #: rates suits an ImageNet-initialised backbone; from a random
    #: initialisation (the offline CPU runs) SGD at 1e-2 diverged within 70
    #: iterations and AdamW converges far faster.
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    #: Fractions of ``max_iters`` at which the learning rate is multiplied by ``gamma``.
    milestones: tuple[float, ...] = (0.6, 0.9)
    gamma: float = 0.1
    #: Linear warm-up from ``warmup_factor * lr`` over this many iterations (0 = off, as in the course).
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    #: Mixed precision (only ever used on CUDA; bf16 where supported, else fp16 with loss scaling).
    amp: bool = True
    #: Clip the gradient norm to this value (None = off).
    grad_clip: float | None = None
    #: Save a checkpoint every this many iterations (0 = only at the end) when ``checkpoint_path`` is set.
    checkpoint_every: int = 0
    seed: int = 0
    #: Train in channels-last memory format (weights and input batches NHWC).
    #: On this course's CPUs oneDNN's convolutions run 15-20% faster so
    #: (benchmarks/bench_main_job.py); on CUDA with AMP it is the format tensor
    #: cores want.  Off by default: a student's ``x.view(N, C * H * W)`` on an
    #: NHWC feature map raises, so only the reference presets turn it on.
    channels_last: bool = False
    #: Use the optimiser's fused kernel (one pass over all parameters) instead of its
    #: per-parameter loop.  Same update rule, different rounding in the last bits.  On a
    #: 2-core CPU the loop over ~240 parameter tensors is several percent of a step
    #: (benchmarks/bench_main_job.py); off by default so that the notebooks' recorded
    #: runs stay as they were, on in the main job's presets.
    fused_optimizer: bool = False

    def lr_factor(self, iteration: int) -> float:
        """Multiplier of ``lr`` at ``iteration`` (0-based)."""
        factor = self.gamma ** sum(iteration >= int(m * self.max_iters) for m in self.milestones)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


@dataclass
class TrainState:
    """What :func:`train_detector` returns (and what a checkpoint restores)."""

    iteration: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``config.optimizer`` names, at ``config.lr`` and ``config.weight_decay``
    (its fused kernel when ``config.fused_optimizer``; None lets PyTorch choose otherwise)."""
    fused = True if config.fused_optimizer else None
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose 'sgd' or 'adamw'")


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message says which and when."""


def _forever(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Cycle through a loader, re-iterating it (and so re-shuffling) each epoch."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yielded no batch (dataset smaller than one batch with drop_last?)")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``device``: bf16 on CUDA where supported, else fp16; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` when ``dtype`` is set, else a no-op context."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, scaler: Any = None, state: TrainState | None = None,
                    train_config: TrainConfig | None = None, model_config: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (a crash never leaves a truncated file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "model_config": dict(model_config or {}),
        "train_config": asdict(train_config) if train_config else None,
        "optimizer": optimizer.state_dict() if optimizer else None,
        "scheduler": scheduler.state_dict() if scheduler else None,
        "scaler": scaler.state_dict() if scaler else None,
        "iteration": state.iteration if state else 0,
        "history": state.history if state else {},
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (and load its weights into ``model`` when given).

    Raises FileNotFoundError / ValueError with the path for a missing or
    unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error}); was the file truncated?") from error
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{path}: not a checkpoint written by data_utils.training.engine.save_checkpoint")
    if model is not None:
        model.load_state_dict(payload["model"])
    return payload


def train_detector(
    model: nn.Module,
    loader: Iterable[Batch],
    config: TrainConfig | None = None,
    *,
    device: str | torch.device | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    model_config: Mapping[str, Any] | None = None,
    progress: bool = True,
    smooth: float = 0.9,
) -> TrainState:
    """Train ``model`` for ``config.max_iters`` iterations over ``loader``.

    Args:
        model: a detector; ``model(images, gt_boxes)`` returns a loss dict.
        loader: yields ``(image_ids, images, gt_boxes)``; re-iterated each epoch.
        config: optimisation settings (see :class:`TrainConfig`).
        device: defaults to CUDA when available.
        checkpoint_path: where to save (every ``config.checkpoint_every``
            iterations and at the end); with ``resume=True`` training continues
            from it when it exists: weights, optimiser momentum, LR schedule,
            AMP scale, RNG and history are restored; the data order restarts
            at an epoch boundary (a fresh shuffle), as in most frameworks.
        model_config: stored in the checkpoint so the model can be rebuilt.
        smooth: EMA factor of the losses shown on the progress bar.

    Returns:
        The final :class:`TrainState`; ``history[name]`` holds one value per
        iteration for every entry of the loss dict plus ``"total"`` and ``"lr"``.
    """
    config = config or TrainConfig()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    amp_dtype = autocast_dtype(device) if config.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state = TrainState()

    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        payload = load_checkpoint(checkpoint_path, model, map_location=device)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        state = TrainState(payload["iteration"], payload["history"])
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])

    def checkpoint() -> None:
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            state=state, train_config=config, model_config=model_config)

    batches = _forever(loader)
    shown: dict[str, float] = {}
    bar = tqdm(total=config.max_iters, initial=state.iteration, desc="training", disable=not progress,
               dynamic_ncols=True)
    try:
        while state.iteration < config.max_iters:
            _, images, gt_boxes = next(batches)
            images = to_network_input(images, device).contiguous(memory_format=memory_format)
            gt_boxes = gt_boxes.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                losses = model(images, gt_boxes)
            total = sum(v.float() for k, v in losses.items() if k.startswith("loss"))
            if not torch.isfinite(total):
                bad = {k: float(v.detach()) for k, v in losses.items()}
                raise NonFiniteLossError(
                    f"loss is not finite at iteration {state.iteration}: {bad}. Lower the learning rate, "
                    "enable warm-up (TrainConfig.warmup_iters) or check the targets for NaN.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            record = {k: float(v.detach()) for k, v in losses.items()}
            record["total"] = float(total.detach())
            record["lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            for name, value in record.items():
                state.history.setdefault(name, []).append(value)
                shown[name] = value if name not in shown else smooth * shown[name] + (1 - smooth) * value
            state.iteration += 1
            bar.update(1)
            bar.set_postfix({k.removeprefix("loss_"): f"{v:.3g}" for k, v in shown.items() if k != "lr"}, refresh=False)
            if config.checkpoint_every and state.iteration % config.checkpoint_every == 0:
                checkpoint()
    finally:
        bar.close()
    checkpoint()
    model.eval()
    return state


def final_loss(history: Mapping[str, list[float]], name: str = "total", window: int = 10) -> float:
    """Mean of the last ``window`` values of a loss (what a person reads off the curve)."""
    values = history.get(name, [])
    if not values:
        return math.nan
    tail = values[-window:]
    return sum(tail) / len(tail)
