"""Datasets and image folders.

Layouts `open_dataset` reads (``format="auto"`` detects them in this order):

* **voc**: Pascal VOC, ``ROOT/JPEGImages/*.jpg`` + palette PNGs in ``ROOT/SegmentationClass``,
  the image list in ``ROOT/ImageSets/Segmentation/<split>.txt`` (default split ``val``);
  21 classes, 255 = ignore (the object borders).
* **cityscapes**: ``ROOT/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` +
  ``ROOT/gtFine/<split>/<city>/*_gtFine_labelIds.png``; label ids are mapped to the 19
  train ids, everything else to 255 = ignore (default split ``val``).
* **canonical** (that of CamVid here and of ``calib/``): ``DIR/images/*.{jpg,png}`` +
  ``DIR/labels/*.png`` (8-bit or 16-bit class-index maps, matched by file stem) + a
  ``classes.json`` in DIR or its parent. A split is either a sub-folder
  (``DIR/<split>/images``, CamVid style) or a stem list ``DIR/splits/<split>.txt``.
* **images**: a folder of images (or its ``images/`` sub-folder), no labels, for calibration
  (a split, if asked for, is the stem list ``DIR/splits/<split>.txt``).

Iterating a dataset yields `Sample(stem, image, label)`: image HxWx3 uint8 RGB, label HxW
int64 or None. Labels are checked as they are read: same size as the image, values in
``0..num_classes-1`` or the ignore index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from segdeploy.classes import ClassInfo, default_palette, load_classes
from segdeploy.errors import SegdeployError
from segdeploy.images import SIXTEEN_BIT_MODES, open_image, read_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FORMATS = ("auto", "canonical", "voc", "cityscapes", "images")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# Cityscapes label ids (cityscapesScripts labels.py) of the 19 evaluated classes, in train-id order.
CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
IGNORE_255 = 255


class Sample(NamedTuple):
    stem: str
    image: np.ndarray  # HxWx3 uint8 RGB
    label: np.ndarray | None  # HxW int64 class indices, or None for image-only data


class Dataset:
    """An ordered list of (stem, image file, label file) with the class definitions."""

    def __init__(
        self,
        items: Sequence[tuple[str, Path, Path | None]],
        classes: ClassInfo | None,
        *,
        root: Path,
        format: str,
        label_lut: np.ndarray | None = None,
    ):
        self.items = list(items)
        self.classes = classes
        self.root = root
        self.format = format
        self._lut = label_lut  # raw label value -> class index (Cityscapes ids -> train ids)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self.items)):
            yield self[index]

    def __getitem__(self, index: int) -> Sample:
        stem, image_path, label_path = self.items[index]
        image = read_rgb(image_path)
        label = None if label_path is None else self._read_label(label_path, image.shape[:2])
        return Sample(stem, image, label)

    @property
    def has_labels(self) -> bool:
        return bool(self.items) and self.items[0][2] is not None

    @property
    def image_paths(self) -> list[Path]:
        return [item[1] for item in self.items]

    def subset(self, stems: Sequence[str]) -> "Dataset":
        """The samples whose stems are listed, in that order."""
        by_stem = {item[0]: item for item in self.items}
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise SegdeployError(f"{len(missing)} listed stem(s) not in {self.root}, e.g. {missing[0]!r}")
        return Dataset([by_stem[s] for s in stems], self.classes, root=self.root, format=self.format, label_lut=self._lut)

    def _read_label(self, path: Path, image_hw: tuple[int, int]) -> np.ndarray:
        label = read_label(path)
        if label.shape != tuple(image_hw):
            raise SegdeployError(
                f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is {image_hw[1]}x{image_hw[0]} (WxH)",
                "labels must have the image's size as displayed (EXIF orientation is applied to both)",
            )
        if self._lut is not None:
            label = self._lut[np.clip(label, 0, len(self._lut) - 1)]
        self._check_values(label, path)
        return label

    def _check_values(self, label: np.ndarray, path: Path) -> None:
        if self.classes is None:
            return
        n, ignore = self.classes.num_classes, self.classes.ignore_index
        present = np.unique(label)
        bad = present[((present < 0) | (present >= n)) & (present != (ignore if ignore is not None else -1))]
        if bad.size:
            raise SegdeployError(
                f"label {path} has values {bad[:5].tolist()} outside the {n} classes (0..{n - 1})"
                + (f" and not the ignore index {ignore}" if ignore is not None else " (no ignore_index set)"),
                "fix classes.json (classes, ignore_index) or the label maps",
            )


LABEL_MODES = ("L", "P", "1", "I", *SIXTEEN_BIT_MODES)  # single-channel integer maps


def read_label(path: str | Path) -> np.ndarray:
    """Read a class-index map as HxW int64: 8-bit, palette (its indices, not colours) or 16-bit PNGs
    (their integer values, never rescaled). Colour-coded, alpha and float label files are refused."""
    with open_image(path, "label") as img:
        if img.mode not in LABEL_MODES:
            raise SegdeployError(
                f"label {path} is a {img.mode} image, not a class-index map",
                "save labels as single-channel 8-bit, 16-bit or palette PNGs holding class indices; "
                "map colour-coded labels to indices first",
            )
        try:
            return np.asarray(img).astype(np.int64)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise SegdeployError(f"cannot decode label {path}: {exc}", "is the file complete?") from None


def default_calib_dir() -> Path:
    """The project's shipped `calib/` folder at the repository root (beside the package): the
    default calibration images, bench data and demo model."""
    import segdeploy

    return Path(segdeploy.__file__).resolve().parents[1] / "calib"


def find_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (its `images/` sub-folder if it has one), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SegdeployError(f"image folder not found: {folder}")
    root = folder / "images" if (folder / "images").is_dir() else folder
    images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise SegdeployError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return images


# -- opening ------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """Which layout a folder holds: voc, cityscapes, canonical or images."""
    path = Path(path)
    if not path.is_dir():
        raise SegdeployError(f"dataset folder not found: {path}")
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "leftImg8bit").is_dir():
        return "cityscapes"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return "canonical"
    return "images"


def open_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    split: str | None = None,
    classes: ClassInfo | str | Path | None = None,
    labels: bool = True,
) -> Dataset:
    """Open a dataset folder (see the module docstring for the layouts).

    `classes` overrides the layout's class definitions (a ClassInfo or a classes.json);
    `labels=False` reads images only (e.g. calibration from a labelled set).
    """
    path = Path(path)
    if format not in FORMATS:
        raise SegdeployError(f"unknown dataset format {format!r}; valid: {', '.join(FORMATS)}")
    if split is not None and format in ("auto", "canonical") and (path / split / "images").is_dir():
        path, split = path / split, None  # CamVid style: DIR/<split>/images
    fmt = detect_format(path) if format == "auto" else format
    if isinstance(classes, (str, Path)):
        classes = load_classes(classes)
    opener = {"voc": _open_voc, "cityscapes": _open_cityscapes, "canonical": _open_canonical, "images": _open_images}
    dataset = opener[fmt](path, split, classes)
    if not labels:
        dataset.items = [(stem, image, None) for stem, image, _ in dataset.items]
    if not dataset.items:
        raise SegdeployError(f"no images in {path}" + (f" for split {split!r}" if split else ""))
    return dataset


def _open_images(path: Path, split: str | None, classes: ClassInfo | None) -> Dataset:
    images = find_images(path)
    if classes is None:
        found = _find_classes_file(path)
        classes = load_classes(found) if found else None
    dataset = Dataset([(p.stem, p, None) for p in images], classes, root=path, format="images")
    return dataset.subset(_read_list(path / "splits" / f"{split}.txt")) if split is not None else dataset


def _open_canonical(path: Path, split: str | None, classes: ClassInfo | None) -> Dataset:
    images = find_images(path)
    labels_dir = path / "labels"
    if not labels_dir.is_dir():
        raise SegdeployError(f"{path} has no labels/ folder", "the canonical layout is DIR/images + DIR/labels")
    unlabelled = [p.name for p in images if not (labels_dir / f"{p.stem}.png").is_file()]
    if unlabelled:
        raise SegdeployError(
            f"{len(unlabelled)} image(s) in {path / 'images'} have no label {labels_dir}/<stem>.png, "
            f"e.g. {unlabelled[0]}",
            "add the labels or remove those images",
        )
    if classes is None:
        found = _find_classes_file(path)
        if found is None:
            raise SegdeployError(f"no classes.json in {path} or its parent", "add one (class names, ignore_index)")
        classes = load_classes(found)
    items = [(p.stem, p, labels_dir / f"{p.stem}.png") for p in images]
    dataset = Dataset(items, classes, root=path, format="canonical")
    if split is not None:
        dataset = dataset.subset(_read_list(path / "splits" / f"{split}.txt"))
    return dataset


def _open_voc(path: Path, split: str | None, classes: ClassInfo | None) -> Dataset:
    split = split or "val"
    stems = _read_list(path / "ImageSets" / "Segmentation" / f"{split}.txt")
    items = []
    for stem in stems:
        image, label = path / "JPEGImages" / f"{stem}.jpg", path / "SegmentationClass" / f"{stem}.png"
        if not image.is_file():
            raise SegdeployError(f"VOC split {split!r} lists {stem} but {image} does not exist")
        if not label.is_file():
            raise SegdeployError(f"VOC image {stem} has no label {label}")
        items.append((stem, image, label))
    classes = classes or ClassInfo(VOC_CLASSES, default_palette(len(VOC_CLASSES)), IGNORE_255)
    return Dataset(items, classes, root=path, format="voc")


def _open_cityscapes(path: Path, split: str | None, classes: ClassInfo | None) -> Dataset:
    split = split or "val"
    image_root = path / "leftImg8bit" / split
    if not image_root.is_dir():
        raise SegdeployError(f"Cityscapes split folder not found: {image_root}")
    items = []
    for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = path / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise SegdeployError(f"Cityscapes image {image.name} has no label {label}")
        items.append((stem, image, label))
    lut = np.full(256, IGNORE_255, dtype=np.int64)
    lut[list(CITYSCAPES_EVAL_IDS)] = np.arange(len(CITYSCAPES_EVAL_IDS))
    classes = classes or ClassInfo(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_255)
    return Dataset(items, classes, root=path, format="cityscapes", label_lut=lut)


def _find_classes_file(path: Path) -> Path | None:
    for folder in (path, path.parent):
        if (folder / "classes.json").is_file():
            return folder / "classes.json"
    return None


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        siblings = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        raise SegdeployError(f"split list not found: {path}", f"available splits: {', '.join(siblings) or 'none'}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
