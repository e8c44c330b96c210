"""Tests of the embedded offline dataset generator (data_utils/data/synthetic.py)."""

from __future__ import annotations

import io
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_utils.data import synthetic
from data_utils.data.synthetic import (
    EMBEDDED_CLASSES,
    MARKER_NAME,
    ensure_embedded_dataset,
    generate_dataset,
    summarize,
)
from data_utils.errors import DatasetError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

SMALL = {"num_train": 24, "num_val": 16, "num_test": 16, "seed": 0, "workers": 1}


def _files(voc: Path) -> dict[str, bytes]:
    return {str(p.relative_to(voc)): p.read_bytes() for p in sorted(voc.rglob("*")) if p.is_file()}


def _read_split(voc: Path, name: str) -> list[str]:
    return (voc / "ImageSets" / "Main" / f"{name}.txt").read_text().split()


def _parse(voc: Path, image_id: str) -> ET.Element:
    return ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()


def _box(obj: ET.Element) -> tuple[int, int, int, int]:
    bb = obj.find("bndbox")
    assert bb is not None
    return tuple(int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("small"), **SMALL)


# --------------------------------------------------------------------- layout


def test_classes_are_voc_classes() -> None:
    assert 6 <= len(EMBEDDED_CLASSES) <= 8
    assert set(EMBEDDED_CLASSES) <= set(VOC_CLASSES)
    assert list(EMBEDDED_CLASSES) == sorted(EMBEDDED_CLASSES)


def test_layout_and_xml_schema(small_voc: Path) -> None:
    assert small_voc.name == "VOC2007" and small_voc.parent.name == "VOCdevkit"
    ids = _read_split(small_voc, "trainval") + _read_split(small_voc, "test")
    assert len(ids) == 56
    for image_id in ids:
        assert len(image_id) == 6 and image_id.isdigit()
        jpg = small_voc / "JPEGImages" / f"{image_id}.jpg"
        with Image.open(jpg) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert "exif" not in im.info
            size = im.size
        root = _parse(small_voc, image_id)
        assert root.tag == "annotation"
        assert root.findtext("folder") == "VOC2007"
        assert root.findtext("filename") == f"{image_id}.jpg"
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
        assert (width, height) == size
        assert 200 <= width <= 500 and 200 <= height <= 500
        assert root.findtext("size/depth") == "3"
        assert root.findtext("segmented") == "0"
        objects = root.findall("object")
        assert 1 <= len(objects) <= 8
        for obj in objects:
            assert obj.findtext("name") in EMBEDDED_CLASSES
            assert obj.findtext("pose") == "Unspecified"
            assert obj.findtext("truncated") in ("0", "1")
            assert obj.findtext("difficult") in ("0", "1")
            xmin, ymin, xmax, ymax = _box(obj)
            # VOC: 1-based inclusive integer corners inside the image
            assert 1 <= xmin < xmax <= width
            assert 1 <= ymin < ymax <= height


def test_split_files_consistent(small_voc: Path) -> None:
    train, val, trainval, test = (_read_split(small_voc, s) for s in ("train", "val", "trainval", "test"))
    assert (len(train), len(val), len(test)) == (24, 16, 16)
    for ids in (train, val, trainval, test):
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert set(trainval) == set(train) | set(val) and len(trainval) == len(train) + len(val)
    assert not (set(train) & set(val)) and not (set(trainval) & set(test))
    all_ids = set(trainval) | set(test)
    assert {p.stem for p in (small_voc / "JPEGImages").iterdir()} == all_ids
    assert {p.stem for p in (small_voc / "Annotations").iterdir()} == all_ids
    for f in (small_voc / "ImageSets" / "Main").iterdir():
        assert f.read_bytes().endswith(b"\n")


