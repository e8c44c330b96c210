"""Plots of a :class:`data_utils.evaluation.voc_eval.VOCEvalResult` (matplotlib).

Both functions draw on ``ax`` when given, else on a new
:class:`matplotlib.figure.Figure` created *without* pyplot: nothing is
registered with pyplot, no backend is selected or forced, and nothing is ever
shown.  The figure is returned; in Jupyter it displays as the cell's value or
with ``display(fig)`` (it implements IPython's ``_repr_png_``, so this works
whatever the notebook's matplotlib backend), and ``fig.savefig("pr.png")``
works on any machine, headless ones included (Agg renders the PNG).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes

    from data_utils.evaluation.voc_eval import VOCEvalResult

__all__ = ["ReportFigure", "plot_precision_recall", "plot_class_ap"]


class ReportFigure(Figure):
    """A plain :class:`~matplotlib.figure.Figure` that IPython can show by itself.

    A figure made without pyplot only gets a PNG representation in Jupyter once
    the inline backend has been activated (``%matplotlib inline``); this one
    always has it, and is never shown twice because pyplot does not know it.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def _new_axes(figsize: tuple[float, float]) -> Axes:
    fig = ReportFigure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def _class_indices(result: VOCEvalResult, classes: Sequence[int | str] | None) -> list[int]:
    if classes is None:
        return [c for c in range(result.num_classes) if result.num_gt[c] > 0]
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in result.class_names:
                raise ValueError(f"unknown class {c!r}; known: {', '.join(result.class_names)}")
            out.append(result.class_names.index(c))
        else:
            i = int(c)
            if not 0 <= i < result.num_classes:
                raise ValueError(f"class index {c} outside [0, {result.num_classes})")
            out.append(i)
    return out


def plot_precision_recall(
    result: VOCEvalResult, classes: Sequence[int | str] | None = None, ax: Axes | None = None
) -> Figure:
    """One precision-recall curve per class, its AP in the legend.

    Args:
        result: what :func:`data_utils.evaluation.voc_eval.evaluate_detections` returned.
        classes: indices or names to draw; default: every class with ground
            truth.  A class without counted detections gets an empty curve
            (still listed in the legend with its AP).
        ax: axes to draw on; default: a new figure.

    Returns:
        The figure holding ``ax``; exactly one line per class is added.
    """
    indices = _class_indices(result, classes)
    if ax is None:
        ax = _new_axes((7.0, 5.5))
    from matplotlib import colormaps

    cmap = colormaps["tab20" if len(indices) > 10 else "tab10"]
    for n, c in enumerate(indices):
        ap = result.ap[c]
        ap_s = "no GT" if math.isnan(ap) else f"AP {100 * ap:.1f}"
        rec, prec = result.recall[c], result.precision[c]
        ax.plot(
            rec,
            prec,
            drawstyle="steps-post",
            color=cmap(n % cmap.N),
            linewidth=1.4,
            label=f"{result.class_names[c]} ({ap_s})",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"Precision-recall, IoU >= {result.iou_threshold:g} ({result.metric_name} AP)")
    ax.grid(True, alpha=0.3)
    if indices:
        ax.legend(fontsize="small", ncol=2 if len(indices) > 10 else 1, loc="lower left", framealpha=0.8)
    return ax.figure


def plot_class_ap(result: VOCEvalResult, ax: Axes | None = None) -> Figure:
    """Horizontal bars of per-class AP, best at the top, with the mAP as a vertical line.

    Classes without ground truth (AP ``NaN``) are listed at the bottom with an
    empty bar marked "no GT".  Exactly one bar per class and one line are added.
    """
    num = result.num_classes
    if ax is None:
        ax = _new_axes((6.5, max(2.5, 0.32 * num + 1.2)))
    ap = np.asarray(result.ap, dtype=np.float64)
    nan = np.isnan(ap)
    # bottom-to-top drawing order: NaN classes, then increasing AP (best on top)
    order = np.concatenate([np.flatnonzero(nan), np.flatnonzero(~nan)[np.argsort(ap[~nan], kind="stable")]])
    widths = np.where(nan[order], 0.0, ap[order])
    colors = ["lightgray" if nan[c] else "tab:blue" for c in order]
    ax.barh(np.arange(num), widths, color=colors, height=0.7)
    ax.set_yticks(np.arange(num), [result.class_names[c] for c in order])
    for y, c in enumerate(order):
        label = "no GT" if nan[c] else f"{100 * ap[c]:.1f}"
        ax.text(0.0 if nan[c] else ap[c], y, f" {label}", va="center", fontsize="small",
                color="gray" if nan[c] else "black")
    if not math.isnan(result.map):
        ax.axvline(result.map, color="tab:red", linestyle="--", linewidth=1.2, label=f"mAP {100 * result.map:.1f}")
        ax.legend(loc="lower right", fontsize="small")
    ax.set_xlim(0.0, 1.08)
    ax.set_ylim(-0.6, num - 0.4)
    ax.set_xlabel("average precision")
    ax.set_title(f"Per-class AP, IoU >= {result.iou_threshold:g} ({result.metric_name})")
    ax.grid(True, axis="x", alpha=0.3)
    return ax.figure
