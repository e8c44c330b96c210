"""PASCAL VOC 2007 detection dataset at a fixed square input size.

Geometry (fixes the course's centre crop, which threw away image borders and
the objects on them): every image is *letterboxed*, i.e. resized so that its
longer side is ``image_size`` and padded at the right/bottom with the ImageNet
mean colour to ``image_size x image_size``.  Nothing is cropped, so every
object stays visible, and :meth:`VOCDetection.to_original` maps boxes predicted
on the network input back to original image pixels for evaluation.

Annotations: VOC corners are 1-based and inclusive; they become continuous
coordinates ``(xmin - 1, ymin - 1, xmax, ymax)`` (see ``data_utils.conventions``).
Difficult objects are kept in :meth:`VOCDetection.ground_truth` (evaluation
ignores detections on them) but are not training targets.

Images with more than ``max_objects`` target objects (VOC 2007 has a handful
with up to 42) keep their ``max_objects`` largest objects; a warning says how
many images were affected.  Dropping the smallest objects loses the least
training signal and keeps ``gt_boxes`` a fixed-size tensor.
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from data_utils.conventions import IMAGE_SIZE, PADDING
from data_utils.errors import DatasetError
from data_utils.types import GroundTruth

#: The 20 VOC classes in the alphabetical order the course uses (index = label).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(VOC_CLASSES)}

#: ImageNet statistics the RegNet backbone was trained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Letterbox padding colour: the mean, so padding normalises to ~0.
PAD_RGB: tuple[int, int, int] = tuple(round(255 * m) for m in IMAGENET_MEAN)  # type: ignore[assignment]

MAX_OBJECTS: int = 40
SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")


@dataclass(frozen=True)
class Annotation:
    """One parsed ``Annotations/<id>.xml`` (boxes in continuous original pixels)."""

    image_id: str
    width: int
    height: int
    boxes: np.ndarray  # (G, 4) float32 XYXY
    classes: np.ndarray  # (G,) int64
    difficult: np.ndarray  # (G,) bool
    truncated: np.ndarray  # (G,) bool


@dataclass(frozen=True)
class Letterbox:
    """How an original image was mapped onto the square network input.

    ``input = original * scale`` per axis (no offset: padding is at the
    right/bottom).  ``scale_x`` and ``scale_y`` differ slightly because the
    resized size is rounded to whole pixels.
    """

    orig_width: int
    orig_height: int
    resized_width: int
    resized_height: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.orig_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.orig_height

    @staticmethod
    def fit(width: int, height: int, size: int) -> "Letterbox":
        scale = size / max(width, height)
        return Letterbox(width, height, max(1, round(width * scale)), max(1, round(height * scale)))


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation: ``(..., 3, H, W)`` -> floats in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images * std + mean).clamp(0, 1)


def normalize_uint8(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(..., 3, H, W)`` uint8 -> ImageNet-normalised floats (new tensor)."""
    # (x / 255 - mean) / std as x * (1 / (255 std)) - mean / std, in place on
    # the cast copy (one allocation), one channel at a time with Python
    # scalars: on the CPU ~2x faster than mul_/add_ with (3, 1, 1) tensors
    # (bit-identical to it) and ~3.5x faster than a broadcast addcmul (which
    # fuses the two steps, so its results differ in the last bit).
    out = images.to(dtype, copy=True)
    for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):
        out[..., channel, :, :].mul_(1.0 / (255.0 * std)).add_(-mean / std)
    return out