def test_class_size_difficult_truncated_coverage(small_voc: Path) -> None:
    for split in ("train", "val"):
        names = {o.findtext("name") for i in _read_split(small_voc, split) for o in _parse(small_voc, i).iter("object")}
        assert names == set(EMBEDDED_CLASSES), split
    sides, difficult, truncated, per_image = [], 0, 0, []
    for image_id in _read_split(small_voc, "trainval") + _read_split(small_voc, "test"):
        root = _parse(small_voc, image_id)
        scale = 224 / max(int(root.findtext("size/width")), int(root.findtext("size/height")))
        per_image.append(len(root.findall("object")))
        for obj in root.iter("object"):
            xmin, ymin, xmax, ymax = _box(obj)
            sides.append(max(xmax - xmin + 1, ymax - ymin + 1) * scale)
            difficult += obj.findtext("difficult") == "1"
            truncated += obj.findtext("truncated") == "1"
    sides_arr = np.array(sides)
    # all three FPN ranges after resizing to fit 224x224
    assert (sides_arr < 40).sum() >= 10
    assert ((sides_arr >= 64) & (sides_arr < 128)).sum() >= 5
    assert (sides_arr > 130).sum() >= 5
    assert difficult >= 2 and truncated >= 2
    assert difficult < 0.35 * len(sides) and truncated < 0.35 * len(sides)
    assert max(per_image) >= 5 and min(per_image) >= 1


def test_summarize(small_voc: Path) -> None:
    s = summarize(small_voc)
    assert s["images"] == 56
    assert s["splits"]["train"]["images"] == 24 and s["splits"]["trainval"]["images"] == 40
    assert sum(s["per_class"].values()) == s["objects"]
    assert sum(s["splits"][k]["objects"] for k in ("train", "val", "test")) == s["objects"]
    assert sum(s["size_per_fpn_level"].values()) == s["objects"]
    assert sum(s["size_buckets"].values()) == s["objects"]
    assert all(v > 0 for v in s["size_per_fpn_level"].values())
    assert set(s["splits"]["val"]["per_class"]) == set(EMBEDDED_CLASSES)
    hist = s["objects_per_image"]["histogram"]
    assert sum(hist.values()) == 56 and sum(k * v for k, v in hist.items()) == s["objects"]
    assert 0 < s["difficult"] < s["objects"] and 0 < s["truncated"] < s["objects"]
    text = synthetic.format_summary(s)
    assert "tvmonitor" in text and "p5" in text
    with pytest.raises(DatasetError):
        summarize(small_voc.parent)  # not a VOC2007 directory


# --------------------------------------------------------------- determinism


def test_deterministic_bytes(tmp_path: Path) -> None:
    params = {"num_train": 6, "num_val": 3, "num_test": 3, "seed": 7, "workers": 1}
    a = _files(generate_dataset(tmp_path / "a", **params))
    b = _files(generate_dataset(tmp_path / "b", **params))
    assert a == b
    c = _files(generate_dataset(tmp_path / "c", **{**params, "seed": 8}))
    assert a != c
    jpegs_a = {v for k, v in a.items() if k.endswith(".jpg")}
    jpegs_c = {v for k, v in c.items() if k.endswith(".jpg")}
    assert len(jpegs_a) == 12 and not jpegs_a & jpegs_c  # every image differs


def test_worker_threads_give_same_bytes(tmp_path: Path) -> None:
    params = {"num_train": 8, "num_val": 4, "num_test": 4, "seed": 3}
    serial = _files(generate_dataset(tmp_path / "serial", workers=1, **params))
    pooled = _files(generate_dataset(tmp_path / "pooled", workers=2, **params))
    assert serial == pooled


