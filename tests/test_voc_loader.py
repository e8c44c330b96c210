"""The VOC loader on small generated trees: shapes, geometry, difficult objects, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_utils.data.cache import CachedVOC, build_cache
from data_utils.data.loaders import build_loader
from data_utils.data.voc import VOC_CLASSES, VOCDetection, denormalize, parse_annotation, to_network_input
from data_utils.errors import DatasetError
from tests.voc_factory import Img, Obj, annotation_xml, write_voc

LANDSCAPE = Img("000001", 448, 224, [Obj("dog", (11, 21, 110, 120)), Obj("cat", (301, 101, 400, 200), difficult=True)])
PORTRAIT = Img("000002", 150, 300, [Obj("person", (1, 1, 150, 60)), Obj("tvmonitor", (31, 201, 90, 290))])
SQUARE = Img("000003", 224, 224, [Obj("aeroplane", (101, 101, 200, 200))])


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    return write_voc(tmp_path, {"train": [LANDSCAPE, PORTRAIT], "val": [SQUARE, LANDSCAPE]})


def test_classes_alphabetical():
    assert len(VOC_CLASSES) == 20
    assert list(VOC_CLASSES) == sorted(VOC_CLASSES)
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[19] == "tvmonitor"


def test_item_shapes_padding_and_order(voc):
    ds = VOCDetection(voc, "train")
    assert len(ds) == 2 and ds.image_ids == ["000001", "000002"]
    image_id, image, gt = ds[1]
    assert image_id == "000002"
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    assert gt.shape == (40, 5) and gt.dtype == torch.float32
    assert (gt[2:] == -1).all(), "rows after the objects must be -1 padding"
    assert gt[:2, 4].tolist() == [VOC_CLASSES.index("person"), VOC_CLASSES.index("tvmonitor")]


def test_voc_corners_become_continuous(voc):
    ann = parse_annotation(voc / "Annotations" / "000002.xml")
    # 1-based inclusive (1, 1, 150, 60) covers pixels 0..149 -> continuous [0, 150].
    torch.testing.assert_close(torch.from_numpy(ann.boxes[0]), torch.tensor([0.0, 0.0, 150.0, 60.0]))


def test_letterbox_keeps_whole_image_and_maps_boxes(voc):
    ds = VOCDetection(voc, "train")
    _, _, gt = ds[0]  # 448x224 -> scale 0.5, resized 224x112, padded below
    torch.testing.assert_close(gt[0, :4], torch.tensor([10.0, 20.0, 110.0, 120.0]) * 0.5)
    _, _, gt = ds[1]  # 150x300 -> scale 224/300
    s = 224 / 300
    torch.testing.assert_close(gt[1, :4], torch.tensor([30.0, 200.0, 90.0, 290.0]) * torch.tensor([112 / 150, s, 112 / 150, s]),
                               rtol=0, atol=1e-4)


def _white_fraction(image: torch.Tensor, box: torch.Tensor) -> float:
    """Fraction of near-white pixels inside the (shrunk) box of a normalised image."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    patch = denormalize(image)[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2]
    return float((patch.min(dim=0).values > 0.8).float().mean())


def test_pixels_and_boxes_agree(voc):
    """The white rectangles drawn at the annotated places end up under the target boxes."""
    ds = VOCDetection(voc, "train")
    for index in range(len(ds)):
        _, image, gt = ds[index]
        for row in gt[gt[:, 4] >= 0]:
            assert _white_fraction(image, row) > 0.9
        # the letterbox padding is the mean colour, i.e. ~0 after normalisation
        lb = ds.letterboxes[index]
        if lb.resized_height < 224:
            assert image[:, lb.resized_height + 1:, :].abs().max() < 0.05


def test_to_original_round_trip(voc):
    ds = VOCDetection(voc, "val")
    for index in range(len(ds)):
        gt_input = ds.target(index)
        valid = gt_input[:, 4] >= 0
        back = ds.to_original(gt_input[valid, :4], index)
        truth = ds.ground_truth(index)
        torch.testing.assert_close(back, truth.boxes[~truth.difficult], rtol=0, atol=1e-3)