def to_network_input(images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A batch as the networks take it, on ``device``.

    uint8 batches (what the cache serves with ``uint8=True``) cross to the
    device as bytes, a quarter of the float traffic, and are normalised there
    with :func:`normalize_uint8`; float batches are taken as already normalised.
    """
    images = images.to(device, non_blocking=True)
    return normalize_uint8(images) if images.dtype == torch.uint8 else images


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{path}: malformed annotation: <{node.tag}> has no <{tag}>. "
                           "Re-extract the dataset archive (or regenerate the embedded dataset).")
    return child.text.strip()


def _int(node: ET.Element, tag: str, path: Path) -> int:
    text = _text(node, tag, path)
    try:
        return int(float(text))
    except ValueError:
        raise DatasetError(f"{path}: malformed annotation: <{tag}> is {text!r}, expected a number.") from None


def parse_annotation(path: Path) -> Annotation:
    """Parse and validate one VOC annotation file.

    Raises:
        DatasetError naming the file and the problem: missing or malformed
        XML, an unknown class name, a box outside the image or an empty box.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file is missing. Is the dataset complete?") from None
    except ET.ParseError as error:
        raise DatasetError(f"{path}: malformed XML ({error}). Re-extract the dataset archive.") from None
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: malformed annotation: no <size> element.")
    width, height = _int(size, "width", path), _int(size, "height", path)
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: image size {width}x{height} is not positive.")
    boxes, classes, difficult, truncated = [], [], [], []
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        if name not in CLASS_TO_INDEX:
            raise DatasetError(f"{path}: unknown class name {name!r}; expected one of the 20 VOC classes "
                               f"({', '.join(VOC_CLASSES)}).")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{path}: object {name!r} has no <bndbox>.")
        xmin, ymin, xmax, ymax = (_int(bndbox, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DatasetError(f"{path}: object {name!r} has an empty box "
                               f"(xmin={xmin}, ymin={ymin}, xmax={xmax}, ymax={ymax}).")
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise DatasetError(f"{path}: object {name!r} box (xmin={xmin}, ymin={ymin}, xmax={xmax}, ymax={ymax}) "
                               f"lies outside the {width}x{height} image (VOC corners are 1-based, inclusive).")
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        classes.append(CLASS_TO_INDEX[name])
        diff = obj.find("difficult")
        trunc = obj.find("truncated")
        difficult.append(diff is not None and (diff.text or "0").strip() == "1")
        truncated.append(trunc is not None and (trunc.text or "0").strip() == "1")
    return Annotation(
        image_id=path.stem, width=width, height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        classes=np.asarray(classes, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
    )


def read_split(voc_dir: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt`` (DatasetError if missing or empty)."""
    path = Path(voc_dir) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem) if path.parent.is_dir() else []
        raise DatasetError(f"{path}: split file not found (splits present: {available or 'none'}). "
                           "Check the dataset directory and the split name.")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: split file is empty; it should list one image id per line.")
    return ids


def check_voc_dir(voc_dir: Path) -> Path:
    """Return ``voc_dir`` if it looks like a ``VOC2007`` directory, else raise DatasetError."""
    voc_dir = Path(voc_dir)
    if not voc_dir.is_dir():
        raise DatasetError(f"{voc_dir}: dataset directory does not exist. Pass the VOC2007 folder "
                           "(the one holding JPEGImages/ and Annotations/), or run "
                           "`python -m data_utils download` / `python -m data_utils generate`.")
    missing = [d for d in ("JPEGImages", "Annotations", "ImageSets/Main") if not (voc_dir / d).is_dir()]
    if missing:
        raise DatasetError(f"{voc_dir}: not a VOC2007 directory, missing {', '.join(missing)}.")
    return voc_dir


class VOCDetection(Dataset):
    """VOC detection split at ``image_size x image_size``.

    Items are ``(image_id, image, gt_boxes)`` as in the course:
    ``image`` is ``(3, S, S)`` float32, ImageNet-normalised; ``gt_boxes`` is
    ``(max_objects, 5)`` rows ``(x1, y1, x2, y2, class)`` in input pixels,
    non-difficult objects only, padded with ``PADDING`` (-1).

    Args:
        voc_dir: the ``VOC2007`` directory.
        split: ``train``, ``val``, ``trainval``, ``test`` or any
            ``ImageSets/Main/<split>.txt``.
        train: enables random horizontal flips (use a shuffling loader too).
        image_size: side of the square input.
        max_objects: rows of ``gt_boxes`` (see the module docstring).

    All annotations are parsed and checked on construction, so a broken file
    fails at once with its name rather than in the middle of training.
    """

    def __init__(self, voc_dir: str | os.PathLike, split: str = "train", *, train: bool = False,
                 image_size: int = IMAGE_SIZE, max_objects: int = MAX_OBJECTS):
        self.voc_dir = check_voc_dir(Path(voc_dir))
        self.split = split
        self.train = train
        self.image_size = image_size
        self.max_objects = max_objects
        self.class_names = VOC_CLASSES
        self.image_ids = read_split(self.voc_dir, split)
        self.annotations = [parse_annotation(self.voc_dir / "Annotations" / f"{i}.xml") for i in self.image_ids]
        missing = [i for i in self.image_ids if not (self.voc_dir / "JPEGImages" / f"{i}.jpg").is_file()]
        if missing:
            raise DatasetError(f"{self.voc_dir / 'JPEGImages'}: {len(missing)} image(s) of split {split!r} are "
                               f"missing, e.g. {missing[0]}.jpg. Is the dataset completely extracted?")
        self.letterboxes = [Letterbox.fit(a.width, a.height, image_size) for a in self.annotations]
        self._targets = [self._make_target(a, lb) for a, lb in zip(self.annotations, self.letterboxes)]
        too_many = sum(int((~a.difficult).sum()) > max_objects for a in self.annotations)
        if too_many:
            warnings.warn(f"{too_many} image(s) of {split!r} have more than {max_objects} objects; "
                          f"their {max_objects} largest are kept as training targets.", stacklevel=2)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        return self.voc_dir / "JPEGImages" / f"{self.image_ids[index]}.jpg"

    def _make_target(self, ann: Annotation, lb: Letterbox) -> torch.Tensor:
        keep = ~ann.difficult
        boxes = torch.from_numpy(ann.boxes[keep]).clone()
        classes = torch.from_numpy(ann.classes[keep]).to(torch.float32)
        boxes[:, 0::2] *= lb.scale_x
        boxes[:, 1::2] *= lb.scale_y
        if len(boxes) > self.max_objects:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            largest = torch.sort(torch.argsort(areas, descending=True, stable=True)[: self.max_objects]).values
            boxes, classes = boxes[largest], classes[largest]
        target = torch.full((self.max_objects, 5), PADDING, dtype=torch.float32)
        target[: len(boxes), :4] = boxes
        target[: len(boxes), 4] = classes
        return target

    def load_uint8(self, index: int) -> torch.Tensor:
        """Decode and letterbox image ``index``: ``(3, S, S)`` uint8 (no flip).

        Raises DatasetError for an unreadable, corrupt or truncated JPEG, or one
        whose size disagrees with its annotation.
        """
        path = self.image_path(index)
        lb = self.letterboxes[index]
        try:
            with Image.open(path) as img:
                img.load()  # forces a full decode: truncated files fail here
                rgb = img.convert("RGB")
        except FileNotFoundError:
            raise DatasetError(f"{path}: image file is missing.") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise DatasetError(f"{path}: corrupt or truncated image ({error}). "
                               "Re-extract the dataset archive (or regenerate the embedded dataset).") from None
        if rgb.size != (lb.orig_width, lb.orig_height):
            raise DatasetError(f"{path}: image is {rgb.size[0]}x{rgb.size[1]} but its annotation says "
                               f"{lb.orig_width}x{lb.orig_height}.")
        resized = rgb.resize((lb.resized_width, lb.resized_height), Image.BILINEAR, reducing_gap=None)
        canvas = Image.new("RGB", (self.image_size, self.image_size), PAD_RGB)
        canvas.paste(resized, (0, 0))
        return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()

    def target(self, index: int) -> torch.Tensor:
        """``(max_objects, 5)`` training target of image ``index`` (no flip), a copy."""
        return self._targets[index].clone()

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        image = self.load_uint8(index)
        target = self.target(index)
        if self.train and torch.rand(()) < 0.5:
            image, target = hflip(image, target, self.image_size)
        return self.image_ids[index], normalize_uint8(image), target

    def ground_truth(self, index: int) -> GroundTruth:
        """Every object of image ``index`` (difficult ones included), original pixels."""
        ann = self.annotations[index]
        return GroundTruth(torch.from_numpy(ann.boxes.copy()), torch.from_numpy(ann.classes.copy()),
                           torch.from_numpy(ann.difficult.copy()))

    def to_original(self, boxes: torch.Tensor, index: int) -> torch.Tensor:
        """Map ``(K, 4)`` boxes from network-input pixels of image ``index`` to
        its original pixels, clipped to the image (returns a new tensor)."""
        lb = self.letterboxes[index]
        scale = torch.tensor([lb.scale_x, lb.scale_y, lb.scale_x, lb.scale_y], dtype=boxes.dtype, device=boxes.device)
        limit = torch.tensor([lb.orig_width, lb.orig_height] * 2, dtype=boxes.dtype, device=boxes.device)
        return torch.minimum((boxes / scale).clamp(min=0), limit)


def hflip(images: torch.Tensor, targets: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror images ``(..., 3, S, S)`` and their ``(..., N, 5)`` targets left-right.

    Padding rows stay padding.  Returns new tensors.
    """
    return images.flip(-1), hflip_boxes(targets, image_size)


def hflip_boxes(targets: torch.Tensor, image_size: int) -> torch.Tensor:
    """The ``(..., N, 5)`` targets of left-right mirrored ``image_size``-wide images (a new tensor; padding stays)."""
    flipped = targets.clone()
    valid = targets[..., 4] != PADDING
    new_x1 = image_size - targets[..., 2]
    new_x2 = image_size - targets[..., 0]
    flipped[..., 0] = torch.where(valid, new_x1, targets[..., 0])
    flipped[..., 2] = torch.where(valid, new_x2, targets[..., 2])
    return flipped


def dataset_statistics(dataset: VOCDetection) -> dict[str, object]:
    """Counts a person checks first: images, objects per class, difficult count."""
    per_class = np.zeros(len(VOC_CLASSES), dtype=np.int64)
    difficult = 0
    for ann in dataset.annotations:
        np.add.at(per_class, ann.classes, 1)
        difficult += int(ann.difficult.sum())
    return {
        "images": len(dataset),
        "objects": int(per_class.sum()),
        "difficult": difficult,
        "per_class": {VOC_CLASSES[i]: int(n) for i, n in enumerate(per_class) if n},
        "max_objects_per_image": max((len(a.classes) for a in dataset.annotations), default=0),
        "mean_objects_per_image": float(per_class.sum()) / max(1, len(dataset)),
        "images_over_limit": sum(int((~a.difficult).sum()) > dataset.max_objects for a in dataset.annotations),
        "input_size": dataset.image_size,
        "letterbox_fill": float(np.mean([lb.resized_width * lb.resized_height for lb in dataset.letterboxes]))
        / dataset.image_size**2 if len(dataset) else math.nan,
    }
