"""Train, evaluate and report one detector: what the main job and the full-VOC
command run.  Every output lands in one folder: the checkpoint (with its
configs), the loss history and curve, the detections, the metrics as JSON,
the per-class AP chart, precision-recall curves and predictions beside the
ground truth.

This module is part of the student package, so it never builds a detector
itself: the caller passes the model (or a factory).  The reference detectors,
the course's presets and the main job's command line live beside the
reference, in :mod:`solutions.presets` and ``python -m solutions``."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # this module only writes files; never open a window

import matplotlib.pyplot as plt
import torch
from torch import nn

from data_utils.data.loaders import build_loader
from data_utils.data.voc import VOC_CLASSES, VOCDetection
from data_utils.evaluation.eval_plots import plot_class_ap, plot_precision_recall
from data_utils.evaluation.visualize import plot_gt_vs_pred, plot_loss_history, plot_samples
from data_utils.evaluation.voc_eval import VOCEvalResult, evaluate_detections
from data_utils.training.engine import TrainConfig, final_loss, train_detector
from data_utils.training.inference import export_voc_results, predict_dataset, save_detections


@dataclass
class Preset:
    """Everything that defines a run besides the data: the model's shape (which whoever builds the
    model reads), the batch size, the training and evaluation settings.  It is stored in the
    checkpoint as the model's config."""

    detector: str
    fpn_channels: int
    stem_channels: tuple[int, ...]
    batch_size: int
    train: TrainConfig
    #: Backbone weights ("DEFAULT" = ImageNet through torchvision, None = random init).
    weights: str | None = "DEFAULT"
    #: Low threshold for mAP (AP rewards recall); the pictures use ``show_thresh``.
    eval_score_thresh: float = 0.05
    eval_nms_thresh: float = 0.5
    show_thresh: float = 0.4
    #: How the prediction heads' stem convs start: "course" keeps the
    #: assignment's N(0, 0.01) (right for an ImageNet backbone); "pytorch"
    #: re-initialises them with PyTorch's default (see :func:`data_utils.training.head_init.reinit_head_stems`).
    head_init: str = "course"
    extra: dict[str, Any] = field(default_factory=dict)