def test_to_original_clips_and_does_not_mutate(voc):
    ds = VOCDetection(voc, "val")
    boxes = torch.tensor([[-5.0, -5.0, 250.0, 250.0]])
    before = boxes.clone()
    out = ds.to_original(boxes, 1)  # the 448x224 image
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 448.0, 224.0]]))
    assert torch.equal(boxes, before)


def test_difficult_kept_for_evaluation_not_training(voc):
    ds = VOCDetection(voc, "train")
    gt = ds.target(0)
    assert (gt[:, 4] >= 0).sum() == 1, "difficult objects are not training targets"
    truth = ds.ground_truth(0)
    assert truth.difficult.tolist() == [False, True]
    assert truth.classes.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]


def test_horizontal_flip_moves_boxes_with_pixels(voc):
    ds = VOCDetection(voc, "train", train=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        _, image, gt = ds[0]
        box = gt[0]
        seen.add(round(float(box[0]), 1))
        assert _white_fraction(image, box) > 0.9
        assert (gt[1:] == -1).all()
    assert seen == {5.0, 224 - 55.0}, "both the original and the mirrored box must occur"


def test_more_than_max_objects_keeps_largest(tmp_path):
    objs = [Obj("bird", (1 + 10 * i, 1, 5 + 10 * i + (i % 7), 20)) for i in range(45)]
    voc = write_voc(tmp_path, {"train": [Img("000009", 500, 100, objs)]})
    with pytest.warns(UserWarning, match="more than 40 objects"):
        ds = VOCDetection(voc, "train")
    gt = ds.target(0)
    assert (gt[:, 4] >= 0).all()
    widths = torch.tensor([o.box[2] - o.box[0] + 1 for o in objs], dtype=torch.float32)
    kept_widths = (gt[:, 2] - gt[:, 0]) / ds.letterboxes[0].scale_x
    assert kept_widths.min() >= widths.sort(descending=True).values[39] - 1e-3


# --- bad input: each error names the file and the problem --------------------------------------

def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        VOCDetection(tmp_path / "nowhere", "train")


def test_not_a_voc_directory(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="missing Annotations"):
        VOCDetection(tmp_path, "train")


def test_missing_and_empty_split(voc):
    with pytest.raises(DatasetError, match=r"test\.txt: split file not found"):
        VOCDetection(voc, "test")
    (voc / "ImageSets/Main/test.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"test\.txt: split file is empty"):
        VOCDetection(voc, "test")


@pytest.mark.parametrize("xml, message", [
    ("<annotation><size><width>10", "malformed XML"),
    ("<annotation><object><name>dog</name></object></annotation>", "no <size>"),
    (annotation_xml(Img("000001", 448, 224, [Obj("dragon", (1, 1, 5, 5))])), "unknown class name 'dragon'"),
    (annotation_xml(Img("000001", 448, 224, [Obj("dog", (400, 1, 449, 5))])), "outside the 448x224 image"),
    (annotation_xml(Img("000001", 448, 224, [Obj("dog", (0, 1, 10, 5))])), "outside the 448x224 image"),
    (annotation_xml(Img("000001", 448, 224, [Obj("dog", (10, 1, 9, 5))])), "empty box"),
    ("<annotation><size><width>448</width><height>224</height></size><object><name>dog</name>"
     "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>abc</xmax><ymax>5</ymax></bndbox></object></annotation>", "'abc'"),
])
def test_bad_annotation(voc, xml, message):
    path = voc / "Annotations" / "000001.xml"
    path.write_text(xml)
    with pytest.raises(DatasetError, match=message) as info:
        VOCDetection(voc, "train")
    assert "000001.xml" in str(info.value)


def test_missing_image(voc):
    (voc / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"000002\.jpg"):
        VOCDetection(voc, "train")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_jpeg(voc, damage):
    path = voc / "JPEGImages" / "000001.jpg"
    data = path.read_bytes()
    path.write_bytes(b"not a jpeg at all" * 10 if damage == "garbage" else data[: len(data) // 2])
    ds = VOCDetection(voc, "train")
    with pytest.raises(DatasetError, match="corrupt or truncated") as info:
        ds[0]
    assert "000001.jpg" in str(info.value)


def test_image_size_disagrees_with_annotation(voc):
    from PIL import Image
    Image.new("RGB", (100, 100)).save(voc / "JPEGImages" / "000003.jpg")
    ds = VOCDetection(voc, "val")
    with pytest.raises(DatasetError, match="100x100 but its annotation says 224x224"):
        ds[0]


# --- loaders and cache --------------------------------------------------------------------------

def test_loader_batches_and_shuffling(voc):
    ds = VOCDetection(voc, "train", train=True)
    loader = build_loader(ds, batch_size=1, num_workers=0, seed=1)
    orders = {tuple(ids[0] for ids, _, _ in loader) for _ in range(10)}
    assert len(orders) == 2, "a training loader reshuffles every epoch"
    eval_loader = build_loader(VOCDetection(voc, "val"), batch_size=2, num_workers=0)
    (ids, images, gt), = list(eval_loader)
    assert ids == ["000003", "000001"]
    assert images.shape == (2, 3, 224, 224) and gt.shape == (2, 40, 5)


def test_loader_with_workers_matches_items(voc):
    ds = VOCDetection(voc, "val")
    (ids, images, gt), = list(build_loader(ds, batch_size=2, num_workers=2))
    for i in range(2):
        _, image, target = ds[i]
        torch.testing.assert_close(images[i], image)
        torch.testing.assert_close(gt[i], target)


def test_cache_serves_identical_items_and_is_reused(voc, tmp_path):
    ds = VOCDetection(voc, "val")
    path = tmp_path / "cache.pt"
    cached = CachedVOC(ds, path, progress=False)
    for i in range(len(ds)):
        for a, b in zip(ds[i], cached[i]):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b)
            else:
                assert a == b
    stamp = path.stat().st_mtime_ns
    build_cache(ds, path, progress=False)
    assert path.stat().st_mtime_ns == stamp, "an up-to-date cache must not be rebuilt"
    (voc / "Annotations" / "000003.xml").write_text(annotation_xml(
        Img("000003", 224, 224, [Obj("aeroplane", (11, 11, 100, 100))])))
    ds2 = VOCDetection(voc, "val")
    CachedVOC(ds2, path, progress=False)
    assert path.stat().st_mtime_ns != stamp, "a changed annotation must rebuild the cache"


def test_cached_batches_flip_consistently(voc, tmp_path):
    ds = VOCDetection(voc, "train", train=True)
    cached = CachedVOC(ds, tmp_path / "c.pt", progress=False)
    loader = build_loader(cached, batch_size=2, seed=0)
    assert len(loader) == 1
    flipped_seen = set()
    for _ in range(8):
        (ids, images, gt), = list(loader)
        for image_id, image, target in zip(ids, images, gt):
            rows = target[target[:, 4] >= 0]
            for row in rows:
                assert _white_fraction(image, row) > 0.9
            flipped_seen.add((image_id, round(float(rows[0, 0]), 1)))
    assert len(flipped_seen) == 4, "each image must appear both flipped and not flipped"


def test_uint8_batches_are_the_float_batches_before_normalisation(voc, tmp_path):
    ds = VOCDetection(voc, "train", train=True)
    cached = CachedVOC(ds, tmp_path / "c.pt", progress=False)
    floats = [b for _ in range(4) for b in build_loader(cached, batch_size=2, seed=3)]
    raw = [b for _ in range(4) for b in build_loader(cached, batch_size=2, seed=3, uint8=True)]
    assert len(floats) == len(raw) == 4
    for (ids_f, images_f, gt_f), (ids_u, images_u, gt_u) in zip(floats, raw):
        assert images_u.dtype == torch.uint8 and images_u.shape == images_f.shape
        assert ids_f == ids_u and torch.equal(gt_f, gt_u), "same seed, same order and flips"
        assert torch.equal(to_network_input(images_u, "cpu"), images_f)
    assert torch.equal(to_network_input(images_f, "cpu"), images_f), "float batches pass through unchanged"
    with pytest.raises(ValueError, match="needs the tensor cache"):
        build_loader(ds, batch_size=2, uint8=True)
