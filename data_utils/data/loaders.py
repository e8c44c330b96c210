"""DataLoader factory for detection splits (JPEG decoding or cached tensors)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader

from data_utils.data.cache import Batch, CachedLoader, CachedVOC
from data_utils.data.voc import VOCDetection


def collate_detection(items: Sequence[tuple[str, torch.Tensor, torch.Tensor]]) -> Batch:
    """``[(id, image (3,S,S), gt (M,5)), ...]`` -> ``(ids, images (B,3,S,S), gt (B,M,5))``."""
    ids, images, targets = zip(*items)
    return list(ids), torch.stack(images), torch.stack(targets)


def default_num_workers() -> int:
    """Leave one core to the main process; at most 4 workers (decoding is cheap)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def build_loader(
    dataset: VOCDetection | CachedVOC,
    batch_size: int = 16,
    *,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    num_workers: int | None = None,
    cache: bool = False,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    uint8: bool = False,
    progress: bool = True,
) -> Iterable[Batch]:
    """A loader yielding ``(image_ids, images, gt_boxes)`` batches.

    Defaults follow the split: a training dataset (``dataset.train``) is
    shuffled and drops its last partial batch; an evaluation one is read in
    order, completely.  ``cache=True`` (or passing a :class:`CachedVOC`)
    serves batches from a uint8 tensor cache, on ``device`` when given;
    otherwise JPEGs are decoded by ``num_workers`` worker processes.
    ``seed`` makes the shuffling order reproducible.  ``uint8=True`` (cache
    only) yields unnormalised uint8 images for
    :func:`data_utils.data.voc.to_network_input` to normalise on the model's
    device, as :func:`data_utils.training.engine.train_detector` does.
    """
    shuffle = dataset.train if shuffle is None else shuffle
    drop_last = dataset.train if drop_last is None else drop_last
    if cache and isinstance(dataset, VOCDetection):
        dataset = CachedVOC(dataset, device=device, progress=progress)
    if isinstance(dataset, CachedVOC):
        return CachedLoader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, uint8=uint8)
    if uint8:
        raise ValueError("uint8=True needs the tensor cache: pass cache=True (or a CachedVOC)")
    workers = default_num_workers() if num_workers is None else num_workers
    generator = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
        collate_fn=collate_detection, pin_memory=torch.cuda.is_available(), generator=generator,
        persistent_workers=workers > 0,
    )
