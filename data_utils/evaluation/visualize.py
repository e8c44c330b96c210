"""Pictures of images, boxes and training curves (matplotlib; nothing is shown
or saved unless asked: every function returns its Figure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from data_utils.conventions import PADDING
from data_utils.data.voc import VOC_CLASSES, denormalize


def class_color(class_id: int) -> tuple[float, float, float]:
    """A fixed, distinct colour per class (tab20)."""
    return matplotlib.colormaps["tab20"](int(class_id) % 20)[:3]


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3,H,W)`` normalised float, ``(3,H,W)`` uint8 or ``(H,W,3)`` array -> ``(H,W,3)`` for imshow."""
    if isinstance(image, np.ndarray):
        return image
    image = image.detach().cpu()
    if image.dtype == torch.uint8:
        return image.permute(1, 2, 0).numpy()
    return denormalize(image.float()).permute(1, 2, 0).numpy()


def draw_boxes(ax: Axes, boxes: torch.Tensor | np.ndarray, classes: Sequence[int] | torch.Tensor | None = None,
               scores: Sequence[float] | torch.Tensor | None = None, *, class_names: Sequence[str] = VOC_CLASSES,
               linestyle: str = "-", linewidth: float = 1.5, fontsize: float = 7) -> None:
    """Draw XYXY ``boxes`` (rows with class == -1 padding are skipped) with
    class names and, when given, scores."""
    boxes = torch.as_tensor(boxes).detach().cpu().float().reshape(-1, boxes.shape[-1] if len(boxes) else 4)
    if classes is None and boxes.shape[1] == 5:
        classes = boxes[:, 4]
    classes_t = torch.as_tensor(classes).cpu() if classes is not None else None
    scores_t = torch.as_tensor(scores).cpu() if scores is not None else None
    for i, (x1, y1, x2, y2) in enumerate(boxes[:, :4].tolist()):
        cls = int(classes_t[i]) if classes_t is not None else None
        if cls is not None and cls == int(PADDING):
            continue
        color = class_color(cls) if cls is not None else (1.0, 1.0, 0.0)
        ax.add_patch(mpatches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                        linewidth=linewidth, linestyle=linestyle))
        label = class_names[cls] if cls is not None and 0 <= cls < len(class_names) else ""
        if scores_t is not None:
            label = f"{label} {float(scores_t[i]):.2f}".strip()
        if label:
            ax.text(x1, y1, label, fontsize=fontsize, color="white", va="bottom",
                    bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"})


def show_detections(image: torch.Tensor | np.ndarray, boxes: torch.Tensor | np.ndarray,
                    classes: Sequence[int] | torch.Tensor | None = None,
                    scores: Sequence[float] | torch.Tensor | None = None, *, title: str | None = None,
                    ax: Axes | None = None, class_names: Sequence[str] = VOC_CLASSES) -> Figure:
    """One image with its boxes, class names and scores."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4, 4))
    ax.imshow(to_display(image))
    draw_boxes(ax, boxes, classes, scores, class_names=class_names)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_samples(dataset, indices: Sequence[int] | None = None, *, num: int = 8, cols: int = 4) -> Figure:
    """A grid of dataset items (``(id, image, gt_boxes)``) with their target boxes."""
    indices = list(range(min(num, len(dataset)))) if indices is None else list(indices)
    rows = max(1, -(-len(indices) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, index in zip(axes.flat, indices):
        image_id, image, gt = dataset[index]
        show_detections(image, gt, ax=ax, title=str(image_id), class_names=dataset.class_names)
    fig.tight_layout()
    return fig


def plot_gt_vs_pred(image: torch.Tensor | np.ndarray, gt_boxes: torch.Tensor, pred_boxes: torch.Tensor,
                    pred_classes: torch.Tensor, pred_scores: torch.Tensor, *, title: str | None = None,
                    class_names: Sequence[str] = VOC_CLASSES, axes: Sequence[Axes] | None = None) -> Figure:
    """Ground truth (left) beside predictions with scores (right)."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    else:
        fig = axes[0].figure
    show_detections(image, gt_boxes, ax=axes[0], title="ground truth", class_names=class_names)
    show_detections(image, pred_boxes, pred_classes, pred_scores, ax=axes[1],
                    title=f"predictions ({len(pred_boxes)})", class_names=class_names)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_loss_history(history: Mapping[str, Sequence[float]], *, smooth: int = 20, ax: Axes | None = None,
                      title: str = "training losses") -> Figure:
    """Loss curves (raw, faint) with a moving average of ``smooth`` iterations."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    for i, (name, values) in enumerate(history.items()):
        values = np.asarray(values, dtype=float)
        if values.size == 0:
            continue
        color = f"C{i}"
        ax.plot(values, color=color, alpha=0.25, linewidth=0.8)
        if values.size >= smooth > 1:
            kernel = np.ones(smooth) / smooth
            ax.plot(np.arange(smooth - 1, values.size), np.convolve(values, kernel, mode="valid"), color=color, label=name)
        else:
            ax.plot(values, color=color, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