def test_written_files_match_renderer(small_voc: Path) -> None:
    """The XML holds exactly what the renderer reported and the JPEG is its picture."""
    params = synthetic._params(24, 16, 16, 0)
    for split_no, index, image_id in synthetic._plan(params)[::9]:
        rng = np.random.default_rng(np.random.SeedSequence([0, split_no, index]))
        first = EMBEDDED_CLASSES[(index + 3 * split_no) % len(EMBEDDED_CLASSES)]
        image, objects = synthetic.render_image(rng, first_class=first)
        root = _parse(small_voc, image_id)
        written = [
            (o.findtext("name"), _box(o), o.findtext("truncated") == "1", o.findtext("difficult") == "1")
            for o in root.iter("object")
        ]
        assert written == [(o.name, (o.xmin, o.ymin, o.xmax, o.ymax), o.truncated, o.difficult) for o in objects]
        assert objects[0].name == first
        with Image.open(small_voc / "JPEGImages" / f"{image_id}.jpg") as im:
            decoded = np.asarray(im.convert("RGB"), dtype=np.float32)
        drawn = np.asarray(image, dtype=np.float32)
        assert decoded.shape == drawn.shape
        # JPEG (quality 90, 4:2:0) loses pixel noise and chroma detail: compare 8x8 block means
        h, w = (decoded.shape[0] // 8) * 8, (decoded.shape[1] // 8) * 8

        def blocks(x: np.ndarray, h: int = h, w: int = w) -> np.ndarray:
            return x[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3))

        assert np.abs(blocks(decoded) - blocks(drawn)).mean() < 2.0


# --------------------------------------------------------------- tight boxes


