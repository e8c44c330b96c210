"""Training engine, checkpoints, inference coordinates and the evaluation pipeline,
with tiny stand-in detectors so that each test takes about a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from data_utils.conventions import Detections
from data_utils.data.loaders import build_loader
from data_utils.data.voc import VOCDetection
from data_utils.evaluation.voc_eval import evaluate_detections
from data_utils.training.engine import NonFiniteLossError, TrainConfig, load_checkpoint, train_detector
from data_utils.training.inference import export_voc_results, load_detections, predict_dataset, save_detections
from tests.voc_factory import Img, Obj, write_voc


class TinyDetector(nn.Module):
    """Follows the detector protocol; its 'loss' regresses a mean box."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=8)
        self.box = nn.Parameter(torch.zeros(4))

    def forward(self, images, gt_boxes):
        feat = self.conv(images).mean()
        valid = gt_boxes[..., 4] >= 0
        target = gt_boxes[valid][:, :4].mean(0) / 224
        return {"loss_box": ((self.box - target) ** 2).sum() + 0 * feat, "loss_feat": feat ** 2, "positives": valid.sum()}


class OracleDetector(nn.Module):
    """Predicts the targets its test hands it (in network-input pixels), optionally shifted."""

    def __init__(self, targets_by_image: dict[int, torch.Tensor], shift: float = 0.0):
        super().__init__()
        self.targets = targets_by_image
        self.shift = shift

    def inference(self, images, score_thresh, nms_thresh):
        out = []
        for image in images:
            gt = self.targets[int(image.sum().round())]  # images are tagged by their content below
            gt = gt[gt[:, 4] >= 0]
            out.append(Detections(gt[:, :4] + self.shift, torch.linspace(0.9, 0.5, len(gt)), gt[:, 4].long()))
        return out


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    images = [
        Img("000001", 448, 224, [Obj("dog", (11, 21, 110, 120)), Obj("cat", (301, 101, 400, 200), difficult=True)]),
        Img("000002", 150, 300, [Obj("person", (1, 1, 150, 60)), Obj("tvmonitor", (31, 201, 90, 290))]),
        Img("000003", 224, 224, [Obj("aeroplane", (101, 101, 200, 200))]),
        Img("000004", 320, 200, [Obj("car", (5, 5, 300, 190)), Obj("car", (40, 50, 80, 90))]),
    ]
    return write_voc(tmp_path, {"train": images, "val": images})


def test_lr_schedule_steps_at_60_and_90_percent_with_warmup():
    cfg = TrainConfig(max_iters=100, lr=1.0, gamma=0.1, warmup_iters=10, warmup_factor=0.01)
    assert cfg.lr_factor(0) == pytest.approx(0.01)
    assert cfg.lr_factor(5) == pytest.approx(0.01 * 0.5 + 0.5)
    assert cfg.lr_factor(10) == pytest.approx(1.0) and cfg.lr_factor(59) == pytest.approx(1.0)
    assert cfg.lr_factor(60) == pytest.approx(0.1) and cfg.lr_factor(89) == pytest.approx(0.1)
    assert cfg.lr_factor(90) == pytest.approx(0.01)


def test_training_records_history_and_lowers_the_loss(voc):
    torch.manual_seed(0)
    model = TinyDetector()
    loader = build_loader(VOCDetection(voc, "train", train=True), batch_size=2, num_workers=0, seed=0)
    state = train_detector(model, loader, TrainConfig(max_iters=30, lr=0.5, momentum=0.0, weight_decay=0.0),
                           device="cpu", progress=False)
    assert state.iteration == 30
    assert set(state.history) == {"loss_box", "loss_feat", "positives", "total", "lr"}
    assert all(len(v) == 30 for v in state.history.values())
    assert state.history["loss_box"][-1] < 0.2 * state.history["loss_box"][0]
    assert state.history["lr"][-1] == pytest.approx(0.5 * 0.01)  # after both steps
    assert not model.training, "the engine hands back the model in eval mode"


