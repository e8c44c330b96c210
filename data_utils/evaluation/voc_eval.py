"""PASCAL VOC detection mAP, exactly as the official devkit (``VOCevaldet.m``) defines it.

Why not the course's script
---------------------------
The original course wrote per-image text files and ran a third-party script
that skipped images without detections *together with their ground truth*
(inflating mAP) and scored detections on difficult objects as false positives
(the objects had been dropped from the data).  This module takes the ground
truth of every image, difficult flags included, and never skips an image.

Protocol (per class ``c``)
--------------------------
1. ``npos`` = number of non-difficult ground-truth boxes of class ``c`` over
   all images.
2. All detections of class ``c`` over all images are sorted by descending
   score.  The sort is *stable*: detections with equal scores keep their input
   order (image order first, then their order inside the image), as MATLAB's
   ``sort`` does for a results file listed in that order.
3. In that order, each detection takes the ground-truth box of its image and
   class with the largest IoU (the first such box on ties), whether or not that
   box was already matched.  If ``IoU >= iou_threshold`` (``>=`` as in the
   devkit; py-faster-rcnn and detectron2 use ``>``):

   * difficult box  -> the detection is *ignored* (neither TP nor FP);
   * unmatched box  -> true positive, the box becomes matched;
   * matched box    -> false positive (duplicate detection).

   Otherwise (IoU below the threshold, or no box of that class in the image)
   the detection is a false positive.
4. ``recall = cumTP / npos`` and ``precision = cumTP / (cumTP + cumFP)`` along
   the ranked list.  Ignored detections are left out of the list; the devkit
   keeps them as rows that add nothing, which changes neither maximum below.
5. VOC2007 AP (``use_07_metric=True``): the mean over ``t = 0, 0.1, ..., 1``
   of the largest precision at a recall ``>= t`` (0 when recall never reaches
   ``t``).  The thresholds are the devkit's own, MATLAB's ``0:0.1:1``, whose
   fourth value is ``3 * 0.1 = 0.30000000000000004`` (MATLAB's colon computes
   ``a + k*d`` for the first half and ``b - (n-k)*d`` for the second), so a
   recall of exactly 3/10 does *not* reach ``t = 0.3`` (a constructed case:
   AP 3/11 where exact decimals would give 4/11), while exactly 6/10 and
   7/10 do reach 0.6 and 0.7 (``np.arange(0, 1.1, 0.1)`` gives
   ``0.6000000000000001`` and ``0.7000000000000001`` there: not the devkit).
   VOC2010+ AP (``use_07_metric=False``): the area under the precision
   envelope (precision made non-increasing in recall), summed over the recall
   steps.

A class without non-difficult ground truth has AP ``NaN`` and is left out of
the mean.  A class whose detections all land on difficult objects has AP 0
(the devkit's MATLAB would produce ``NaN`` from ``max`` over ``0/0``).

Coordinates
-----------
Boxes are XYXY in *continuous* pixel coordinates: width is ``x2 - x1`` with no
"+1" (see ``data_utils.conventions`` and ``data_utils.types.GroundTruth``).  The
devkit adds 1 to widths and heights because its corners are inclusive integer
pixels, so its IoUs differ slightly from these (most for small boxes);
``data_utils.types.GroundTruth`` already holds the VOC corners converted to
continuous coordinates.  Two boxes without a positive-area intersection have
IoU 0.

Speed
-----
Everything is vectorised with numpy: one IoU per (detection, ground-truth box
of the same image and class) pair, a segmented arg-max per detection, and the
"first come, first served" rule expressed as "a detection is a TP iff it is the
highest-ranked detection whose best box is that box and passes the threshold".
This equals the sequential devkit loop because a detection's choice of box
never depends on which boxes are already matched.  2510 images and 15k
detections take a few milliseconds (``benchmarks/bench_voc_eval.py``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from data_utils.conventions import Detections
    from data_utils.types import GroundTruth

__all__ = ["VOCEvalResult", "evaluate_detections", "average_precision", "box_iou_pairs"]



def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop`` bit for bit (for ``step > 0``).

    MATLAB computes ``n = round((stop - start) / step)`` steps; element ``k``
    is ``start + k*step`` in the first half and ``stop - (n-k)*step`` in the
    second, and for even ``n`` the middle one is ``(start + stop) / 2``.
    """
    n = int(round((stop - start) / step))
    k = np.arange(n + 1, dtype=np.float64)
    out = np.where(k < n / 2, start + k * step, stop - (n - k) * step)
    if n % 2 == 0:
        out[n // 2] = (start + stop) / 2
    return out


#: Recall thresholds of the VOC2007 11-point metric: the devkit's ``0:0.1:1``
#: (``VOCevaldet.m``), so ``[3] == 0.30000000000000004`` and ``[6] == 0.6``.
RECALL_THRESHOLDS_07: np.ndarray = matlab_colon(0.0, 0.1, 1.0)


# --------------------------------------------------------------------------- #
# Result record
# --------------------------------------------------------------------------- #
@dataclass(repr=False, eq=False)
class VOCEvalResult:
    """Per-class VOC results (arrays are indexed by class, length ``C``).

    Attributes:
        class_names: ``C`` names.
        ap: ``(C,)`` float64 average precision, ``NaN`` for a class without
            non-difficult ground truth.
        map: mean of ``ap`` over the classes that have ground truth (``NaN`` if
            none has).
        precision, recall: ``C`` float64 arrays, the curve of each class along
            its ranked detections (ignored detections left out); empty when the
            class has no counted detection; recall is ``NaN`` when ``num_gt`` is 0.
        num_gt: ``(C,)`` non-difficult ground-truth boxes (the devkit's ``npos``).
        num_difficult: ``(C,)`` difficult ground-truth boxes.
        num_detections: ``(C,)`` detections given for the class (all of them).
        num_tp, num_fp, num_ignored: ``(C,)`` how the detections were scored;
            ``num_tp + num_fp + num_ignored == num_detections``.
        iou_threshold, use_07_metric, num_images: the settings and input size.
    """

    class_names: tuple[str, ...]
    ap: np.ndarray
    map: float
    precision: list[np.ndarray]
    recall: list[np.ndarray]
    num_gt: np.ndarray
    num_difficult: np.ndarray
    num_detections: np.ndarray
    num_tp: np.ndarray
    num_fp: np.ndarray
    num_ignored: np.ndarray
    iou_threshold: float = 0.5
    use_07_metric: bool = True
    num_images: int = 0

    @property
    def metric_name(self) -> str:
        return "VOC07 11-point" if self.use_07_metric else "all-point"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def table(self, digits: int = 4) -> str:
        """A readable per-class table (AP in %, counts) ending with the mAP line."""
        name_w = max([len("class"), len("mAP"), *(len(n) for n in self.class_names)])
        header = (
            f"{'class':<{name_w}}  {'AP %':>8}  {'GT':>6}  {'diff':>5}  "
            f"{'dets':>7}  {'TP':>6}  {'FP':>7}  {'ign':>5}  {'recall':>6}"
        )
        lines = [
            f"VOC AP ({self.metric_name}, IoU >= {self.iou_threshold:g}, {self.num_images} images)",
            header,
            "-" * len(header),
        ]
        pct = max(digits - 2, 0)
        for c, name in enumerate(self.class_names):
            ap = self.ap[c]
            ap_s = "no GT" if math.isnan(ap) else f"{100 * ap:.{pct}f}"
            rec = self.recall[c]
            rec_s = "-" if self.num_gt[c] == 0 else f"{(rec[-1] if rec.size else 0.0):.3f}"
            lines.append(
                f"{name:<{name_w}}  {ap_s:>8}  {self.num_gt[c]:>6d}  {self.num_difficult[c]:>5d}  "
                f"{self.num_detections[c]:>7d}  {self.num_tp[c]:>6d}  {self.num_fp[c]:>7d}  "
                f"{self.num_ignored[c]:>5d}  {rec_s:>6}"
            )
        lines.append("-" * len(header))
        map_s = "n/a" if math.isnan(self.map) else f"{100 * self.map:.{pct}f}"
        lines.append(
            f"{'mAP':<{name_w}}  {map_s:>8}  {int(self.num_gt.sum()):>6d}  {int(self.num_difficult.sum()):>5d}  "
            f"{int(self.num_detections.sum()):>7d}  {int(self.num_tp.sum()):>6d}  {int(self.num_fp.sum()):>7d}  "
            f"{int(self.num_ignored.sum()):>5d}"
        )
        return "\n".join(lines)

    def to_dict(self, include_curves: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary; ``NaN`` becomes ``None`` (strict JSON has no NaN)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        out: dict[str, Any] = {
            "metric": self.metric_name,
            "iou_threshold": float(self.iou_threshold),
            "use_07_metric": bool(self.use_07_metric),
            "num_images": int(self.num_images),
            "map": num(self.map),
            "per_class": {
                name: {
                    "ap": num(self.ap[c]),
                    "num_gt": int(self.num_gt[c]),
                    "num_difficult": int(self.num_difficult[c]),
                    "num_detections": int(self.num_detections[c]),
                    "num_tp": int(self.num_tp[c]),
                    "num_fp": int(self.num_fp[c]),
                    "num_ignored": int(self.num_ignored[c]),
                }
                for c, name in enumerate(self.class_names)
            },
        }
        if include_curves:
            for c, name in enumerate(self.class_names):
                out["per_class"][name]["precision"] = [float(v) for v in self.precision[c]]
                out["per_class"][name]["recall"] = [num(v) for v in self.recall[c]]
        return out

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        map_s = "nan" if math.isnan(self.map) else f"{self.map:.4f}"
        return (
            f"VOCEvalResult(map={map_s}, metric={self.metric_name!r}, iou_threshold={self.iou_threshold:g}, "
            f"classes={self.num_classes}, images={self.num_images}, detections={int(self.num_detections.sum())})"
        )


# --------------------------------------------------------------------------- #
# Input conversion and validation
# --------------------------------------------------------------------------- #
def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor cannot exist unless torch is imported
    return torch is not None and isinstance(x, torch.Tensor)


_MISSING = object()


def _fields(record: Any, names: tuple[str, str, str], where: str) -> tuple[Any, Any, Any]:
    """The three arrays of a record: by attribute name, else a plain 3-sequence by position."""
    first = getattr(record, names[0], _MISSING)
    if first is not _MISSING:
        second = getattr(record, names[1], _MISSING)
        third = getattr(record, names[2], _MISSING)
        if second is not _MISSING and third is not _MISSING:
            return first, second, third
    elif isinstance(record, (tuple, list)) and len(record) == 3:
        return record[0], record[1], record[2]
    raise ValueError(
        f"{where}: expected a record with fields {', '.join(names)} (a named tuple such as "
        f"Detections/GroundTruth, or a 3-tuple in that order), got {type(record).__name__}"
    )


def _shape(x: Any, where: str) -> tuple[int, ...]:
    try:
        return tuple(x.shape)
    except AttributeError:
        pass
    try:
        return np.shape(x)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like: re-raised as ValueError
        raise ValueError(f"{where}: cannot read an array from {type(x).__name__} ({exc})") from None


def _to_numpy(x: Any) -> np.ndarray:
    """One array, tensor (any device) or list -> numpy on the CPU (floats become float64)."""
    if _is_tensor(x):
        torch = sys.modules["torch"]
        x = x.detach()
        if x.is_floating_point():
            return x.to(device="cpu", dtype=torch.float64).numpy()
        return x.cpu().numpy()
    return np.asarray(x)


#: On the CPU, ``torch.cat`` of thousands of tiny per-image tensors is only fast
#: on its serial kernel, which it skips when an input is empty or the output has
#: more than ``at::internal::GRAIN_SIZE`` (32768) elements (it then goes
#: multi-threaded, and on a busy 2-core machine the threads wait for each other
#: for milliseconds).  So empty inputs are dropped and chunks stay below that size.
_CAT_CHUNK_ELEMS = 16384


def _cat_tensors(torch: Any, parts: list[Any], offsets: np.ndarray, width: int) -> np.ndarray:
    """Tensors of one device -> one flat numpy array on the CPU."""
    if parts[0].device.type != "cpu":
        return torch.cat(parts).cpu().numpy().reshape(-1)  # one kernel on the GPU, one transfer
    counts = np.diff(offsets)
    keep = np.flatnonzero(counts > 0)
    if keep.size == 0:
        return torch.cat(parts).numpy().reshape(-1)
    if keep.size < len(parts):
        parts = [parts[i] for i in keep]
        offsets = np.concatenate([[0], np.cumsum(counts[keep])])
    rows = max(1, _CAT_CHUNK_ELEMS // width)
    cuts = np.searchsorted(offsets, np.arange(rows, int(offsets[-1]), rows), side="right") - 1
    bounds = [0, *sorted(set(int(c) for c in cuts) - {0}), len(parts)]
    chunks = []
    for i, j in zip(bounds[:-1], bounds[1:]):
        if j > i:
            t = torch.cat(parts[i:j])
            if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
                t = t.double()  # bfloat16 and friends have no numpy dtype
            chunks.append(t.numpy().reshape(-1))
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _concat(parts: list[Any], float64: bool, offsets: np.ndarray, width: int = 1) -> np.ndarray:
    """Concatenate per-image arrays/tensors (rows along dim 0) into one flat numpy array on the CPU.

    Floats become float64 (and everything when ``float64``).  All-tensor input
    on one device takes a few ``torch.cat`` (a per-image ``.cpu().numpy()``
    would dominate the run time); anything else goes through numpy.
    """
    torch = sys.modules.get("torch")
    out = None
    if parts and torch is not None and all(isinstance(p, torch.Tensor) for p in parts):
        try:
            with torch.no_grad():
                out = _cat_tensors(torch, parts, offsets, width)
        except (RuntimeError, TypeError, ValueError):  # several devices, odd empty shapes
            out = None
    if out is None:
        arrays = [_to_numpy(p).reshape(-1) for p in parts]
        if not arrays:
            return np.zeros((0,), np.float64 if float64 else np.int64)
        out = np.concatenate(arrays)
    if float64 or np.issubdtype(out.dtype, np.floating):
        return out.astype(np.float64, copy=False)
    return out


def _fmt(value: Any) -> str:
    """A numpy scalar as plain Python would print it (``1.5``, not ``np.float64(1.5)``)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _locate(row: int, offsets: np.ndarray) -> tuple[int, int]:
    """Global row -> (image index, row inside the image)."""
    image = int(np.searchsorted(offsets, row, side="right") - 1)
    return image, row - int(offsets[image])


def _as_classes(values: np.ndarray, num_classes: int, offsets: np.ndarray, what: str) -> np.ndarray:
    if values.dtype == np.bool_:
        raise ValueError(f"{what}: classes must be integers in [0, {num_classes}), got a bool array")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"{what}: classes must be integers, got dtype {values.dtype}")
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            row = _first_bad(bad)
            image, r = _locate(row, offsets)
            raise ValueError(f"{what}[{image}]: class of row {r} is {_fmt(values[row])}, not a whole number")
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        row = _first_bad(bad)
        image, r = _locate(row, offsets)
        raise ValueError(
            f"{what}[{image}]: class of row {r} is {_fmt(values[row])}, outside [0, {num_classes}) "
            f"(classes are object classes 0..{num_classes - 1}; background is not a class)"
        )
    return values.astype(np.int64)


def _check_boxes(boxes: np.ndarray, offsets: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        row = _first_bad(bad)
        image, r = _locate(row, offsets)
        raise ValueError(f"{what}[{image}]: box {r} is not finite: {boxes[row].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = _first_bad(bad)
        image, r = _locate(row, offsets)
        raise ValueError(
            f"{what}[{image}]: box {r} = {boxes[row].tolist()} has x2 < x1 or y2 < y1 "
            "(boxes must be XYXY: x1, y1, x2, y2)"
        )


def _shape_error(what: str, i: int, names: tuple[str, str, str], s0: Any, s1: Any, s2: Any) -> ValueError:
    if len(s1) != 1:
        return ValueError(f"{what}[{i}]: {names[1]} must have shape (K,), got {tuple(s1)}")
    k = s1[0]
    if len(s2) != 1 or s2[0] != k:
        return ValueError(f"{what}[{i}]: {names[2]} must have shape ({k},) like {names[1]}, got {tuple(s2)}")
    return ValueError(f"{what}[{i}]: {names[0]} must have shape ({k}, 4) to match {names[1]}, got {tuple(s0)}")


def _gather(
    records: Sequence[Any], names: tuple[str, str, str], what: str
) -> tuple[list[list[Any]], np.ndarray]:
    """Per-image fields with shape checks -> (three lists of parts, row offsets (n+1,)).

    This is the only per-image Python code, so it is kept lean: named tuples
    of one type with exactly these fields are transposed with ``zip``.
    """
    n0, n1, n2 = names
    kind = type(records[0]) if records else None
    if kind is not None and getattr(kind, "_fields", None) == names and all(type(r) is kind for r in records):
        col0, col1, col2 = (list(col) for col in zip(*records))
    else:
        col0, col1, col2 = [], [], []
        for i, rec in enumerate(records):
            try:
                fields = getattr(rec, n0), getattr(rec, n1), getattr(rec, n2)
            except AttributeError:
                fields = _fields(rec, names, f"{what}[{i}]")
            col0.append(fields[0])
            col1.append(fields[1])
            col2.append(fields[2])
    try:
        sh0 = [x.shape for x in col0]
        sh1 = [x.shape for x in col1]
        sh2 = [x.shape for x in col2]
    except AttributeError:  # lists and the like
        sh0 = [_shape(x, f"{what}[{i}].{n0}") for i, x in enumerate(col0)]
        sh1 = [_shape(x, f"{what}[{i}].{n1}") for i, x in enumerate(col1)]
        sh2 = [_shape(x, f"{what}[{i}].{n2}") for i, x in enumerate(col2)]
    try:
        counts = [k for (k,) in sh1]
    except ValueError:  # not 1-D
        counts = [s[0] if len(s) == 1 else -1 for s in sh1]
    for i in [i for i, (s0, s1, s2) in enumerate(zip(sh0, sh1, sh2)) if len(s1) != 1 or s2 != s1 or s0 != (s1[0], 4)]:
        s0, s1, s2 = sh0[i], sh1[i], sh2[i]
        if len(s1) != 1 or s2 != s1 or not (s1[0] == 0 and math.prod(s0) == 0):
            raise _shape_error(what, i, names, s0, s1, s2)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    if records:
        np.cumsum(np.asarray(counts, dtype=np.int64), out=offsets[1:])
    return [col0, col1, col2], offsets


# --------------------------------------------------------------------------- #
# Core computations (the two helpers are public: notebooks may use them)
# --------------------------------------------------------------------------- #
def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row-aligned pairs: ``(P, 4)`` and ``(P, 4)`` XYXY float64 -> ``(P,)``.

    Continuous coordinates (no +1); pairs without a positive-area intersection,
    and degenerate pairs with an empty union, have IoU 0.
    """
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    overlap = (iw > 0) & (ih > 0)
    inter = np.where(overlap, iw * ih, 0.0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=overlap & (union > 0))
    return out


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """AP of one ranked list (``recall`` non-decreasing); see the module docstring.

    An empty list has AP 0.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at rank >= i
    if use_07_metric:
        idx = np.searchsorted(recall, RECALL_THRESHOLDS_07, side="left")  # first rank with recall >= t
        vals = np.where(idx < recall.size, envelope[np.minimum(idx, recall.size - 1)], 0.0)
        return float(vals.sum() / RECALL_THRESHOLDS_07.size)
    steps = np.diff(recall, prepend=0.0)
    return float(np.sum(steps * envelope))


def evaluate_detections(
    detections: Sequence[Detections],
    ground_truths: Sequence[GroundTruth],
    num_classes: int = 20,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> VOCEvalResult:
    """PASCAL VOC average precision per class and mAP (the devkit's protocol).

    Args:
        detections: one record per image with ``boxes (K, 4)`` XYXY,
            ``scores (K,)`` and ``classes (K,)`` in ``[0, num_classes)``
            (``data_utils.conventions.Detections``, or any 3-tuple in that order).
        ground_truths: one ``data_utils.types.GroundTruth`` per image, the
            same images in the same order: ``boxes (G, 4)``, ``classes (G,)``,
            ``difficult (G,)`` bool.  Images without detections or without
            ground truth must still be listed: none is ever skipped.
        num_classes: ``C``.
        class_names: ``C`` names; default: the VOC names when ``C == 20``,
            else ``class_0 ...``.
        iou_threshold: a detection matches a box when ``IoU >= iou_threshold``
            (``>=`` as in the official devkit, py-faster-rcnn uses ``>``); in
            ``(0, 1]``.
        use_07_metric: VOC2007 11-point AP (default) or, if False, the
            all-point area of VOC2010+.

    Boxes are continuous coordinates (width ``x2 - x1``, no "+1 pixel").
    Tensors on any device, numpy arrays and lists are accepted, in any real
    dtype (computations are float64 on the CPU); nothing is modified.
    Detections with equal scores are ranked in input order (stable sort: image
    order, then order inside the image).

    Raises:
        ValueError: naming the image and the problem, when the two sequences
            differ in length, an array has the wrong shape, a class is out of
            range or not whole, or a box or score is not finite or a box is not
            XYXY (``x2 < x1`` or ``y2 < y1``).
    """
    # ---- arguments -------------------------------------------------------
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    if class_names is None:
        if num_classes == 20:
            from data_utils.data.voc import VOC_CLASSES

            names = tuple(VOC_CLASSES)
        else:
            names = tuple(f"class_{c}" for c in range(num_classes))
    else:
        names = tuple(str(n) for n in class_names)
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names but num_classes is {num_classes}")
    try:
        thr = float(iou_threshold)
    except (TypeError, ValueError):
        raise ValueError(f"iou_threshold must be a number in (0, 1], got {iou_threshold!r}") from None
    if not 0.0 < thr <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if isinstance(detections, (str, bytes)) or isinstance(ground_truths, (str, bytes)):
        raise ValueError("detections and ground_truths must be sequences of per-image records")
    detections = list(detections)
    ground_truths = list(ground_truths)
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"got detections for {len(detections)} images but ground truth for {len(ground_truths)}: "
            "pass one record per image, the same images in the same order (empty ones included)"
        )
    num_images = len(detections)

    # ---- gather, convert, validate -----------------------------------------
    (d_boxes_p, d_scores_p, d_cls_p), d_off = _gather(detections, ("boxes", "scores", "classes"), "detections")
    (g_boxes_p, g_cls_p, g_diff_p), g_off = _gather(ground_truths, ("boxes", "classes", "difficult"), "ground_truths")

    d_boxes = _concat(d_boxes_p, True, d_off, 4).reshape(-1, 4)
    d_scores = _concat(d_scores_p, True, d_off)
    d_raw_cls = _concat(d_cls_p, False, d_off)
    g_boxes = _concat(g_boxes_p, True, g_off, 4).reshape(-1, 4)
    g_raw_cls = _concat(g_cls_p, False, g_off)
    g_raw_diff = _concat(g_diff_p, False, g_off)

    _check_boxes(d_boxes, d_off, "detections")
    bad = ~np.isfinite(d_scores)
    if bad.any():
        row = _first_bad(bad)
        image, r = _locate(row, d_off)
        raise ValueError(f"detections[{image}]: score {r} is not finite ({_fmt(d_scores[row])})")
    d_cls = _as_classes(d_raw_cls, num_classes, d_off, "detections")
    _check_boxes(g_boxes, g_off, "ground_truths")
    g_cls = _as_classes(g_raw_cls, num_classes, g_off, "ground_truths")
    if g_raw_diff.dtype != np.bool_:
        if not np.issubdtype(g_raw_diff.dtype, np.number):
            raise ValueError(f"ground_truths: difficult flags must be bool or 0/1, got dtype {g_raw_diff.dtype}")
        bad = (g_raw_diff != 0) & (g_raw_diff != 1)
        if bad.any():
            row = _first_bad(bad)
            image, r = _locate(row, g_off)
            raise ValueError(f"ground_truths[{image}]: difficult flag {r} is {_fmt(g_raw_diff[row])}, not bool or 0/1")
    g_diff = g_raw_diff.astype(bool)

    n_det = d_scores.size
    d_img = np.repeat(np.arange(num_images, dtype=np.int64), np.diff(d_off))
    g_img = np.repeat(np.arange(num_images, dtype=np.int64), np.diff(g_off))

    # ---- best ground-truth box of each detection (same image, same class) ---
    g_key = g_img * num_classes + g_cls
    g_order = np.argsort(g_key, kind="stable")  # keeps annotation order inside a group (tie-break)
    g_key_sorted = g_key[g_order]
    d_key = d_img * num_classes + d_cls
    start = np.searchsorted(g_key_sorted, d_key, side="left")
    count = np.searchsorted(g_key_sorted, d_key, side="right") - start

    best_gt = np.full(n_det, -1, dtype=np.int64)
    best_iou = np.zeros(n_det, dtype=np.float64)
    has = count > 0
    if has.any():
        cnt = count[has]
        seg = np.zeros(cnt.size, dtype=np.int64)
        np.cumsum(cnt[:-1], out=seg[1:])
        total = int(cnt.sum())
        pair_det = np.repeat(np.flatnonzero(has), cnt)
        within = np.arange(total, dtype=np.int64) - np.repeat(seg, cnt)
        pair_gt = g_order[np.repeat(start[has], cnt) + within]
        iou = box_iou_pairs(d_boxes[pair_det], g_boxes[pair_gt])
        seg_max = np.maximum.reduceat(iou, seg)
        first = np.where(iou == np.repeat(seg_max, cnt), np.arange(total), total)
        first = np.minimum.reduceat(first, seg)  # first box reaching the max: devkit tie-break
        best_gt[has] = pair_gt[first]
        best_iou[has] = seg_max

    # ---- TP / FP / ignored ---------------------------------------------------
    rank_order = np.argsort(-d_scores, kind="stable")  # descending score, ties in input order
    hit = has & (best_iou >= thr)
    ignored = np.zeros(n_det, dtype=bool)
    ignored[hit] = g_diff[best_gt[hit]]
    candidate = hit & ~ignored
    tp = np.zeros(n_det, dtype=bool)
    cand_ranked = rank_order[candidate[rank_order]]
    if cand_ranked.size:
        _, first_pos = np.unique(best_gt[cand_ranked], return_index=True)  # first claim of each box wins
        tp[cand_ranked[first_pos]] = True

    # ---- per-class curves and AP ---------------------------------------------
    counted_ranked = rank_order[~ignored[rank_order]]
    by_class = counted_ranked[np.argsort(d_cls[counted_ranked], kind="stable")]
    cls_bounds = np.searchsorted(d_cls[by_class], np.arange(num_classes + 1), side="left")
    tp_sorted = tp[by_class]

    num_gt = np.bincount(g_cls[~g_diff], minlength=num_classes).astype(np.int64)
    num_difficult = np.bincount(g_cls[g_diff], minlength=num_classes).astype(np.int64)
    num_dets = np.bincount(d_cls, minlength=num_classes).astype(np.int64)
    num_tp = np.bincount(d_cls[tp], minlength=num_classes).astype(np.int64)
    num_ign = np.bincount(d_cls[ignored], minlength=num_classes).astype(np.int64)
    num_fp = num_dets - num_tp - num_ign

    ap = np.full(num_classes, np.nan, dtype=np.float64)
    precisions: list[np.ndarray] = []
    recalls: list[np.ndarray] = []
    for c in range(num_classes):
        flags = tp_sorted[cls_bounds[c] : cls_bounds[c + 1]]
        ctp = np.cumsum(flags, dtype=np.int64)
        prec = ctp / np.arange(1, flags.size + 1, dtype=np.float64)
        if num_gt[c] > 0:
            rec = ctp / float(num_gt[c])
            ap[c] = average_precision(rec, prec, use_07_metric)
        else:
            rec = np.full(flags.size, np.nan)
        precisions.append(prec)
        recalls.append(rec)

    valid = num_gt > 0
    mean_ap = float(ap[valid].mean()) if valid.any() else float("nan")
    return VOCEvalResult(
        class_names=names,
        ap=ap,
        map=mean_ap,
        precision=precisions,
        recall=recalls,
        num_gt=num_gt,
        num_difficult=num_difficult,
        num_detections=num_dets,
        num_tp=num_tp,
        num_fp=num_fp,
        num_ignored=num_ign,
        iou_threshold=thr,
        use_07_metric=bool(use_07_metric),
        num_images=num_images,
    )
