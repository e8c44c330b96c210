"""Batched inference over a dataset, detections in original image pixels,
and saving/loading of detections (our format and the VOC devkit's)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from data_utils.atomic import atomic_torch_save
from data_utils.conventions import Detections
from data_utils.data.loaders import build_loader
from data_utils.data.voc import to_network_input
from data_utils.training.engine import autocast, autocast_dtype


@torch.inference_mode()
def predict_dataset(
    model: nn.Module,
    dataset,
    *,
    score_thresh: float = 0.3,
    nms_thresh: float = 0.5,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    amp: bool = True,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[Detections]:
    """Run ``model.inference`` over every image of ``dataset`` in order.

    Returns one :class:`Detections` per image (same order as the dataset), on
    the CPU, with boxes mapped back to *original image* pixels through
    ``dataset.to_original`` — the coordinates the evaluation uses.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    loader = build_loader(dataset, batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    results: list[Detections | None] = [None] * len(dataset)
    amp_dtype = autocast_dtype(device) if amp else None
    for image_ids, images, _ in tqdm(loader, desc="inference", disable=not progress, unit="batch"):
        with autocast(device, amp_dtype):
            outputs = model.inference(to_network_input(images, device), score_thresh=score_thresh,
                                      nms_thresh=nms_thresh)
        for image_id, det in zip(image_ids, outputs):
            index = index_of[image_id]
            boxes = dataset.to_original(det.boxes.float().cpu(), index)
            results[index] = Detections(boxes, det.scores.float().cpu(), det.classes.long().cpu())
    missing = [dataset.image_ids[i] for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"inference produced no result for {len(missing)} image(s), e.g. {missing[0]}")
    return results  # type: ignore[return-value]


def save_detections(path: str | os.PathLike, image_ids: Sequence[str], detections: Sequence[Detections]) -> Path:
    """Save detections (original pixels) with their image ids to a ``.pt`` file, atomically."""
    if len(image_ids) != len(detections):
        raise ValueError(f"{len(image_ids)} image ids but {len(detections)} detection sets")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": "detection-course/detections-v1", "image_ids": list(image_ids),
               "detections": [tuple(t.cpu() for t in d) for d in detections]}
    return atomic_torch_save(payload, path)


def load_detections(path: str | os.PathLike) -> tuple[list[str], list[Detections]]:
    """Inverse of :func:`save_detections`; clear errors for a wrong or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detections file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: unreadable detections file ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != "detection-course/detections-v1":
        raise ValueError(f"{path}: not a detections file written by save_detections")
    return payload["image_ids"], [Detections(*d) for d in payload["detections"]]


def export_voc_results(directory: str | os.PathLike, image_ids: Sequence[str], detections: Sequence[Detections],
                       class_names: Sequence[str], *, split: str = "val") -> list[Path]:
    """Write the VOC devkit's result files ``comp4_det_<split>_<class>.txt``
    (``image_id score xmin ymin xmax ymax`` with 1-based pixel corners), so the
    official MATLAB devkit can cross-check our evaluation."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines: dict[int, list[str]] = {c: [] for c in range(len(class_names))}
    for image_id, det in zip(image_ids, detections):
        for (x1, y1, x2, y2), score, cls in zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist()):
            lines[int(cls)].append(f"{image_id} {score:.6f} {x1 + 1:.1f} {y1 + 1:.1f} {x2:.1f} {y2:.1f}")
    paths = []
    for c, name in enumerate(class_names):
        path = directory / f"comp4_det_{split}_{name}.txt"
        path.write_text("\n".join(lines[c]) + ("\n" if lines[c] else ""))
        paths.append(path)
    return paths
