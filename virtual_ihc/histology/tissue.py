"""Tissue detection: which pixels of an RGB image hold stained tissue.

Stained tissue is coloured, glass is white or grey, so the mask is a threshold on
HSV saturation (Otsu's threshold, floored so that an all-background image is not
split in two), cleaned with morphological closing and opening. An image without
colour (a grayscale scan, converted to RGB) has no saturation to threshold: its
tissue is what is darker than the glass (:func:`tissue_signal`).
"""

from __future__ import annotations

import cv2
import numpy as np

#: saturation (0-255) below which a pixel is background whatever Otsu says
MIN_SATURATION = 20
#: darkness (255 - grey level) below which a pixel of a colourless image is background
MIN_DARKNESS = 25
#: a full-resolution pixel is glass up to this much above the median signal of the slide's glass
GLASS_MARGIN = 10
#: overview pixels between tissue and the glass whose signal is measured
GLASS_CLEARANCE = 3


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``uint8 (H, W)`` of a ``uint8`` RGB image."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[:, :, 1]


def is_colourless(rgb: np.ndarray) -> bool:
    """Whether a ``uint8`` RGB image has (almost) no colour, e.g. a grayscale scan.

    True when fewer than 1 % of its pixels reach :data:`MIN_SATURATION`.
    """
    return float(np.percentile(saturation(rgb), 99)) < MIN_SATURATION


def tissue_signal(rgb: np.ndarray, colourless: bool | None = None) -> tuple[np.ndarray, int]:
    """What tissue is thresholded on, ``uint8 (H, W)``, and the floor of that threshold.

    HSV saturation (floor :data:`MIN_SATURATION`) for colour images; for
    colourless ones (:func:`is_colourless`, or ``colourless`` when given: a tile of a
    colour slide may be all glass) darkness, ``255 - grey level`` (floor
    :data:`MIN_DARKNESS`), since tissue is darker than glass.
    """
    if is_colourless(rgb) if colourless is None else colourless:
        return 255 - cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY), MIN_DARKNESS
    return saturation(rgb), MIN_SATURATION


def tissue_threshold(rgb: np.ndarray) -> int:
    """Otsu's threshold of :func:`tissue_signal`, floored at the signal's floor (what :func:`tissue_mask` uses)."""
    signal, floor = tissue_signal(rgb)
    otsu, _ = cv2.threshold(signal, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max(int(otsu), floor)


def tissue_mask(rgb: np.ndarray, threshold: int | None = None, smooth: int = 5) -> np.ndarray:
    """Boolean tissue mask ``(H, W)`` of a ``uint8`` RGB image.

    Args:
        rgb: ``uint8 (H, W, 3)``; usually a low-resolution view of a slide.
        threshold: threshold of :func:`tissue_signal` (saturation, or darkness for a
            colourless image); ``None`` = Otsu, floored at the signal's floor.
        smooth: size of the morphological closing/opening kernel (0 = none).
    """
    signal, _ = tissue_signal(rgb)
    if threshold is None:
        threshold = tissue_threshold(rgb)
    mask = (signal > threshold).astype(np.uint8)
    if smooth > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (smooth, smooth))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask.astype(bool)


def glass_threshold(rgb: np.ndarray) -> int:
    """The :func:`tissue_signal` level above which a full-resolution pixel is tissue, from a slide's overview.

    Glass is what is as pale as the slide's glass: the median of the signal over the
    overview's glass (outside :func:`tissue_mask`, at least :data:`GLASS_CLEARANCE` overview
    pixels from it; the median, because pale tissue that the mask leaves out is there too)
    plus :data:`GLASS_MARGIN`, at least the signal's floor and at most the tissue threshold
    (:func:`tissue_threshold`). Lower than the tissue threshold, which separates tissue
    *regions* from glass: pale stroma between collagen fibres is tissue, and stays so.
    """
    signal, floor = tissue_signal(rgb)
    tissue = tissue_mask(rgb).astype(np.uint8)
    near = cv2.dilate(tissue, np.ones((2 * GLASS_CLEARANCE + 1,) * 2, np.uint8)).astype(bool)
    glass = signal[~near]
    level = float(np.median(glass)) if glass.size else 0.0
    return int(min(tissue_threshold(rgb), max(floor, level + GLASS_MARGIN)))


def tissue_weight(rgb: np.ndarray, threshold: int, colourless: bool, smooth: int = 5,
                  feather: float = 2.0) -> np.ndarray:
    """How much each pixel of a full-resolution tile is tissue, float32 ``(H, W)`` in [0, 1] (0 = glass).

    The slide's threshold and colour decision (from its overview: :func:`glass_threshold`,
    :func:`is_colourless`) applied to the tile's own pixels, so that every tile of a slide
    is cut the same way; cleaned like :func:`tissue_mask` (closing, then opening, with an
    elliptic kernel of ``smooth`` pixels), then feathered by a Gaussian of ``feather``
    pixels so that the edge between tissue and glass is soft.
    """
    signal, _ = tissue_signal(rgb, colourless)
    mask = (signal > threshold).astype(np.uint8)
    if smooth > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (smooth, smooth))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    weight = mask.astype(np.float32)
    if feather > 0:
        weight = cv2.GaussianBlur(weight, (0, 0), feather, borderType=cv2.BORDER_REFLECT)
    return weight


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
