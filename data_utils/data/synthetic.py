"""Deterministic generator of the embedded offline dataset (a VOC 2007 look-alike).

Real PASCAL VOC 2007 cannot be downloaded everywhere the course runs (offline
machines, CI, the autograder), so the package can draw its own small detection
dataset and write it in the *real* VOC layout::

    <root>/VOCdevkit/VOC2007/
        JPEGImages/<id>.jpg            RGB JPEG, quality 90, no EXIF / timestamps
        Annotations/<id>.xml           VOC XML schema (folder, filename, source,
                                       size, segmented, object/name/pose/
                                       truncated/difficult/bndbox)
        ImageSets/Main/train.txt       one six-digit id per line, sorted
        ImageSets/Main/val.txt
        ImageSets/Main/trainval.txt    = train + val (sorted)
        ImageSets/Main/test.txt        held-out images, disjoint from trainval
        embedded_dataset.json          marker: generator version + parameters

so every loader, transform and evaluator written for VOC works on it unchanged.

What is drawn
-------------
Eight object classes, each named after one of the 20 VOC classes (labels stay in
VOC's 20-class space), each with its own shape *and* colour/texture:

===========  =========================================================
aeroplane    green isosceles triangle, rotated up to +-30 degrees
bicycle      orange ring (annulus), any rotation
bottle       cyan tall diamond (rhombus, height 1.3-1.8x width)
car          red filled ellipse, any rotation
cat          yellow five-pointed star, any rotation
diningtable  brown/cream checkerboard rectangle, rotated up to +-12 degrees
person       magenta plus-shaped cross, rotated up to +-20 degrees
tvmonitor    dark rectangular frame around a blue "screen", wider than tall
===========  =========================================================

Colours are jittered in hue (+-15 degrees), saturation and value, every object
gets a shading gradient and pixel noise, and about 8% of objects are drawn in
*low contrast* (a colour 25-45 levels away from the pixels they cover).
Backgrounds are gradients, smooth colour noise, stripes or flat colour, all with
pixel noise.  Images are 200-500 px on each side (VOC-like 4:3, 3:2, 1:1 ...,
landscape or portrait), so resizing to fit 224x224 needs letterboxing.

Each image holds 1-8 objects (mean about 3.7); the first object of image ``i``
of a split has class ``i + 3 * split`` (cyclically), so every class appears in
every split of 8 images or more.  Object sizes are sampled in the
224-pixel space the networks see (``s224 = max side * 224 / max(W, H)``): about
5% tiny (6-10 px, marked ``difficult``), 35% small (10-40 px, FPN level p3),
35% medium (40-130 px) and 25% large (130-220 px, p5).  Objects overlap and
occlude each other (every object keeps at least 25% of its pixels visible;
objects with less than 45% visible are marked ``difficult``, as VOC marks
heavily occluded objects), and about 12% are placed across the image border
(``truncated=1``).  With the defaults about 15% of the objects are difficult
and 15% truncated.

Boxes
-----
Every ``<bndbox>`` is the *tight* box of the pixels the object's shape covered
when it was drawn (shapes are rasterised without anti-aliasing), *before* any
later object occluded it, restricted to the image when the shape was cut by the
border.  Corners use VOC's 1-based inclusive integer convention:
``1 <= xmin < xmax <= width`` and ``1 <= ymin < ymax <= height``; a box
covering the pixel columns ``c0..c1`` (0-based) is written ``xmin = c0 + 1,
xmax = c1 + 1``, i.e. the continuous box ``[xmin - 1, xmax]`` (the convention of
:class:`data_utils.types.GroundTruth`).  JPEG compression blurs edges by about one
pixel; the box refers to the uncompressed drawing.

Determinism
-----------
The same arguments give byte-identical files with the same numpy / Pillow /
libjpeg versions.  Image ``i`` of a split is drawn from its own
``numpy.random.Generator`` seeded with ``(seed, split, i)``, so its pixels do not
depend on the sizes of the other splits (its *id* does: ids are a seeded
permutation of ``1..N`` so that, as in VOC, splits interleave).

Default size and speed
----------------------
``train 256, val 96, test 96`` images (448 in all, ~1680 objects, ~15 MB):
about 4-5 s of CPU time (~10 ms per image), spread over the available cores
by threads (``workers``); ``python -m data_utils generate`` prints the time.
"""

from __future__ import annotations

import argparse
import colorsys
import concurrent.futures
import io
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from data_utils.cli_options import EXIT_FAILURE, EXIT_OK, add_data_root, add_no_progress, add_seed
from data_utils.data.download import default_root
from data_utils.errors import DatasetError

__all__ = [
    "DEFAULT_NUM_TEST",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "EMBEDDED_CLASSES",
    "GENERATOR_VERSION",
    "MARKER_NAME",
    "ObjectAnnotation",
    "add_arguments",
    "default_embedded_root",
    "ensure_embedded_dataset",
    "format_summary",
    "generate_dataset",
    "main",
    "render_image",
    "run",
    "summarize",
]

#: Bump whenever a change alters any generated byte (forces regeneration).
GENERATOR_VERSION: int = 1
#: Name of the marker file written (last) inside ``VOC2007/``.
MARKER_NAME: str = "embedded_dataset.json"
DEFAULT_NUM_TRAIN: int = 256
DEFAULT_NUM_VAL: int = 96
DEFAULT_NUM_TEST: int = 96
#: What ``python -m data_utils generate`` does, for its ``--help``.
DESCRIPTION = "Generate the embedded offline VOC2007-style dataset (deterministic)."
#: JPEG quality of every written image (fixed: part of the determinism contract).
JPEG_QUALITY: int = 90

_VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

#: VOC class names drawn by the generator, in VOC (alphabetical) order.
EMBEDDED_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bottle",
    "car",
    "cat",
    "diningtable",
    "person",
    "tvmonitor",
)
assert set(EMBEDDED_CLASSES) <= set(_VOC_CLASSES)

# Base hue (degrees) of each class; diningtable/tvmonitor use two colours.
_HUES: dict[str, float] = {
    "car": 0.0,
    "bicycle": 30.0,
    "cat": 55.0,
    "aeroplane": 120.0,
    "bottle": 185.0,
    "tvmonitor": 225.0,
    "person": 300.0,
    "diningtable": 28.0,
}
_SPLITS: tuple[str, ...] = ("train", "val", "test")
_IMAGE_SIZE = 224  # side of the network input the size buckets refer to
_MIN_VISIBLE = 0.25  # every object keeps at least this fraction of its pixels
_DIFFICULT_VISIBLE = 0.45  # below this visible fraction an object is difficult
_DIFFICULT_SIZE_224 = 10.0  # objects smaller than this (224-px space) are difficult
_PARTIAL_PREFIX = ".VOC2007.partial."


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectAnnotation:
    """One drawn object as written to the XML.

    ``xmin..ymax`` are VOC 1-based inclusive pixel corners of the tight box of
    the drawn shape (clipped to the image); ``visible_fraction`` is the share of
    its in-image pixels not covered by later objects (not written to the XML).
    """

    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    truncated: bool
    difficult: bool
    visible_fraction: float


def _rgb(h_deg: float, s: float, v: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _class_colour(rng: np.random.Generator, name: str) -> np.ndarray:
    return _rgb(_HUES[name] + rng.uniform(-15, 15), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))


def _random_colour(rng: np.random.Generator, *, muted: bool = False) -> np.ndarray:
    if muted:
        return _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.9))
    return _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.8), rng.uniform(0.15, 0.95))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Return a channel-planar ``(3, height, width)`` uint8 background (planar is fast)."""
    kind = rng.choice(4, p=[0.3, 0.3, 0.25, 0.15])
    muted = rng.random() < 0.5
    c1 = _random_colour(rng, muted=muted)
    c2 = _random_colour(rng, muted=muted)
    if rng.random() < 0.2:  # low-contrast background: two close colours
        c2 = np.clip(c1 + rng.uniform(-25, 25, 3), 0, 255).astype(np.float32)
    t: np.ndarray | None = None  # (H, W) mixing weight of c2
    smooth: np.ndarray | None = None  # (H, W, 3) uint8
    if kind == 0:  # linear gradient
        phi = rng.uniform(0, 2 * math.pi)
        xs = np.arange(width, dtype=np.float32) * np.float32(math.cos(phi))
        ys = np.arange(height, dtype=np.float32) * np.float32(math.sin(phi))
        t = ys[:, None] + xs[None, :]
        t -= t.min()
        t /= max(float(t.max()), 1.0)
    elif kind == 1:  # smooth colour noise: a few random colours, bicubic upsampled
        gw, gh = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        centre = (c1 + c2) / 2
        grid = np.clip(centre + rng.uniform(-70, 70, (gh, gw, 3)), 0, 255).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC))
    elif kind == 2:  # stripes, hard or soft
        phi = rng.uniform(0, math.pi)
        period = rng.uniform(8, 48)
        xs = np.arange(width, dtype=np.float32) * np.float32(math.cos(phi) * 2 * math.pi / period)
        ys = np.arange(height, dtype=np.float32) * np.float32(math.sin(phi) * 2 * math.pi / period)
        wave = np.sin(ys[:, None] + xs[None, :])
        t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else (wave + 1) / 2
    # (kind 3: flat colour)
    # luminance noise, the same in the three channels
    noise = _noise(rng, (height, width), rng.uniform(0, 12))
    out = np.empty((3, height, width), dtype=np.uint8)
    plane = np.empty((height, width), dtype=np.float32)
    for c in range(3):
        if smooth is not None:
            np.add(smooth[..., c], noise, out=plane)
        elif t is not None:
            np.multiply(t, c2[c] - c1[c], out=plane)
            plane += c1[c]
            plane += noise
        else:
            np.add(noise, c1[c], out=plane)
        np.clip(plane, 0, 255, out=plane)
        out[c] = plane
    return out


def _rotate(points: np.ndarray, angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=np.float64)
    return points @ rot.T


def _ellipse(w: float, h: float) -> np.ndarray:
    n = int(min(max((w + h) * 0.8, 16), 120))
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([w / 2 * np.cos(t), h / 2 * np.sin(t)], axis=1)


def _rect(w: float, h: float) -> np.ndarray:
    return np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])


_NOISE_TABLE_SIZE = 1 << 20
_noise_table: np.ndarray | None = None
_noise_lock = threading.Lock()


def _noise_table_get() -> np.ndarray:
    global _noise_table
    with _noise_lock:
        if _noise_table is None:
            _noise_table = np.random.default_rng(20070101).standard_normal(_NOISE_TABLE_SIZE, dtype=np.float32)
        return _noise_table


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean float32 pixel noise with standard deviation ``sigma``.

    Drawing ~10^5-10^6 normals per image dominates the generation time, so the
    noise is a window, at an offset drawn from ``rng``, into one fixed table of
    standard normals (the same table in every process: deterministic).
    """
    table = _noise_table if _noise_table is not None else _noise_table_get()
    n = int(np.prod(shape))
    if n > len(table):
        table = np.resize(table, n)
    offset = int(rng.integers(0, len(table) - n + 1))
    return table[offset : offset + n].reshape(shape) * np.float32(sigma)


