"""FCOS learns: it overfits a small fixed batch of the embedded offline dataset
and then detects the objects of that batch.

Setup (calibrated on the 2-core CPU, see the constants): the first 8 training
images of a small embedded dataset (no flips, so the batch is fixed), FCOS
with FPN 64 and stem [64, 64], ``weights=None``, AdamW lr 1e-3, 70 full-batch
iterations, seed 0, one intra-op thread.  The loss normalizer is set to the
batch's positives per image before training: the batch never changes, so the
EMA stays put and the loss curve reflects learning only (from 150, the EMA
alone would triple the losses over the first 30 iterations).

Why one thread: the trajectory depends on the thread count (float reduction
order), so pinning it makes the calibration hold on any machine; and on a
shared 2-core machine two threads ran 5x slower than one (365 s against 75 s
for 80 iterations), because a parallel region waits for its slowest thread.
One thread took ~0.95 s per iteration here: 76 s for the whole file.

What it can and cannot catch.  A training loss on a fixed batch measures
memorisation, and a consistent permutation of the targets is memorised as
fast as the right ones: with transposed locations (the course notebook's bug)
the loss after 60 iterations was 1.12 against 1.21 for the correct model.
That bug is caught by the location/flattening tests instead.  The detection
check after training does catch decoding bugs, shown here by decoding the
trained model's predictions with transposed locations and with the levels
in the wrong order (no retraining needed).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch
import torchvision

import solutions.fcos as fcos_module
from solutions.fcos import FCOS

pytestmark = pytest.mark.slow

NUM_IMAGES = 8
ITERATIONS = 70
LEARNING_RATE = 1e-3
#: Mean loss of the last 5 iterations must be below this.  Calibration runs
#: (seed 0): 5.39 at iteration 0; last 5 of 70 iterations 1.19 (1 thread);
#: of 80 iterations 1.10 (1 thread) and 1.18 (2 threads); single iterations
#: 60-100 ranged 0.95-1.44.
LOSS_THRESHOLD = 1.6
#: Objects found among each image's top-k detections (k = its number of
#: objects, IoU >= 0.5, right class), out of the 16 objects of the 8 images.
#: Calibration: 13 after 70 iterations (1 thread); after 80, 13 (1 thread)
#: and 10 (2 threads); 10 after 60.  Decoding the same weights with
#: transposed locations: 2-3; with the levels reversed: 0-1.  The two bounds
#: sit between the two groups.
MIN_FOUND = 7
BROKEN_MAX_FOUND = 5


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixed_batch(tmp_path_factory):
    from data_utils.data.synthetic import ensure_embedded_dataset
    from data_utils.data.voc import VOCDetection

    voc = ensure_embedded_dataset(tmp_path_factory.mktemp("embedded"), num_train=16, num_val=1, num_test=1)
    dataset = VOCDetection(voc, "train", train=False)  # no random flips: a fixed batch
    items = [dataset[i] for i in range(NUM_IMAGES)]
    images = torch.stack([image for _, image, _ in items])
    gt_boxes = torch.stack([gt for _, _, gt in items])
    return images, gt_boxes


@pytest.fixture(scope="module")
def overfit_model(fixed_batch):
    images, gt_boxes = fixed_batch
    with one_thread():
        torch.manual_seed(0)
        model = FCOS(num_classes=20, fpn_channels=64, stem_channels=[64, 64], weights=None).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
        with torch.no_grad():
            model.normalizer.fill_(model(images, gt_boxes)["num_pos"].item())
        history = []
        started = time.perf_counter()
        for _ in range(ITERATIONS):
            losses = model(images, gt_boxes)
            total = sum(v for k, v in losses.items() if k.startswith("loss_"))
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()} | {"total": total.item()})
        seconds = time.perf_counter() - started
        with torch.no_grad():  # settle the batch-norm running statistics on the final weights
            for _ in range(2):
                model(images, gt_boxes)
    model.eval()
    return model, history, seconds


def found_in_top_k(detections, gt_boxes, iou_threshold: float = 0.5) -> tuple[int, int]:
    """(objects found, objects) where each image's k best detections (k = its number of
    objects) may each find one object of their class with IoU >= ``iou_threshold``."""
    found = total = 0
    for det, gt in zip(detections, gt_boxes):
        gt = gt[gt[:, 4] >= 0]
        total += len(gt)
        boxes, classes = det.boxes[: len(gt)], det.classes[: len(gt)]
        if len(boxes) == 0:
            continue
        overlap = torchvision.ops.box_iou(boxes, gt[:, :4]) * (classes[:, None] == gt[None, :, 4].long())
        used: set[int] = set()
        for row in overlap:  # by decreasing score
            j = int(row.argmax())
            if row[j] >= iou_threshold and j not in used:
                used.add(j)
                found += 1
    return found, total


def test_fcos_overfits_a_fixed_batch(overfit_model):
    _, history, seconds = overfit_model
    first, last = history[0], history[-5:]
    mean_last = sum(h["total"] for h in last) / len(last)
    print(f"\n{ITERATIONS} iterations in {seconds:.1f} s; loss {first['total']:.3f} -> {mean_last:.3f} "
          f"(cls {last[-1]['loss_cls']:.3f}, box {last[-1]['loss_box']:.3f}, ctr {last[-1]['loss_ctr']:.3f})")
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in history)
    assert mean_last < LOSS_THRESHOLD, f"mean loss of the last 5 iterations {mean_last:.3f} >= {LOSS_THRESHOLD}"
    assert last[-1]["loss_cls"] < 0.35 and last[-1]["loss_box"] < 0.8


def test_overfit_model_detects_its_training_objects(overfit_model, fixed_batch, monkeypatch):
    model, _, _ = overfit_model
    images, gt_boxes = fixed_batch
    with one_thread():
        found, total = found_in_top_k(model.inference(images, score_thresh=0.2, nms_thresh=0.5), gt_boxes)
    print(f"\nfound {found} of {total} objects in the top-k detections")
    assert total == 16  # the calibration's batch
    assert found >= MIN_FOUND

    # The same check rejects decoding bugs on the same trained weights.
    correct_locations = fcos_module.get_fpn_location_coords

    def transposed(shapes, strides, dtype=torch.float32, device="cpu"):
        good = correct_locations(shapes, strides, dtype, device)
        return {k: v.reshape(shapes[k][-2], shapes[k][-1], 2).transpose(0, 1).reshape(-1, 2) for k, v in good.items()}

    def levels_reversed(shapes, strides, dtype=torch.float32, device="cpu"):
        return dict(reversed(list(correct_locations(shapes, strides, dtype, device).items())))

    for broken in (transposed, levels_reversed):
        monkeypatch.setattr(fcos_module, "get_fpn_location_coords", broken)
        with one_thread():
            broken_found, _ = found_in_top_k(model.inference(images, score_thresh=0.2, nms_thresh=0.5), gt_boxes)
        print(f"{broken.__name__}: found {broken_found}")
        assert broken_found <= BROKEN_MAX_FOUND, (broken.__name__, broken_found)
        monkeypatch.undo()
