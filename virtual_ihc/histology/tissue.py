"""Tissue detection: which pixels of an RGB image hold stained tissue.

Stained tissue is coloured, glass is white or grey, so the mask is a threshold on
HSV saturation (Otsu's threshold, floored so that an all-background image is not
split in two), cleaned with morphological closing and opening.
"""

from __future__ import annotations

import cv2
import numpy as np

#: saturation (0-255) below which a pixel is background whatever Otsu says
MIN_SATURATION = 20


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``uint8 (H, W)`` of a ``uint8`` RGB image."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[:, :, 1]


def tissue_mask(rgb: np.ndarray, threshold: int | None = None, smooth: int = 5) -> np.ndarray:
    """Boolean tissue mask ``(H, W)`` of a ``uint8`` RGB image.

    Args:
        rgb: ``uint8 (H, W, 3)``; usually a low-resolution view of a slide.
        threshold: saturation threshold; ``None`` = Otsu, floored at ``MIN_SATURATION``.
        smooth: size of the morphological closing/opening kernel (0 = none).
    """
    sat = saturation(rgb)
    if threshold is None:
        otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        threshold = max(int(otsu), MIN_SATURATION)
    mask = (sat > threshold).astype(np.uint8)
    if smooth > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (smooth, smooth))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask.astype(bool)


def tissue_fraction(rgb: np.ndarray, threshold: int = MIN_SATURATION) -> float:
    """Fraction of pixels of a tile whose saturation exceeds ``threshold``.

    A fixed threshold (not Otsu) so that the fraction of a single tile is
    comparable across tiles, including tiles that are all background.
    """
    return float(np.mean(saturation(rgb) > threshold))


def tissue_overlay(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 170, 80),
                   alpha: float = 0.35, outline: int = 2) -> np.ndarray:
    """A picture of a tissue mask: ``rgb`` tinted with ``colour`` where ``mask`` is set, mask edges outlined.

    Args:
        rgb: ``uint8 (H, W, 3)`` image (e.g. a slide overview).
        mask: bool ``(h, w)`` tissue mask, at the image's size or at any lower resolution
            (resized to the image by nearest neighbour).
        colour: RGB of the tint and the outline.
        alpha: tint strength in [0, 1] (0 = outline only).
        outline: outline thickness in pixels (0 = none).

    Returns:
        ``uint8 (H, W, 3)``; pixels outside the mask and off the outline are unchanged.
    """
    rgb = np.asarray(rgb, np.uint8)
    height, width = rgb.shape[:2]
    mask = np.asarray(mask, bool)
    if mask.shape != (height, width):
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = rgb.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if outline > 0:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(value) for value in colour), outline)
    return out