@dataclass
class _Shape:
    """A rasterised object on its own canvas (local pixel coordinates)."""

    name: str
    size: float
    angle: float
    centre: tuple[float, float]  # the shape's centre in canvas coordinates
    mask: np.ndarray  # (ch, cw) bool
    box: tuple[int, int, int, int]  # tight box of mask, 0-based inclusive (x0, y0, x1, y1)
    inner: np.ndarray | None  # (ch, cw) bool: tvmonitor screen


def _polygon_mask(size: tuple[int, int], polys: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for pts, value in polys:
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=value)
    return np.asarray(canvas) > 0


def _draw_shape(rng: np.random.Generator, name: str, size: float) -> _Shape:
    """Rasterise the geometry of one object of class ``name`` (nominal longer side ``size`` px)."""
    angle = 0.0
    inner: np.ndarray | None = None
    if name == "car":
        aspect = rng.uniform(0.7, 1.0)
        w, h = size, size * aspect
        outer, angle = _ellipse(w, h), rng.uniform(0, 180)
    elif name == "bicycle":
        aspect = rng.uniform(0.75, 1.0)
        w, h = size, size * aspect
        k = rng.uniform(0.45, 0.62)
        outer, inner, angle = _ellipse(w, h), _ellipse(w * k, h * k), rng.uniform(0, 180)
    elif name == "aeroplane":
        w, h = size * rng.uniform(0.8, 1.0), size * rng.uniform(0.8, 1.0)
        outer = np.array([[0, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        angle = rng.uniform(-30, 30)
    elif name == "bottle":
        h = size
        w = h / rng.uniform(1.3, 1.8)
        outer = np.array([[0, -h / 2], [w / 2, 0], [0, h / 2], [-w / 2, 0]])
        angle = rng.uniform(-15, 15)
    elif name == "cat":
        r_out = size / 2
        r_in = r_out * rng.uniform(0.38, 0.5)
        t = -math.pi / 2 + np.arange(10) * (math.pi / 5)
        r = np.where(np.arange(10) % 2 == 0, r_out, r_in)
        outer = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        angle = rng.uniform(0, 72)
    elif name == "person":
        w, h = size * rng.uniform(0.8, 1.0), size * rng.uniform(0.8, 1.0)
        a, b = w * rng.uniform(0.15, 0.2), h * rng.uniform(0.15, 0.2)  # half arm thickness
        outer = np.array(
            [[-a, -h / 2], [a, -h / 2], [a, -b], [w / 2, -b], [w / 2, b], [a, b],
             [a, h / 2], [-a, h / 2], [-a, b], [-w / 2, b], [-w / 2, -b], [-a, -b]]
        )  # fmt: skip
        angle = rng.uniform(-20, 20)
    elif name == "tvmonitor":
        w = size
        h = w / rng.uniform(1.2, 1.6)
        outer = _rect(w, h)
        m = min(w, h) * rng.uniform(0.12, 0.18)
        inner = _rect(w - 2 * m, h - 2 * m)
        angle = rng.uniform(-10, 10)
    elif name == "diningtable":
        w = size
        h = w * rng.uniform(0.55, 0.9)
        outer = _rect(w, h)
        angle = rng.uniform(-12, 12)
    else:  # pragma: no cover - guarded by EMBEDDED_CLASSES
        raise ValueError(f"unknown class {name!r}")

    outer = _rotate(outer, angle)
    shift = 1.0 - np.floor(outer.min(axis=0))
    outer = outer + shift
    cw, ch = (int(v) for v in np.ceil(outer.max(axis=0)) + 2)
    inner_px = None if inner is None else _rotate(inner, angle) + shift
    if name == "bicycle":
        assert inner_px is not None
        mask = _polygon_mask((cw, ch), [(outer, 255), (inner_px, 0)])
    else:
        mask = _polygon_mask((cw, ch), [(outer, 255)])
    if not mask.any():  # degenerate (sub-pixel) shape: take the centre pixel
        mask[int(shift[1]), int(shift[0])] = True
    screen = _polygon_mask((cw, ch), [(inner_px, 255)]) if name == "tvmonitor" and inner_px is not None else None
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    return _Shape(name, size, angle, (float(shift[0]), float(shift[1])), mask, box, screen)


def _paint(rng: np.random.Generator, shape: _Shape, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Colours ``(3, N)`` float32 (channel-planar: fast) of the shape's canvas pixels ``(ys, xs)``:
    class colour/texture, a shading gradient and pixel noise."""
    base = _class_colour(rng, shape.name)
    cx, cy = shape.centre
    dx = xs.astype(np.float32) - np.float32(cx)
    dy = ys.astype(np.float32) - np.float32(cy)
    second: np.ndarray | None = None
    choose: np.ndarray | None = None  # True where ``base`` is used, else ``second``
    if shape.name == "diningtable":
        second = _rgb(rng.uniform(35, 55), rng.uniform(0.05, 0.25), rng.uniform(0.85, 1.0))
        a = math.radians(shape.angle)
        cell = np.float32(max(shape.size / rng.uniform(3, 6), 2.0))
        u = np.floor((dx * np.float32(math.cos(a)) + dy * np.float32(math.sin(a))) / cell)
        v = np.floor((dy * np.float32(math.cos(a)) - dx * np.float32(math.sin(a))) / cell)
        choose = (u + v) % 2 == 0
    elif shape.name == "tvmonitor":
        assert shape.inner is not None
        second = _rgb(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.08, 0.3))  # the frame
        choose = shape.inner[ys, xs]
    phi = rng.uniform(0, 2 * math.pi)
    amp = rng.uniform(0, 30) / max(shape.size, 1.0)
    shade = dx * np.float32(amp * math.cos(phi))
    shade += dy * np.float32(amp * math.sin(phi))
    shade += _noise(rng, (len(ys),), rng.uniform(0, 6))
    colours = np.empty((3, len(ys)), dtype=np.float32)
    for c in range(3):
        if choose is not None and second is not None:
            np.add(shade, np.where(choose, base[c], second[c]).astype(np.float32), out=colours[c])
        else:
            np.add(shade, base[c], out=colours[c])
    return colours


def _sample_image_size(rng: np.random.Generator) -> tuple[int, int]:
    long_side = int(rng.integers(300, 501)) if rng.random() < 0.85 else int(rng.integers(220, 300))
    ratio = float(rng.choice([0.75, 2 / 3, 1.0, 0.5625, 0.8])) if rng.random() < 0.7 else rng.uniform(0.5, 1.0)
    short_side = max(200, round(long_side * ratio))
    short_side = min(short_side, long_side)
    return (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)


def _sample_size_224(rng: np.random.Generator) -> float:
    bucket = rng.choice(4, p=[0.05, 0.35, 0.35, 0.25])
    lo, hi = [(6.0, 10.0), (10.0, 40.0), (40.0, 130.0), (130.0, 220.0)][bucket]
    return float(rng.uniform(lo, hi))


_NUM_OBJECTS_P = np.array([15, 20, 18, 15, 11, 9, 7, 5], dtype=np.float64)
_NUM_OBJECTS_P /= _NUM_OBJECTS_P.sum()


def render_image(
    rng: np.random.Generator,
    *,
    width: int | None = None,
    height: int | None = None,
    classes: Sequence[str] | None = None,
    first_class: str | None = None,
    background: tuple[int, int, int] | None = None,
    sizes_224: Sequence[float] | None = None,
) -> tuple[Image.Image, list[ObjectAnnotation]]:
    """Draw one image and return it (uncompressed RGB) with its annotations.

    Everything not given is sampled from ``rng``: the image size, the number of
    objects (1-8) and their classes (``first_class`` fixes the first one), their
    sizes in the 224-px space (``sizes_224``), placement and the background.
    ``classes`` fixes the classes of all objects (one per entry);
    ``background`` gives a flat, noise-free background colour (used by tests to
    check that boxes are tight).  Objects that cannot be placed without hiding
    more than 75% of an earlier object are skipped, so fewer objects than asked
    may be returned, but never none.
    """
    if width is None or height is None:
        width, height = _sample_image_size(rng)
    if background is None:
        img = _background(rng, width, height)
    else:
        img = np.empty((3, height, width), dtype=np.uint8)
        img[...] = np.asarray(background, dtype=np.uint8)[:, None, None]
    scale = _IMAGE_SIZE / max(width, height)

    if classes is None:
        n = int(rng.choice(8, p=_NUM_OBJECTS_P)) + 1
        names = [str(c) for c in rng.choice(EMBEDDED_CLASSES, size=n)]
        if first_class is not None:
            names[0] = first_class
    else:
        names = list(classes)
        n = len(names)
    for name in names:
        if name not in EMBEDDED_CLASSES:
            raise ValueError(f"unknown embedded class {name!r}; expected one of {EMBEDDED_CLASSES}")
    if sizes_224 is None:
        sizes = [_sample_size_224(rng) for _ in range(n)]
    else:
        sizes = [float(s) for s in sizes_224]
        if len(sizes) != n:
            raise ValueError("sizes_224 must have one entry per object")
    # mostly large-to-small, so that small objects are rarely hidden
    order = np.argsort([-s * rng.uniform(0.6, 1.4) for s in sizes], kind="stable")
    if first_class is not None and classes is None:
        order = np.concatenate([[0], order[order != 0]])  # the guaranteed object is drawn for sure

    owner = np.full((height, width), -1, dtype=np.int16)
    areas: list[int] = []
    visible: list[int] = []
    placed: list[tuple[str, tuple[int, int, int, int], bool]] = []
    for idx in order:
        name, s224 = names[idx], sizes[idx]
        size = max(s224 / scale, 3.0)
        low_contrast = rng.random() < 0.08
        shape = _draw_shape(rng, name, size)
        while True:  # too big for this image (rotation, aspect): shrink; terminates (size * <0.95)
            x0, y0, x1, y1 = shape.box
            bw, bh = x1 - x0 + 1, y1 - y0 + 1
            if bw <= width and bh <= height:
                break
            size *= 0.95 * min(width / bw, height / bh)
            shape = _draw_shape(rng, name, size)
        ch, cw = shape.mask.shape
        total = int(shape.mask.sum())
        result = None
        for attempt in range(12):
            mode = rng.random() if attempt < 11 else 1.0  # last try: anywhere fully inside
            if mode < 0.12:  # deliberately cut by a border
                side = int(rng.integers(4))
                frac = rng.uniform(0.15, 0.5)
                bx = int(rng.integers(0, width - bw + 1))
                by = int(rng.integers(0, height - bh + 1))
                if side == 0:
                    bx = -round(bw * frac)
                elif side == 1:
                    bx = width - bw + round(bw * frac)
                elif side == 2:
                    by = -round(bh * frac)
                else:
                    by = height - bh + round(bh * frac)
            elif mode < 0.45 and placed:  # next to an earlier object, so they overlap
                _, (px0, py0, px1, py1), _ = placed[int(rng.integers(len(placed)))]
                cx = rng.uniform(px0, px1) + rng.normal(0, 0.25) * bw
                cy = rng.uniform(py0, py1) + rng.normal(0, 0.25) * bh
                bx = int(np.clip(round(cx - bw / 2), 0, width - bw))
                by = int(np.clip(round(cy - bh / 2), 0, height - bh))
            else:
                bx = int(rng.integers(0, width - bw + 1))
                by = int(rng.integers(0, height - bh + 1))
            gx, gy = bx - x0, by - y0  # image position of the canvas origin
            ix0, iy0 = max(gx, 0), max(gy, 0)
            ix1, iy1 = min(gx + cw, width), min(gy + ch, height)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            m = shape.mask[iy0 - gy : iy1 - gy, ix0 - gx : ix1 - gx]
            inside = int(m.sum())
            if inside == 0 or inside < 0.4 * total:
                continue
            covered = owner[iy0:iy1, ix0:ix1][m]
            lost = np.bincount(covered[covered >= 0].astype(np.int64), minlength=len(areas))
            if any(visible[j] - lost[j] < _MIN_VISIBLE * areas[j] for j in range(len(areas))):
                continue
            result = (gx, gy, ix0, iy0, ix1, iy1, m, inside, lost)
            break
        if result is None:
            continue
        gx, gy, ix0, iy0, ix1, iy1, m, inside, lost = result
        ys, xs = np.nonzero(m)
        colours = _paint(rng, shape, ys + (iy0 - gy), xs + (ix0 - gx))
        region = img[:, iy0:iy1, ix0:ix1]
        if low_contrast:
            under = np.array([region[c][m].mean() for c in range(3)], dtype=np.float32)
            direction = rng.standard_normal(3)
            direction /= max(float(np.linalg.norm(direction)), 1e-6)
            offset = rng.uniform(25, 45)
            target = under + direction * offset
            # if clipping to [0, 255] would cancel the offset, go the other way
            if np.abs(np.clip(target, 0, 255) - under).max() < 20:
                target = under - direction * offset
            colours += (target - colours.mean(axis=1)).astype(np.float32)[:, None]
        np.clip(colours, 0, 255, out=colours)
        for c in range(3):
            region[c][m] = colours[c]
        for j, n_lost in enumerate(lost.tolist()):
            visible[j] -= n_lost
        owner[iy0:iy1, ix0:ix1][m] = len(areas)
        areas.append(inside)
        visible.append(inside)
        cols = np.flatnonzero(m.any(axis=0))
        rows = np.flatnonzero(m.any(axis=1))
        box = (ix0 + int(cols[0]), iy0 + int(rows[0]), ix0 + int(cols[-1]), iy0 + int(rows[-1]))
        placed.append((name, box, inside < total))

    annotations = []
    for k, (name, (x0, y0, x1, y1), truncated) in enumerate(placed):
        vis = visible[k] / areas[k]
        s224 = max(x1 - x0 + 1, y1 - y0 + 1) * scale
        difficult = vis < _DIFFICULT_VISIBLE or s224 < _DIFFICULT_SIZE_224
        # VOC corners: 1-based inclusive; make sure xmin < xmax, ymin < ymax
        xmin, ymin, xmax, ymax = x0 + 1, y0 + 1, x1 + 1, y1 + 1
        if xmax == xmin:
            xmax, xmin = (xmax + 1, xmin) if xmax < width else (xmax, xmin - 1)
        if ymax == ymin:
            ymax, ymin = (ymax + 1, ymin) if ymax < height else (ymax, ymin - 1)
        annotations.append(ObjectAnnotation(name, xmin, ymin, xmax, ymax, truncated, difficult, round(vis, 4)))
    return Image.merge("RGB", [Image.fromarray(plane) for plane in img]), annotations


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _annotation_xml(image_id: str, width: int, height: int, objects: Iterable[ObjectAnnotation]) -> str:
    lines = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>Embedded synthetic VOC2007-style dataset</database>",
        # The generator's name as of version 1 (before data_utils/data/ existed): part of the dataset's
        # bytes, so it stays while GENERATOR_VERSION does.
        f"\t\t<annotation>data_utils.synthetic v{GENERATOR_VERSION}</annotation>",
        "\t\t<image>synthetic</image>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        lines += [
            "\t<object>",
            f"\t\t<name>{o.name}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(o.truncated)}</truncated>",
            f"\t\t<difficult>{int(o.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{o.xmin}</xmin>",
            f"\t\t\t<ymin>{o.ymin}</ymin>",
            f"\t\t\t<xmax>{o.xmax}</xmax>",
            f"\t\t\t<ymax>{o.ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _write_image(path: Path, image: Image.Image) -> None:
    buf = io.BytesIO()
    # Pillow writes a plain JFIF header: no EXIF, no timestamps.
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)
    path.write_bytes(buf.getvalue())


def _write_annotation(path: Path, xml_text: str) -> None:
    path.write_bytes(xml_text.encode("utf-8"))


def _params(num_train: int, num_val: int, num_test: int, seed: int) -> dict[str, int]:
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if num_train < 1:
        raise ValueError("num_train must be at least 1")
    if num_train + num_val + num_test > 999_999:
        raise ValueError("at most 999999 images in all (ids have six digits)")
    return {"num_train": int(num_train), "num_val": int(num_val), "num_test": int(num_test), "seed": int(seed)}


def _marker(params: dict[str, int]) -> dict[str, Any]:
    return {
        # An identifier, not an import path: the marker is compared whole, so renaming it would reject
        # every dataset already generated (the module moved to data_utils/data/ with no change of output).
        "generator": "data_utils.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "classes": list(EMBEDDED_CLASSES),
        "jpeg_quality": JPEG_QUALITY,
    }


def _read_marker(voc_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((voc_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_stale_partials(devkit: Path) -> None:
    """Delete partial outputs of runs on this host whose process no longer exists (POSIX only:
    on Windows ``os.kill(pid, 0)`` would send CTRL_C_EVENT, so stale partials stay there)."""
    if os.name != "posix":
        return
    host = socket.gethostname()
    for p in devkit.glob(_PARTIAL_PREFIX + "*"):
        rest = p.name[len(_PARTIAL_PREFIX) :]
        pid_text, _, tail = rest.partition(".")
        if not pid_text.isdigit() or tail.rsplit(".", 1)[0] != host:
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (PermissionError, OverflowError, OSError):
            continue


def _render_and_write(out: str, seed: int, split_no: int, index: int, image_id: str) -> None:
    """Draw image ``index`` of split ``split_no`` and write its JPEG and XML into ``out``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_no, index]))
    # the first object cycles through the classes: every class is in every split of >= 8 images
    first = EMBEDDED_CLASSES[(index + 3 * split_no) % len(EMBEDDED_CLASSES)]
    image, objects = render_image(rng, first_class=first)
    _write_image(Path(out) / "JPEGImages" / f"{image_id}.jpg", image)
    _write_annotation(Path(out) / "Annotations" / f"{image_id}.xml", _annotation_xml(image_id, *image.size, objects))


def _render_chunk(jobs: Sequence[tuple[str, int, int, int, str]]) -> int:
    for job in jobs:
        _render_and_write(*job)
    return len(jobs)


def _resolve_workers(workers: int | None, total: int) -> int:
    if workers is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, 4, total // 16))
    if workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    return workers


def _plan(params: dict[str, int]) -> list[tuple[int, int, str]]:
    """``(split_no, index, image_id)`` of every image, in generation order (train, val, test).

    Ids are a seeded permutation of ``1..N`` written with six digits, so that,
    as in VOC, the splits interleave.
    """
    counts = [params["num_train"], params["num_val"], params["num_test"]]
    ids = np.random.default_rng(np.random.SeedSequence([params["seed"], 1_000_003])).permutation(sum(counts)) + 1
    plan = [(split_no, i) for split_no, n in enumerate(counts) for i in range(n)]
    return [(split_no, i, f"{int(ids[k]):06d}") for k, (split_no, i) in enumerate(plan)]


def _write_dataset(out: Path, params: dict[str, int], progress: bool, workers: int) -> None:
    """Write the whole dataset into ``out`` (an empty directory); marker last.

    With ``workers > 1`` the images are drawn by a pool of threads (numpy and
    Pillow release the GIL for the heavy parts; threads, unlike processes, are
    safe in notebooks and unguarded scripts); the bytes do not depend on ``workers``.
    """
    (out / "JPEGImages").mkdir()
    (out / "Annotations").mkdir()
    (out / "ImageSets" / "Main").mkdir(parents=True)
    jobs: list[tuple[str, int, int, int, str]] = []
    split_ids: dict[str, list[str]] = {s: [] for s in _SPLITS}
    for split_no, i, image_id in _plan(params):
        jobs.append((str(out), params["seed"], split_no, i, image_id))
        split_ids[_SPLITS[split_no]].append(image_id)
    total = len(jobs)

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="embedded dataset", unit="img")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
    try:
        if workers <= 1:
            for job in jobs:
                _render_and_write(*job)
                if bar is not None:
                    bar.update(1)
        else:
            _noise_table_get()  # build the shared table once, before the threads start
            size = max(1, min(16, total // (4 * workers)))
            chunks = [jobs[k : k + size] for k in range(0, total, size)]
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embedded")
            try:
                for done in pool.map(_render_chunk, chunks):
                    if bar is not None:
                        bar.update(done)
            finally:  # on error: drop queued chunks, wait for running ones before the caller cleans up
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()

    main_dir = out / "ImageSets" / "Main"
    lists = {s: sorted(v) for s, v in split_ids.items()}
    lists["trainval"] = sorted(split_ids["train"] + split_ids["val"])
    for name in ("train", "val", "trainval", "test"):
        (main_dir / f"{name}.txt").write_bytes("".join(f"{x}\n" for x in lists[name]).encode("ascii"))
    text = json.dumps(_marker(params), indent=2, sort_keys=True) + "\n"
    (out / MARKER_NAME).write_bytes(text.encode("utf-8"))


def generate_dataset(
    root: Path | str,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    num_test: int = DEFAULT_NUM_TEST,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Generate the embedded dataset under ``root`` and return ``root/VOCdevkit/VOC2007``.

    Contract:

    * The dataset is written into a temporary sibling directory
      (``root/VOCdevkit/.VOC2007.partial.*``) and renamed into place only once
      every file, the marker last, has been written: if ``VOC2007/`` exists with
      a marker, it is complete.  An exception removes the partial directory; a
      killed process leaves it behind, and the next run on the same host deletes it.
    * If ``VOC2007/`` already holds a dataset generated by this generator
      version with the same parameters, it is returned untouched (nothing is
      rewritten).
    * If it holds a different one (other parameters or generator version):
      with ``overwrite=True`` it is replaced (again atomically), otherwise a
      :class:`~data_utils.errors.DatasetError` explains what to do.
    * A ``VOC2007/`` without the marker (e.g. real VOC) is never touched:
      :class:`DatasetError`, even with ``overwrite=True``.
    * Same arguments -> byte-identical files (same numpy/Pillow/libjpeg).

    ``num_train >= 1``, ``num_val, num_test >= 0``, ``seed >= 0``.  ``progress``
    shows a tqdm bar.  ``workers``: threads drawing images (``None``: one per
    available CPU, at most 4, and one per 16 images); it never changes the
    output, so it is not recorded in the marker.
    """
    params = _params(num_train, num_val, num_test, seed)
    n_workers = _resolve_workers(workers, num_train + num_val + num_test)
    root = Path(root).expanduser()
    devkit = root / "VOCdevkit"
    final = devkit / "VOC2007"
    wanted = _marker(params)

    def check_existing() -> bool:
        """True if ``final`` already is the wanted dataset; raise if it must not be replaced."""
        if not final.exists():
            return False
        found = _read_marker(final)
        if found is None:
            raise DatasetError(
                f"{final} exists but has no {MARKER_NAME}: it is not a complete embedded dataset "
                "(it may be real VOC or a copy). Remove it yourself or choose another root."
            )
        if found == wanted:
            return True
        if not overwrite:
            raise DatasetError(
                f"{final} holds an embedded dataset generated with "
                f"version {found.get('version')} and parameters {found.get('params')}, "
                f"not version {GENERATOR_VERSION} with {params}. "
                "Pass overwrite=True (CLI: --overwrite) to regenerate it, or use another root."
            )
        return False

    if check_existing():
        return _readable_by_others(final)
    devkit.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(devkit)
    partial = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{os.getpid()}.{socket.gethostname()}.", dir=devkit))
    try:
        _write_dataset(partial, params, progress, n_workers)
        if check_existing():  # another process finished the same dataset meanwhile
            shutil.rmtree(partial, ignore_errors=True)
            return final
        if final.exists():  # overwrite: move the old one aside, then swap
            trash = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{os.getpid()}.{socket.gethostname()}.", dir=devkit))
            os.replace(final, trash / "old")
            os.replace(partial, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.replace(partial, final)
            except OSError:
                if not check_existing():  # not a concurrent run that just finished the same dataset
                    raise
                shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _readable_by_others(final)


def _readable_by_others(folder: Path) -> Path:
    """Give the dataset folder the permissions of an ordinary folder (``rwxr-xr-x``).

    It was written in a ``mkdtemp`` folder (mode 0700) and renamed: the
    grader's sandbox, which reads it as an unprivileged user, was refused.
    Datasets generated before this fix are repaired when next found.
    """
    try:
        mode = folder.stat().st_mode & 0o777
        if mode & 0o055 != 0o055 and folder.stat().st_uid == os.getuid():
            os.chmod(folder, mode | 0o055)
    except OSError:
        pass  # not ours to change; reading it still works for its owner
    return folder


def default_embedded_root() -> Path:
    """``embedded`` under the course's data folder (:func:`data_utils.data.download.default_root`:
    ``$COURSE_DATA``, else ``~/.cache/detection-course``)."""
    return default_root() / "embedded"


def ensure_embedded_dataset(root: Path | str | None = None, **params: Any) -> Path:
    """Return the ``VOC2007`` directory of the embedded dataset, generating it if missing.

    ``root`` defaults to :func:`default_embedded_root`; ``params`` are passed to
    :func:`generate_dataset` (``num_train``, ``num_val``, ``num_test``, ``seed``,
    ``overwrite``, ``progress``, ``workers``).  Cheap when the dataset already exists.
    """
    return generate_dataset(default_embedded_root() if root is None else Path(root), **params)


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def _fpn_level(max_side_224: float) -> str:
    return "p3" if max_side_224 < 64 else ("p4" if max_side_224 < 128 else "p5")


def summarize(voc2007_dir: Path | str) -> dict[str, Any]:
    """Statistics of a VOC-layout directory (embedded or real VOC 2007).

    Reads ``ImageSets/Main/{train,val,trainval,test}.txt`` (those present) and
    the annotations of the listed ids.  Returns a dict::

        images                 number of distinct listed ids
        objects, difficult, truncated
        per_class              {name: objects}  (all listed images)
        splits                 {split: {images, objects, difficult, truncated,
                                        per_class}}   (trainval: images only)
        objects_per_image      {min, mean, max, histogram {n: images}}
        image_size             {width: [min, max], height: [min, max]}
        size_per_fpn_level     {p3, p4, p5}: objects by their longer side after
                               scaling the image by 224 / max(W, H):
                               p3 < 64 <= p4 < 128 <= p5
        max_side_224           {min, p10, median, p90, max}
        size_buckets           {"<12", "12-40", "40-130", ">=130"} same scaling

    Raises :class:`DatasetError` if no split file exists or an annotation is missing.
    """
    voc = Path(voc2007_dir)
    main_dir = voc / "ImageSets" / "Main"
    split_lists: dict[str, list[str]] = {}
    for name in ("train", "val", "trainval", "test"):
        f = main_dir / f"{name}.txt"
        if f.exists():
            split_lists[name] = [line.strip() for line in f.read_text().splitlines() if line.strip()]
    if not split_lists:
        raise DatasetError(f"{main_dir} has no train/val/trainval/test.txt; is {voc} a VOC2007 directory?")

    records: dict[str, tuple[int, int, list[tuple[str, int, int, int, int, bool, bool]]]] = {}
    for image_id in sorted({i for ids in split_lists.values() for i in ids}):
        path = voc / "Annotations" / f"{image_id}.xml"
        try:
            tree = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise DatasetError(f"cannot read annotation {path}: {exc}") from exc
        width = int(tree.findtext("size/width", "0"))
        height = int(tree.findtext("size/height", "0"))
        objs = []
        for o in tree.iter("object"):
            bb = o.find("bndbox")
            assert bb is not None
            coords = [int(float(bb.findtext(k, "0"))) for k in ("xmin", "ymin", "xmax", "ymax")]
            objs.append(
                (
                    o.findtext("name", "").strip(),
                    *coords,
                    o.findtext("difficult", "0").strip() == "1",
                    o.findtext("truncated", "0").strip() == "1",
                )
            )
        records[image_id] = (width, height, objs)  # type: ignore[assignment]

    def stats(ids: Iterable[str]) -> dict[str, Any]:
        per_class: Counter[str] = Counter()
        n_img = n_obj = n_diff = n_trunc = 0
        for i in ids:
            n_img += 1
            for name, *_c, diff, trunc in records[i][2]:
                per_class[name] += 1
                n_obj += 1
                n_diff += diff
                n_trunc += trunc
        return {
            "images": n_img,
            "objects": n_obj,
            "difficult": n_diff,
            "truncated": n_trunc,
            "per_class": dict(sorted(per_class.items())),
        }

    overall = stats(records)
    splits = {}
    for name, ids in split_lists.items():
        splits[name] = {"images": len(ids)} if name == "trainval" else stats(ids)

    sides: list[float] = []
    levels = {"p3": 0, "p4": 0, "p5": 0}
    buckets = {"<12": 0, "12-40": 0, "40-130": 0, ">=130": 0}
    per_image = []
    for width, height, objs in records.values():
        per_image.append(len(objs))
        scale = _IMAGE_SIZE / max(width, height, 1)
        for _name, x0, y0, x1, y1, _d, _t in objs:
            s = max(x1 - x0 + 1, y1 - y0 + 1) * scale
            sides.append(s)
            levels[_fpn_level(s)] += 1
            key = "<12" if s < 12 else "12-40" if s < 40 else "40-130" if s < 130 else ">=130"
            buckets[key] += 1
    widths = [r[0] for r in records.values()]
    heights = [r[1] for r in records.values()]
    q = np.percentile(sides, [0, 10, 50, 90, 100]).tolist() if sides else [0.0] * 5
    return {
        "root": str(voc),
        "images": len(records),
        "objects": overall["objects"],
        "difficult": overall["difficult"],
        "truncated": overall["truncated"],
        "per_class": overall["per_class"],
        "splits": splits,
        "objects_per_image": {
            "min": min(per_image, default=0),
            "mean": round(float(np.mean(per_image)), 3) if per_image else 0.0,
            "max": max(per_image, default=0),
            "histogram": dict(sorted(Counter(per_image).items())),
        },
        "image_size": {
            "width": [min(widths, default=0), max(widths, default=0)],
            "height": [min(heights, default=0), max(heights, default=0)],
        },
        "size_per_fpn_level": levels,
        "max_side_224": dict(zip(("min", "p10", "median", "p90", "max"), (round(v, 1) for v in q))),
        "size_buckets": buckets,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable multi-line rendering of :func:`summarize`'s result."""
    split_names = [s for s in ("train", "val", "test") if s in summary["splits"]]
    lines = [
        f"{summary['images']} images, {summary['objects']} objects "
        f"({summary['difficult']} difficult, {summary['truncated']} truncated)",
        "images per split: " + ", ".join(f"{s} {v['images']}" for s, v in summary["splits"].items()),
        "objects per image: min {min}, mean {mean}, max {max}".format(**summary["objects_per_image"]),
        "image size: width {0[0]}-{0[1]}, height {1[0]}-{1[1]}".format(
            summary["image_size"]["width"], summary["image_size"]["height"]
        ),
        "objects per class: " + "".join(f"{s:>7}" for s in split_names),
    ]
    classes = sorted({c for s in split_names for c in summary["splits"][s]["per_class"]})
    for c in classes:
        lines.append(f"  {c:<16}" + "".join(f"{summary['splits'][s]['per_class'].get(c, 0):>7}" for s in split_names))
    lines.append(
        "size per FPN level (longer side at 224 px; p3 < 64 <= p4 < 128 <= p5): "
        + ", ".join(f"{k} {v}" for k, v in summary["size_per_fpn_level"].items())
    )
    lines.append("size buckets: " + ", ".join(f"{k} {v}" for k, v in summary["size_buckets"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m data_utils generate`` (the shared convention of :mod:`data_utils.cli_options`)."""
    add_data_root(parser, help="generate into DIR (default: $COURSE_DATA/embedded or ~/.cache/detection-course/embedded)",
                  deprecated=("--root",))
    add_seed(parser, default=0, help="seed of the generated images (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--num-test", type=int, default=DEFAULT_NUM_TEST)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with other parameters")
    parser.add_argument("--workers", type=int, default=None, help="threads drawing images (default: one per CPU, at most 4)")
    add_no_progress(parser, keep_progress=True)


def run(args: argparse.Namespace) -> int:
    """Generate (or find) the embedded dataset of ``args`` (see :func:`add_arguments`), print its
    ``VOC2007`` path and a summary; 0, or 1 with a message on stderr when it cannot be generated."""
    start = time.perf_counter()
    try:
        path = ensure_embedded_dataset(
            args.data_root,
            num_train=args.num_train,
            num_val=args.num_val,
            num_test=args.num_test,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            workers=args.workers,
        )
    except (DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    elapsed = time.perf_counter() - start
    print(path)
    print(f"ready in {elapsed:.1f} s")
    print(format_summary(summarize(path)))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m data_utils generate [--data-root DIR] [--seed N] [--num-train N] ...``: :func:`run`.

    A leading ``generate`` in ``argv`` is optional."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "generate":
        args_list = args_list[1:]
    parser = argparse.ArgumentParser(prog="python -m data_utils generate", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(args_list))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
