"""Write tiny, fully controlled datasets in the VOC layout for loader tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Obj:
    name: str
    box: tuple[int, int, int, int]  # VOC xmin, ymin, xmax, ymax (1-based, inclusive)
    difficult: bool = False


@dataclass
class Img:
    image_id: str
    width: int
    height: int
    objects: list[Obj] = field(default_factory=list)


def annotation_xml(img: Img) -> str:
    objects = "".join(
        f"<object><name>{o.name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{int(o.difficult)}</difficult><bndbox><xmin>{o.box[0]}</xmin><ymin>{o.box[1]}</ymin>"
        f"<xmax>{o.box[2]}</xmax><ymax>{o.box[3]}</ymax></bndbox></object>"
        for o in img.objects
    )
    return (f"<annotation><folder>VOC2007</folder><filename>{img.image_id}.jpg</filename>"
            f"<size><width>{img.width}</width><height>{img.height}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{objects}</annotation>")


def write_voc(root: Path, splits: dict[str, list[Img]], seed: int = 0) -> Path:
    """Create ``root/VOC2007`` with one JPEG (noise + white boxes) and one XML per image."""
    voc = root / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, images in splits.items():
        (voc / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i.image_id}\n" for i in images))
        for img in images:
            pixels = rng.integers(0, 60, size=(img.height, img.width, 3), dtype=np.uint8)
            for o in img.objects:
                x1, y1, x2, y2 = o.box
                pixels[y1 - 1:y2, x1 - 1:x2] = 255
            Image.fromarray(pixels).save(voc / "JPEGImages" / f"{img.image_id}.jpg", quality=95)
            (voc / "Annotations" / f"{img.image_id}.xml").write_text(annotation_xml(img))
    return voc
