#!/usr/bin/env python
"""Generate calib/: procedural street-like scenes with exact label maps.

Deterministic: image i is drawn from ``numpy.random.default_rng([seed, i])`` only, so the
same seed gives the same scenes (pixel-identical with the same Pillow/libjpeg).

    python scripts/make_calib.py                     # writes calib/ (160 images, seed 0)
    python scripts/make_calib.py -o /tmp/c --count 20 --seed 3

Output (the canonical layout, see segdeploy/data.py): ``images/<stem>.jpg``,
``labels/<stem>.png`` (8-bit class indices, 255 = ignore), ``classes.json``,
``splits/train.txt`` and ``splits/val.txt`` (every fourth image is val).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ["sky", "road", "building", "vegetation", "car", "pole"]
PALETTE = [[70, 130, 180], [128, 64, 128], [70, 70, 70], [107, 142, 35], [0, 0, 142], [153, 153, 153]]
SKY, ROAD, BUILDING, VEGETATION, CAR, POLE = range(len(CLASSES))
IGNORE = 255
# Per-class texture strength (relative brightness modulation): foliage is mottled, sky smooth.
TEXTURE = np.array([0.04, 0.10, 0.12, 0.35, 0.06, 0.08], dtype=np.float32)
SIZE = (240, 180)  # W, H


class Canvas:
    """An RGB image and its label map, drawn in step (painter's order)."""

    def __init__(self, rng: np.random.Generator, size=SIZE):
        self.rng = rng
        self.size = size
        self.image = Image.new("RGB", size)
        self.label = Image.new("L", size)
        self.draw_image = ImageDraw.Draw(self.image)
        self.draw_label = ImageDraw.Draw(self.label)

    def polygon(self, points, colour, cls) -> None:
        self.draw_image.polygon(points, fill=tuple(int(c) for c in colour))
        self.draw_label.polygon(points, fill=cls)

    def rect(self, box, colour, cls) -> None:
        self.draw_image.rectangle(box, fill=tuple(int(c) for c in colour))
        self.draw_label.rectangle(box, fill=cls)

    def ellipse(self, box, colour, cls) -> None:
        self.draw_image.ellipse(box, fill=tuple(int(c) for c in colour))
        self.draw_label.ellipse(box, fill=cls)

    def jitter(self, colour, amount: float = 25):
        return np.clip(np.asarray(colour, float) + self.rng.normal(0, amount, 3), 0, 255)


def draw_sky(c: Canvas, horizon: int) -> None:
    w, _ = c.size
    top, bottom = c.jitter([90, 140, 210], 30), c.jitter([200, 215, 230], 20)
    if c.rng.random() < 0.3:  # overcast: grey sky, closer to buildings' colours
        top, bottom = c.jitter([150, 150, 160], 15), c.jitter([190, 190, 195], 10)
    for y in range(horizon + 1):
        t = y / max(horizon, 1)
        c.draw_image.line([(0, y), (w, y)], fill=tuple(int(v) for v in top * (1 - t) + bottom * t))
    c.draw_label.rectangle([0, 0, w, horizon], fill=SKY)


def draw_ground(c: Canvas, horizon: int) -> float:
    """Grass verges and a road trapezoid towards a vanishing point; returns its x."""
    w, h = c.size
    c.rect([0, horizon, w, h], c.jitter([90, 120, 50], 20), VEGETATION)
    vx = c.rng.uniform(0.3, 0.7) * w
    left, right = c.rng.uniform(-0.6, 0.15) * w, c.rng.uniform(0.85, 1.6) * w
    c.polygon([(vx - 4, horizon), (vx + 4, horizon), (right, h), (left, h)], c.jitter([105, 100, 105], 18), ROAD)
    paint = c.jitter([235, 235, 225], 10)
    for k in range(6):  # dashed centre line, drawn into the image only: it is road
        t0, t1 = (k + 0.2) / 6, (k + 0.55) / 6
        y0, y1 = horizon + (h - horizon) * t0**1.5, horizon + (h - horizon) * t1**1.5
        x_at = lambda y: vx + ((left + right) / 2 - vx) * (y - horizon) / (h - horizon)  # noqa: E731
        half0, half1 = 0.5 + 3 * t0, 0.5 + 3 * t1
        c.draw_image.polygon([(x_at(y0) - half0, y0), (x_at(y0) + half0, y0), (x_at(y1) + half1, y1), (x_at(y1) - half1, y1)],
                             fill=tuple(int(v) for v in paint))  # fmt: skip
    return vx


def draw_building(c: Canvas, x0: float, x1: float, horizon: int) -> None:
    top = c.rng.uniform(0.05, 0.8) * horizon
    base = c.jitter(c.rng.choice([[150, 90, 70], [170, 160, 140], [120, 120, 125], [200, 190, 170]]), 20)
    c.rect([x0, top, x1, horizon + 2], base, BUILDING)
    window = c.jitter([50, 60, 80], 20)
    step_x, step_y = c.rng.uniform(8, 16), c.rng.uniform(9, 16)
    for wy in np.arange(top + 4, horizon - 6, step_y):
        for wx in np.arange(x0 + 3, x1 - 6, step_x):
            c.rect([wx, wy, wx + step_x * 0.5, wy + step_y * 0.5], window, BUILDING)


def draw_tree(c: Canvas, x: float, ground: float) -> None:
    height = c.rng.uniform(25, 70)
    c.rect([x - 1.5, ground - height * 0.5, x + 1.5, ground], c.jitter([80, 60, 40], 10), VEGETATION)
    green = c.jitter([60, 110, 40], 25)
    for _ in range(int(c.rng.integers(3, 7))):
        cx, cy = x + c.rng.normal(0, height * 0.2), ground - height * c.rng.uniform(0.55, 1.0)
        r = height * c.rng.uniform(0.15, 0.3)
        c.ellipse([cx - r, cy - r, cx + r, cy + r], c.jitter(green, 12), VEGETATION)


def draw_car(c: Canvas, x: float, bottom: float, scale: float) -> None:
    w, h = 46 * scale, 20 * scale
    body = c.jitter(c.rng.choice([[180, 30, 30], [30, 60, 160], [200, 200, 205], [40, 40, 45], [120, 120, 125]]), 20)
    c.rect([x, bottom - h * 0.65, x + w, bottom - h * 0.15], body, CAR)
    c.polygon([(x + w * 0.2, bottom - h * 0.65), (x + w * 0.3, bottom - h), (x + w * 0.72, bottom - h),
               (x + w * 0.82, bottom - h * 0.65)], body * 0.9, CAR)  # fmt: skip
    c.polygon([(x + w * 0.28, bottom - h * 0.68), (x + w * 0.33, bottom - h * 0.93), (x + w * 0.69, bottom - h * 0.93),
               (x + w * 0.76, bottom - h * 0.68)], c.jitter([60, 80, 100], 15), CAR)  # fmt: skip
    r = h * 0.2
    for wx in (x + w * 0.22, x + w * 0.78):
        c.ellipse([wx - r, bottom - 2 * r, wx + r, bottom], [20, 20, 20], CAR)


def draw_pole(c: Canvas, x: float, ground: float) -> None:
    height, width = c.rng.uniform(40, 110), c.rng.uniform(1.5, 3.5)
    colour = c.jitter([110, 110, 115], 25)
    c.rect([x, ground - height, x + width, ground], colour, POLE)
    if c.rng.random() < 0.5:  # a sign or a lamp on top, part of the pole
        s = c.rng.uniform(5, 10)
        c.rect([x - s / 2, ground - height - s, x + width + s / 2, ground - height], c.jitter([200, 180, 40], 40), POLE)


def render_scene(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One street-like scene: (RGB image, label map)."""
    c = Canvas(rng)
    w, h = c.size
    horizon = int(rng.uniform(0.35, 0.55) * h)
    draw_sky(c, horizon)
    x = rng.uniform(-30, 10)
    while x < w:  # a skyline of buildings with gaps
        width = rng.uniform(25, 80)
        if rng.random() < 0.75:
            draw_building(c, x, x + width, horizon)
        x += width + rng.uniform(0, 25)
    vx = draw_ground(c, horizon)
    for _ in range(int(rng.integers(1, 6))):
        draw_tree(c, rng.uniform(0, w), horizon + rng.uniform(-2, 8))
    for y in sorted(rng.uniform(horizon + 8, h + 5, int(rng.integers(0, 5)))):  # far cars first
        scale = 0.25 + 1.3 * (y - horizon) / (h - horizon)
        draw_car(c, vx + rng.normal(0, 0.5) * (y - horizon) - 23 * scale, y, scale)
    for _ in range(int(rng.integers(0, 4))):
        draw_pole(c, rng.uniform(0, w), horizon + rng.uniform(0, 0.4) * (h - horizon))
    if rng.random() < 0.25:  # an ego-vehicle hood, unlabelled (ignore), as in Cityscapes
        top = h - rng.uniform(8, 18)
        c.polygon([(0, h), (w * 0.1, top), (w * 0.9, top), (w, h)], c.jitter([30, 30, 35], 10), IGNORE)
    return finish(c, rng), c.label


def finish(c: Canvas, rng: np.random.Generator) -> Image.Image:
    """Texture per class, lighting, sensor noise and blur."""
    w, h = c.size
    label = np.asarray(c.label)
    amount = np.where(label == IGNORE, 0.05, TEXTURE[np.minimum(label, len(TEXTURE) - 1)])
    image = np.asarray(c.image, dtype=np.float32)
    image *= 1 + amount[..., None] * (smooth_noise(rng, (h, w), 3) + smooth_noise(rng, (h, w), 1))[..., None]
    shade = 1 + 0.25 * smooth_noise(rng, (h, w), 24)  # soft shadows
    image = image * shade[..., None] * rng.uniform(0.7, 1.25) + rng.normal(0, 12, 3)  # lighting, white balance
    image += rng.normal(0, rng.uniform(2, 8), image.shape)  # sensor noise
    out = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.0))))


def smooth_noise(rng: np.random.Generator, hw: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean noise in about [-1, 1] with features of `cell` pixels (bilinear upsampled)."""
    h, w = hw
    coarse = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    up = Image.fromarray(coarse, mode="F").resize(((w // cell + 2) * cell, (h // cell + 2) * cell), Image.BILINEAR)
    return np.asarray(up)[:h, :w]


def write_dataset(out: Path, count: int, seed: int, quality: int = 85) -> None:
    if out.exists():
        shutil.rmtree(out / "images", ignore_errors=True)
        shutil.rmtree(out / "labels", ignore_errors=True)
        shutil.rmtree(out / "splits", ignore_errors=True)
    for sub in ("images", "labels", "splits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    stems = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        image, label = render_scene(rng)
        stem = f"scene_{index:04d}"
        image.save(out / "images" / f"{stem}.jpg", quality=quality)
        label.save(out / "labels" / f"{stem}.png", optimize=True)
        stems.append(stem)
    val = stems[3::4]
    train = [s for s in stems if s not in set(val)]
    (out / "splits" / "train.txt").write_text("\n".join(train) + "\n")
    (out / "splits" / "val.txt").write_text("\n".join(val) + "\n")
    classes = {"name": "segdeploy synthetic streets", "classes": CLASSES, "palette": PALETTE, "ignore_index": IGNORE}
    (out / "classes.json").write_text(json.dumps(classes, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=Path(__file__).resolve().parents[1] / "calib")
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_dataset(args.out, args.count, args.seed)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.count} scenes to {args.out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