def _drawn_box(image: Image.Image, background: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """VOC (1-based inclusive) box of all pixels that differ from a flat background."""
    diff = np.any(np.asarray(image) != np.asarray(background, dtype=np.uint8), axis=2)
    if not diff.any():
        return None
    cols, rows = np.flatnonzero(diff.any(axis=0)), np.flatnonzero(diff.any(axis=1))
    return int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1


@pytest.mark.parametrize("name", EMBEDDED_CLASSES)
def test_single_object_box_is_tight(name: str) -> None:
    background = (90, 110, 130)
    for k in range(24):
        rng = np.random.default_rng([42, k])
        width, height = int(rng.integers(200, 501)), int(rng.integers(200, 501))
        size = [8.0, 25.0, 90.0, 200.0][k % 4]
        image, objects = synthetic.render_image(
            rng, width=width, height=height, classes=[name], background=background, sizes_224=[size]
        )
        assert image.size == (width, height)
        assert len(objects) == 1
        obj = objects[0]
        box = (obj.xmin, obj.ymin, obj.xmax, obj.ymax)
        drawn = _drawn_box(image, background)
        assert drawn == box, (name, k, drawn, box)
        # every side of the box touches drawn pixels; the drawn shape fills a fair share of it
        w, h = obj.xmax - obj.xmin + 1, obj.ymax - obj.ymin + 1
        assert abs(max(w, h) * 224 / max(width, height) - size) < 0.5 * size + 3
        touches_border = obj.xmin == 1 or obj.ymin == 1 or obj.xmax == width or obj.ymax == height
        if obj.truncated:
            assert touches_border  # clipped to the image
        assert obj.visible_fraction == 1.0
        assert obj.difficult == (max(w, h) * 224 / max(width, height) < 10)


def test_truncated_boxes_are_clipped_and_tight() -> None:
    background = (30, 30, 30)
    found = 0
    for k in range(200):
        rng = np.random.default_rng([7, k])
        name = EMBEDDED_CLASSES[k % len(EMBEDDED_CLASSES)]
        image, objects = synthetic.render_image(
            rng, width=320, height=240, classes=[name], background=background, sizes_224=[60.0]
        )
        obj = objects[0]
        if not obj.truncated:
            continue
        found += 1
        assert _drawn_box(image, background) == (obj.xmin, obj.ymin, obj.xmax, obj.ymax)
        assert obj.xmin == 1 or obj.ymin == 1 or obj.xmax == 320 or obj.ymax == 240
    assert found >= 5


def test_occluded_boxes_keep_the_full_shape() -> None:
    """With several objects, every non-background pixel lies in some box, and each box
    is the tight box of its object *before* occlusion (so a box may cover pixels of
    later objects, but never extends beyond the union of what was drawn)."""
    background = (128, 128, 128)
    occluded = 0
    for k in range(30):
        rng = np.random.default_rng([9, k])
        names = [EMBEDDED_CLASSES[(k + j) % 8] for j in range(6)]
        image, objects = synthetic.render_image(
            rng, width=400, height=300, classes=names, background=background, sizes_224=[150, 100, 80, 60, 40, 20]
        )
        diff = np.any(np.asarray(image) != np.uint8(128), axis=2)
        covered = np.zeros_like(diff)
        for o in objects:
            covered[o.ymin - 1 : o.ymax, o.xmin - 1 : o.xmax] = True
            assert o.visible_fraction >= 0.25
            assert o.difficult == (o.visible_fraction < 0.45 or max(o.xmax - o.xmin + 1, o.ymax - o.ymin + 1) * 224 / 400 < 10)
            occluded += o.visible_fraction < 1.0
        assert not (diff & ~covered).any()
        assert _drawn_box(image, background) == (
            min(o.xmin for o in objects), min(o.ymin for o in objects),
            max(o.xmax for o in objects), max(o.ymax for o in objects),
        )  # fmt: skip
    assert occluded >= 10


# ------------------------------------------------------- atomicity and reuse


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_run_leaves_nothing_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    calls = {"n": 0}
    real = synthetic._write_annotation

    def failing(path: Path, text: str) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        real(path, text)

    monkeypatch.setattr(synthetic, "_write_annotation", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, num_train=8, num_val=2, num_test=2, workers=workers)
    devkit = tmp_path / "VOCdevkit"
    assert not (devkit / "VOC2007").exists()
    assert not list(tmp_path.rglob(MARKER_NAME))
    assert not list(devkit.iterdir())  # the partial directory was removed
    monkeypatch.setattr(synthetic, "_write_annotation", real)
    voc = generate_dataset(tmp_path, num_train=8, num_val=2, num_test=2, workers=workers)
    assert (voc / MARKER_NAME).exists() and len(list((voc / "JPEGImages").iterdir())) == 12


def test_stale_partial_of_killed_run_is_removed(tmp_path: Path) -> None:
    devkit = tmp_path / "VOCdevkit"
    host = socket.gethostname()
    dead = devkit / f".VOC2007.partial.999999999.{host}.abc123"  # no such pid
    alive = devkit / f".VOC2007.partial.{os.getpid()}.{host}.def456"  # a run in progress
    for d in (dead, alive):
        (d / "JPEGImages").mkdir(parents=True)
    voc = generate_dataset(tmp_path, num_train=2, num_val=1, num_test=1, workers=1)
    assert not dead.exists() and alive.exists()
    assert not (voc.parent / "VOC2007" / "JPEGImages" / "abc123").exists()


def test_reuse_does_not_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"num_train": 4, "num_val": 2, "num_test": 2, "seed": 1}
    voc = generate_dataset(tmp_path, workers=1, **params)
    before = {p: p.stat().st_mtime_ns for p in voc.rglob("*")}

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated")

    monkeypatch.setattr(synthetic, "_write_dataset", boom)
    assert generate_dataset(tmp_path, **params) == voc
    assert ensure_embedded_dataset(tmp_path, **params) == voc
    assert {p: p.stat().st_mtime_ns for p in voc.rglob("*")} == before


def test_datasets_generated_before_the_package_moved_are_still_reused(small_voc: Path) -> None:
    """The module moved (data_utils/synthetic.py -> data_utils/data/synthetic.py) without changing its output,
    so the marker, compared whole, and the annotations still name the generator as version 1 wrote it: a
    dataset generated before the move is reused, not refused as another generator's."""
    import json

    assert json.loads((small_voc / MARKER_NAME).read_text(encoding="utf-8"))["generator"] == "data_utils.synthetic"
    xml = next((small_voc / "Annotations").iterdir()).read_text(encoding="utf-8")
    assert "<annotation>data_utils.synthetic v1</annotation>" in xml


