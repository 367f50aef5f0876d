"""Colourised class maps and overlays (numpy only)."""

from __future__ import annotations

import numpy as np


def colourise(class_map: np.ndarray, palette) -> np.ndarray:
    """HxW class indices → HxWx3 uint8 colours from the palette (indices past it are black)."""
    lut = np.zeros((max(256, len(palette)), 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[np.clip(class_map, 0, len(lut) - 1)]


def overlay(image: np.ndarray, class_map: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised class map over the RGB image."""
    colours = colourise(class_map, palette).astype(np.float32)
    return np.clip(image.astype(np.float32) * (1 - alpha) + colours * alpha, 0, 255).astype(np.uint8)