def test_adamw_trains_and_an_unknown_optimizer_is_refused(voc, tmp_path):
    loader = build_loader(VOCDetection(voc, "train", train=True), batch_size=2, num_workers=0, seed=0)
    torch.manual_seed(0)
    model = TinyDetector()
    state = train_detector(model, loader, TrainConfig(max_iters=30, optimizer="adamw", lr=0.05, weight_decay=0.0),
                           device="cpu", progress=False, checkpoint_path=tmp_path / "adamw.pt")
    assert state.history["loss_box"][-1] < 0.2 * state.history["loss_box"][0]
    moments = load_checkpoint(tmp_path / "adamw.pt")["optimizer"]["state"][0]
    assert "exp_avg_sq" in moments, "AdamW keeps second moments (SGD would only keep momentum)"
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        train_detector(TinyDetector(), loader, TrainConfig(max_iters=1, optimizer="adam"), device="cpu",
                       progress=False)


def test_resume_continues_exactly(voc, tmp_path):
    def run(iters, ckpt, resume):
        torch.manual_seed(0)
        model = TinyDetector()
        loader = build_loader(VOCDetection(voc, "train", train=True), batch_size=2, num_workers=0, seed=0)
        cfg = TrainConfig(max_iters=iters, lr=0.1, milestones=(0.5,), seed=0)
        return model, train_detector(model, loader, cfg, device="cpu", checkpoint_path=ckpt, resume=resume,
                                     progress=False, model_config={"name": "tiny"})

    straight, _ = run(8, tmp_path / "a.pt", False)
    run(4, tmp_path / "b.pt", False)
    # Resuming for a longer schedule changes the LR milestones, so compare a
    # resumed run with a straight run of the same schedule: restart 8 from a 4-iteration checkpoint of it.
    payload = load_checkpoint(tmp_path / "b.pt")
    assert payload["iteration"] == 4 and payload["model_config"] == {"name": "tiny"}
    assert payload["train_config"]["max_iters"] == 4
    checkpoint = tmp_path / "c.pt"
    run(8, checkpoint, False)  # writes the final checkpoint at 8
    resumed, resumed_state = run(8, checkpoint, True)  # nothing left to do: identical weights
    assert resumed_state.iteration == 8 and len(resumed_state.history["total"]) == 8
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_resume_midway_matches_straight_run(voc, tmp_path):
    """Weights, momentum, LR schedule and history all continue from the checkpoint.
    (The data order restarts at an epoch boundary, so one batch per epoch here.)"""
    cfg = TrainConfig(max_iters=6, lr=0.1, milestones=(0.5,), checkpoint_every=3, seed=0)

    def fresh():
        torch.manual_seed(0)
        return TinyDetector(), build_loader(VOCDetection(voc, "train"), batch_size=4, num_workers=0, shuffle=False)

    model, loader = fresh()
    train_detector(model, loader, cfg, device="cpu", progress=False)
    model2, loader2 = fresh()

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original_forward = model2.forward

    def crashing_forward(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Stop
        return original_forward(*args)

    model2.forward = crashing_forward
    with pytest.raises(Stop):
        train_detector(model2, loader2, cfg, device="cpu", checkpoint_path=tmp_path / "mid.pt", progress=False)
    assert load_checkpoint(tmp_path / "mid.pt")["iteration"] == 3
    model3, loader3 = fresh()
    state = train_detector(model3, loader3, cfg, device="cpu", checkpoint_path=tmp_path / "mid.pt", resume=True,
                           progress=False)
    assert state.iteration == 6
    for a, b in zip(model.parameters(), model3.parameters()):
        torch.testing.assert_close(a, b)


def test_non_finite_loss_is_reported(voc):
    class Exploding(TinyDetector):
        def forward(self, images, gt_boxes):
            return {"loss_box": torch.tensor(float("nan"), requires_grad=True)}

    loader = build_loader(VOCDetection(voc, "train"), batch_size=2, num_workers=0)
    with pytest.raises(NonFiniteLossError, match="iteration 0"):
        train_detector(Exploding(), loader, TrainConfig(max_iters=3), device="cpu", progress=False)


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def _oracle(ds: VOCDetection, shift: float = 0.0) -> OracleDetector:
    # Tag each image by the sum of its normalised pixels so the oracle knows which one it sees.
    return OracleDetector({int(ds[i][1].sum().round()): ds.target(i) for i in range(len(ds))}, shift)


def test_perfect_detector_scores_full_map_in_original_coordinates(voc):
    """Boxes predicted on the letterboxed input come back in original pixels:
    an oracle predicting the training targets gets mAP 1 against the original
    annotations (difficult objects ignored), a shifted one gets less."""
    ds = VOCDetection(voc, "val")
    tags = {int(ds[i][1].sum().round()) for i in range(len(ds))}
    assert len(tags) == len(ds), "test images must be distinguishable"
    detections = predict_dataset(_oracle(ds), ds, batch_size=3, device="cpu", num_workers=0, progress=False)
    truths = [ds.ground_truth(i) for i in range(len(ds))]
    for det, truth in zip(detections, truths):
        torch.testing.assert_close(det.boxes, truth.boxes[~truth.difficult], rtol=0, atol=1e-3)
    assert evaluate_detections(detections, truths).map == pytest.approx(1.0)
    shifted = predict_dataset(_oracle(ds, shift=25.0), ds, batch_size=3, device="cpu", num_workers=0, progress=False)
    assert evaluate_detections(shifted, truths).map < 0.9


def test_save_load_and_export_detections(voc, tmp_path):
    ds = VOCDetection(voc, "val")
    detections = predict_dataset(_oracle(ds), ds, batch_size=4, device="cpu", num_workers=0, progress=False)
    path = save_detections(tmp_path / "dets.pt", ds.image_ids, detections)
    ids, loaded = load_detections(path)
    assert ids == ds.image_ids
    for a, b in zip(detections, loaded):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    files = export_voc_results(tmp_path / "voc", ids, loaded, ds.class_names)
    car = (tmp_path / "voc" / "comp4_det_val_car.txt").read_text().split("\n")
    assert len(files) == 20 and len([line for line in car if line]) == 2
    image_id, score, x1, y1, x2, y2 = car[0].split()
    assert image_id == "000004" and (float(x1), float(y1), float(x2), float(y2)) == pytest.approx((5, 5, 300, 190), abs=0.1)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        load_detections(tmp_path / "junk.pt")


class _LayoutProbe(TinyDetector):
    """Records the memory format of every batch the engine hands it."""

    def __init__(self):
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, images, gt_boxes):
        self.seen.append(images.is_contiguous(memory_format=torch.channels_last))
        return super().forward(images, gt_boxes)