def run_experiment(
    preset: Preset,
    voc_dir: Path,
    out_dir: Path,
    *,
    model: nn.Module | Callable[[], nn.Module],
    train_split: str = "train",
    eval_split: str = "val",
    device: str | None = None,
    cache: bool = True,
    resume: bool = True,
    progress: bool = True,
    num_show: int = 6,
) -> dict[str, Any]:
    """Train ``model`` with ``preset``'s settings on ``train_split``, evaluate VOC07 mAP on
    ``eval_split`` and write every artefact into ``out_dir``; returns the metrics dict.

    ``model`` is the detector (the course's ``forward(images, gt_boxes)`` -> loss dict in train
    mode, ``inference`` in eval mode), or a function of no arguments that builds it.  A factory is
    called after the seed is set and the training images are loaded, the order the recorded runs
    used, so a preset and a seed give the same initialisation (and the same figures) every time.

    ``progress=False`` silences every progress bar; each long stage (caching,
    training, inference, evaluation) then prints one line when it starts and
    one when it ends, with its time, so that a log shows where the time went.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(preset.train.seed)
    train_set = VOCDetection(voc_dir, train_split, train=True)
    eval_set = VOCDetection(voc_dir, eval_split)
    stage = _Stages(preset.detector, quiet=not progress)
    with stage(f"loading {len(train_set)} {train_split} images" + (" into the cache" if cache else "")):
        loader = build_loader(train_set, preset.batch_size, cache=cache, device=device if cache else "cpu",
                              seed=preset.train.seed, uint8=cache, progress=progress)
    if not isinstance(model, nn.Module):
        model = model()
    started = time.perf_counter()
    with stage(f"training {preset.train.max_iters} iterations on {device}"):
        state = train_detector(model, loader, preset.train, device=device, checkpoint_path=out_dir / "checkpoint.pt",
                               resume=resume, model_config=asdict(preset), progress=progress)
    train_seconds = time.perf_counter() - started
    (out_dir / "loss_history.json").write_text(json.dumps(state.history))
    losses = {k: v for k, v in state.history.items() if k.startswith("loss") or k == "total"}
    _save(plot_loss_history(losses, title=f"{preset.detector} training losses"), out_dir / "loss_curve.png")

    started = time.perf_counter()
    with stage(f"inference on {len(eval_set)} {eval_split} images"):
        detections = predict_dataset(model, eval_set, score_thresh=preset.eval_score_thresh,
                                     nms_thresh=preset.eval_nms_thresh, batch_size=preset.batch_size, device=device,
                                     progress=progress)
    infer_seconds = time.perf_counter() - started
    save_detections(out_dir / "detections.pt", eval_set.image_ids, detections)
    export_voc_results(out_dir / "voc_results", eval_set.image_ids, detections, VOC_CLASSES, split=eval_split)
    with stage("VOC evaluation and plots"):
        ground_truths = [eval_set.ground_truth(i) for i in range(len(eval_set))]
        result: VOCEvalResult = evaluate_detections(detections, ground_truths, num_classes=len(VOC_CLASSES),
                                                    class_names=VOC_CLASSES, use_07_metric=True)
        all_point = evaluate_detections(detections, ground_truths, num_classes=len(VOC_CLASSES),
                                        class_names=VOC_CLASSES, use_07_metric=False)
    (out_dir / "ap_table.txt").write_text(result.table() + "\n")
    _save(plot_class_ap(result), out_dir / "class_ap.png")
    _save(plot_precision_recall(result), out_dir / "precision_recall.png")
    _save(_detections_figure(eval_set, detections, preset.show_thresh, num_show), out_dir / "detections.png")
    metrics = {
        "detector": preset.detector,
        "map_voc07": result.map,
        "map_all_point": all_point.map,
        "per_class_ap": {name: ap for name, ap in zip(result.class_names, result.ap.tolist()) if ap == ap},
        "iterations": state.iteration,
        "final_loss": final_loss(state.history),
        "train_seconds": train_seconds,
        "inference_seconds": infer_seconds,
        "inference_images_per_second": len(eval_set) / infer_seconds,
        "device": str(device),
        "train_images": len(train_set),
        "eval_images": len(eval_set),
        "eval_split": eval_split,
        "seed": preset.train.seed,
        "memory_format": "channels_last" if preset.train.channels_last else "contiguous",
        "fused_optimizer": preset.train.fused_optimizer,
        "torch_threads": torch.get_num_threads(),
        "machine": machine_description(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def machine_description() -> str:
    """"<CPU model>, <n> CPUs" (or the GPU's name): what a timing was measured on."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} CPUs"


class _Stages:
    """``with stage("training"):`` prints "[fcos] training ..." and "[fcos] training: done in 12 s".

    Only in quiet mode: with progress bars the bars already show each stage.
    """

    def __init__(self, name: str, quiet: bool):
        self.name, self.quiet = name, quiet

    @contextlib.contextmanager
    def __call__(self, what: str):
        started = time.perf_counter()
        if self.quiet:
            print(f"[{self.name}] {what} ...", flush=True)
        yield
        if self.quiet:
            print(f"[{self.name}] {what}: done in {time.perf_counter() - started:.1f} s", flush=True)


def _detections_figure(dataset: VOCDetection, detections, threshold: float, num: int) -> plt.Figure:
    """Predictions (score >= threshold) beside the ground truth for the first images."""
    num = min(num, len(dataset))
    fig, axes = plt.subplots(num, 2, figsize=(7, 3.4 * num), squeeze=False)
    for row in range(num):
        image_id, image, _ = dataset[row]
        det = detections[row]
        keep = det.scores >= threshold
        lb = dataset.letterboxes[row]
        # Detections are in original pixels; show them on the network input.
        scale = torch.tensor([lb.scale_x, lb.scale_y] * 2)
        truth = dataset.ground_truth(row)
        gt = torch.cat([truth.boxes * scale, truth.classes[:, None].float()], dim=1)
        plot_gt_vs_pred(image, gt, det.boxes[keep] * scale, det.classes[keep], det.scores[keep], axes=axes[row])
        axes[row][0].set_title(f"{image_id}: ground truth", fontsize=9)
    fig.tight_layout()
    return fig


def save_samples_figure(voc_dir: Path, split: str, path: Path, num: int = 8) -> None:
    """Write a grid of ``num`` images of ``split`` with their ground-truth boxes to ``path`` (a PNG)."""
    fig = plot_samples(VOCDetection(voc_dir, split), num=num)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