def test_mismatched_parameters(tmp_path: Path) -> None:
    voc = generate_dataset(tmp_path, num_train=4, num_val=2, num_test=2, workers=1)
    with pytest.raises(DatasetError, match="overwrite"):
        generate_dataset(tmp_path, num_train=5, num_val=2, num_test=2, workers=1)
    with pytest.raises(DatasetError, match="overwrite"):
        generate_dataset(tmp_path, num_train=4, num_val=2, num_test=2, seed=1, workers=1)
    assert len(_read_split(voc, "train")) == 4  # untouched
    again = generate_dataset(tmp_path, num_train=5, num_val=2, num_test=2, overwrite=True, workers=1)
    assert again == voc and len(_read_split(voc, "train")) == 5
    assert sorted(p.name for p in voc.parent.iterdir()) == ["VOC2007"]  # no leftovers


def test_foreign_voc_directory_is_never_touched(tmp_path: Path) -> None:
    foreign = tmp_path / "VOCdevkit" / "VOC2007"
    (foreign / "JPEGImages").mkdir(parents=True)
    (foreign / "JPEGImages" / "000005.jpg").write_bytes(b"real")
    for overwrite in (False, True):
        with pytest.raises(DatasetError, match=MARKER_NAME):
            generate_dataset(tmp_path, num_train=2, num_val=1, num_test=1, overwrite=overwrite)
    assert (foreign / "JPEGImages" / "000005.jpg").read_bytes() == b"real"


def test_invalid_parameters(tmp_path: Path) -> None:
    for bad in ({"num_train": 0}, {"num_val": -1}, {"seed": -3}, {"num_test": 1.5}, {"workers": 0}):
        with pytest.raises(ValueError):
            generate_dataset(tmp_path, **{"num_train": 2, "num_val": 1, "num_test": 1, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        synthetic.render_image(np.random.default_rng(0), classes=["dog"])
    assert not (tmp_path / "VOCdevkit" / "VOC2007").exists()


def test_ensure_respects_course_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    assert synthetic.default_embedded_root() == tmp_path / "data" / "embedded"
    voc = ensure_embedded_dataset(num_train=2, num_val=1, num_test=1, workers=1)
    assert voc == tmp_path / "data" / "embedded" / "VOCdevkit" / "VOC2007"
    assert (voc / MARKER_NAME).exists()
    monkeypatch.delenv("COURSE_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert synthetic.default_embedded_root() == tmp_path / "home" / ".cache" / "detection-course" / "embedded"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data-root", str(tmp_path), "--num-train", "8", "--num-val", "8", "--num-test", "2", "--workers", "1"]
    assert synthetic.main(["generate", *args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "VOCdevkit" / "VOC2007") in out.splitlines()[0]
    for word in ("18 images", "difficult", "p3", "p4", "p5", *EMBEDDED_CLASSES):
        assert word in out
    # A dataset that cannot be generated (another one is there) is a failure, 1, not bad usage.
    assert synthetic.main([*args[:2], "--num-train", "9", "--no-progress"]) == 1
    assert "overwrite" in capsys.readouterr().err


def test_jpeg_has_no_metadata(small_voc: Path) -> None:
    data = next((small_voc / "JPEGImages").iterdir()).read_bytes()
    assert data[:2] == b"\xff\xd8" and b"Exif" not in data[:200]
    with Image.open(io.BytesIO(data)) as im:
        assert set(im.info) <= {"jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi"}


def test_the_dataset_folder_is_readable_by_other_users(small_voc: Path) -> None:
    """The grader's sandbox reads the dataset as an unprivileged user: the folder written
    through mkdtemp (mode 0700) must end up rwxr-xr-x, and an old 0700 one is repaired."""
    assert small_voc.stat().st_mode & 0o055 == 0o055
    os.chmod(small_voc, 0o700)
    again = generate_dataset(small_voc.parents[1], **SMALL)
    assert again == small_voc and small_voc.stat().st_mode & 0o055 == 0o055
