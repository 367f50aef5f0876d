"""Datasets and image folders.

Canonical layout (that of CamVid here): ``DIR/images/*.{jpg,png}`` + ``DIR/labels/*.png``
(class-index maps matched by file stem) + optional ``DIR/classes.json``.
"""

from __future__ import annotations

from pathlib import Path

from segdeploy.errors import SegdeployError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