def test_channels_last_trains_the_same_numbers_in_the_other_layout(voc, tmp_path):
    """The reference presets train NHWC for speed; the layout must change the speed and nothing else."""
    runs = {}
    for channels_last in (False, True):
        loader = build_loader(VOCDetection(voc, "train", train=True), batch_size=2, num_workers=0, seed=0)
        torch.manual_seed(0)
        model = _LayoutProbe()
        state = train_detector(model, loader, TrainConfig(max_iters=6, optimizer="adamw", lr=0.05,
                                                          channels_last=channels_last),
                               device="cpu", progress=False, checkpoint_path=tmp_path / f"cl{channels_last}.pt")
        assert model.seen == [channels_last] * 6
        assert model.conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        runs[channels_last] = (state.history["total"], model)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4)
    # The checkpoint of the NHWC run loads into a plain (contiguous) model.
    plain = TinyDetector()
    load_checkpoint(tmp_path / "clTrue.pt", plain)
    torch.testing.assert_close(plain.conv.weight, runs[True][1].conv.weight.contiguous())


def test_fused_optimizer_takes_the_same_steps_with_one_kernel(voc, tmp_path):
    """The main job's presets use the optimisers' fused kernels for speed: the flag must reach the
    optimiser (its saved state says so) and change the rounding only, for AdamW and SGD alike."""
    for optimizer in ("adamw", "sgd"):
        runs = {}
        for fused in (False, True):
            loader = build_loader(VOCDetection(voc, "train", train=True), batch_size=2, num_workers=0, seed=0)
            torch.manual_seed(0)
            model = TinyDetector()
            path = tmp_path / f"{optimizer}{fused}.pt"
            state = train_detector(model, loader, TrainConfig(max_iters=8, optimizer=optimizer, lr=0.05,
                                                              fused_optimizer=fused),
                                   device="cpu", progress=False, checkpoint_path=path)
            assert bool(load_checkpoint(path)["optimizer"]["param_groups"][0]["fused"]) == fused, optimizer
            runs[fused] = (state.history["total"], model.box.detach().clone())
        assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4), optimizer
        torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-4, atol=1e-6)
