"""One reader interface for whole-slide images and plain images.

:func:`open_slide` tries, in order, OpenSlide (SVS, NDPI, MRXS, SCN, generic
pyramidal TIFF, ...), tiffslide (TIFF-based formats OpenSlide refuses, e.g.
stripped TIFFs, or where it finds a pyramid OpenSlide does not see, e.g. in SubIFDs) and finally a plain image reader
(PNG/JPEG/BMP/TIFF through :func:`virtual_ihc.io.images.read_image_rgb`, which holds
the whole image in memory: only for images that are not slides). Every backend
returns a :class:`Slide` with the same attributes and ``read_region``.

Coordinates follow OpenSlide: ``read_region(x, y, level, width, height)`` takes
the top-left corner in **level-0** pixels and the size in pixels **of the level**.

Resolution: :func:`choose_level` turns a target µm/px or magnification into a
:class:`LevelChoice` (the pyramid level to read and the extra resize factor).
Magnification and µm/px are converted with the usual scanner convention
``mpp ≈ 10 / magnification`` (40x ≈ 0.25 µm/px) when only one of them is known.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.io.images import ImageReadError, read_image_rgb, to_rgb_uint8

logger = logging.getLogger(__name__)

#: µm/px of a 1x objective under the scanner convention mpp = MPP_AT_1X / magnification
MPP_AT_1X = 10.0
#: a level is used for a target downsample when its own downsample is within this relative slack
LEVEL_TOLERANCE = 0.01
#: side (level pixels) of the chunks in which :func:`read_downsampled` reads a level
READ_CHUNK = 4096


class SlideReadError(ImageReadError):
    """A slide could not be opened or read; the message names the file and the reasons."""


class SlideMetadataError(InputError):
    """The resolution metadata needed for a target magnification / µm/px is missing."""


class Slide:
    """A multi-resolution image; subclasses implement ``_read_level_region``.

    Attributes:
        path: the file.
        backend: ``"openslide"``, ``"tiffslide"`` or ``"image"``.
        level_dimensions: ``(width, height)`` of each level, level 0 first.
        level_downsamples: level-0 pixels per level pixel, ``1.0`` first.
        mpp: µm per level-0 pixel (metadata or override), or ``None``.
        objective_power: scan magnification (metadata or override), or ``None``.
    """

    backend = ""

    def __init__(self, path: Path, level_dimensions, level_downsamples,
                 mpp: float | None, objective_power: float | None):
        self.path = path
        self.level_dimensions = [tuple(int(v) for v in dims) for dims in level_dimensions]
        self.level_downsamples = [float(v) for v in level_downsamples]
        self.mpp = mpp
        self.objective_power = objective_power

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """``uint8`` RGB ``(height, width, 3)``; corner ``(x, y)`` in level-0 pixels.

        Pixels outside the slide come back white (empty glass).

        Raises:
            SlideReadError: the backend failed (e.g. a truncated file); the message names the file.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"{self.path}: level {level} out of range [0, {self.level_count})")
        if width <= 0 or height <= 0:
            raise ValueError(f"{self.path}: region size must be positive, got {width}x{height}")
        try:
            return self._read_level_region(int(x), int(y), level, int(width), int(height))
        except SlideReadError:
            raise
        except Exception as error:  # backends raise many types for broken files
            raise SlideReadError(f"{self.path}: cannot read region ({error})") from error

    def _read_level_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handle (idempotent)."""

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, backend={self.backend!r}, "
                f"dimensions={self.dimensions}, levels={self.level_count}, mpp={self.mpp})")


class _LibrarySlide(Slide):
    """OpenSlide or tiffslide (same API): ``read_region`` returns a PIL RGBA image."""

    def __init__(self, path: Path, handle, backend: str, mpp_key: str, power_key: str,
                 mpp: float | None, objective_power: float | None):
        self._handle = handle
        self.backend = backend
        properties = handle.properties
        super().__init__(path, handle.level_dimensions, handle.level_downsamples,
                         mpp if mpp is not None else positive_float(properties.get(mpp_key)),
                         objective_power if objective_power is not None
                         else positive_float(properties.get(power_key)))

    def _read_level_region(self, x, y, level, width, height):
        region = self._handle.read_region((x, y), level, (width, height))
        # RGBA with transparent pixels outside the scanned area: composite over white
        return to_rgb_uint8(np.asarray(region.convert("RGBA")), source=str(self.path))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class _ImageSlide(Slide):
    """A plain image held in memory as a one-level slide."""

    backend = "image"

    def __init__(self, path: Path, mpp: float | None, objective_power: float | None):
        self._image = read_image_rgb(path)
        height, width = self._image.shape[:2]
        super().__init__(path, [(width, height)], [1.0], mpp, objective_power)

    def _read_level_region(self, x, y, level, width, height):
        out = np.full((height, width, 3), 255, np.uint8)
        image_height, image_width = self._image.shape[:2]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, image_width), min(y + height, image_height)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._image[y0:y1, x0:x1]
        return out


def positive_float(value) -> float | None:
    """A slide property (µm/px, magnification) as a positive finite number, or ``None`` (missing or not one)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and math.isfinite(number) else None


def _open_openslide(path: Path, mpp, objective_power) -> Slide:
    import openslide

    return _LibrarySlide(path, openslide.OpenSlide(str(path)), "openslide",
                         openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_OBJECTIVE_POWER,
                         mpp, objective_power)


def _open_tiffslide(path: Path, mpp, objective_power) -> Slide:
    import tiffslide

    return _LibrarySlide(path, tiffslide.TiffSlide(str(path)), "tiffslide",
                         tiffslide.PROPERTY_NAME_MPP_X, tiffslide.PROPERTY_NAME_OBJECTIVE_POWER,
                         mpp, objective_power)


def _open_image(path: Path, mpp, objective_power) -> Slide:
    return _ImageSlide(path, mpp, objective_power)


def _prefer_more_levels(slide: Slide, path: Path, mpp, objective_power) -> Slide:
    """tiffslide instead of a one-level OpenSlide view when it finds a pyramid (e.g. in SubIFDs)."""
    try:
        other = _open_tiffslide(path, mpp, objective_power)
    except Exception:  # not a TIFF tiffslide understands: keep OpenSlide
        return slide
    if other.level_count > slide.level_count:
        slide.close()
        return other
    other.close()
    return slide


def open_slide(path: str | os.PathLike, mpp: float | None = None,
               objective_power: float | None = None) -> Slide:
    """Open a whole-slide image (or a plain image) for region reading.

    Args:
        path: slide or image file.
        mpp: µm per level-0 pixel; overrides the file's metadata when given.
        objective_power: scan magnification; overrides the file's metadata when given.

    Raises:
        SlideReadError: no backend can open the file (missing, empty, truncated,
            not an image); the message names the file and each backend's reason.
    """
    path = Path(path)
    if not path.is_file():
        raise SlideReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SlideReadError(f"{path}: file is empty")
    reasons = []
    for name, opener in (("openslide", _open_openslide), ("tiffslide", _open_tiffslide),
                         ("image", _open_image)):
        try:
            slide = opener(path, mpp, objective_power)
        except Exception as error:  # each backend has its own exception types
            reasons.append(f"{name}: {error}")
            continue
        if name == "openslide" and slide.level_count == 1:
            slide = _prefer_more_levels(slide, path, mpp, objective_power)
        logger.debug("opened %s with %s", path, slide.backend)
        return slide
    raise SlideReadError(f"{path}: not a readable slide or image ({'; '.join(reasons)})")


@dataclasses.dataclass(frozen=True)
class LevelChoice:
    """Where to read a slide for a target resolution.

    Attributes:
        level: pyramid level to read.
        downsample: level-0 pixels per output pixel (>= 1 is a reduction).
        scale: resize factor from level pixels to output pixels
            (``level_downsample / downsample``, <= 1 unless the target is finer than level 0).
    """

    level: int
    downsample: float
    scale: float


def target_downsample(slide: Slide, target_mpp: float | None = None,
                      target_mag: float | None = None) -> float:
    """Level-0 pixels per output pixel for a target µm/px or magnification (not both).

    No target gives 1 (native resolution). Only µm/px known and a magnification
    asked (or the reverse) uses ``mpp = 10 / magnification``.

    Raises:
        SlideMetadataError: the slide has neither µm/px nor objective power and no
            override was given; the message names the file and the option to set.
    """
    if target_mpp is not None and target_mag is not None:
        raise InputError("give a target µm/px or a target magnification, not both")
    if target_mpp is None and target_mag is None:
        return 1.0
    if target_mpp is not None and target_mpp <= 0 or target_mag is not None and target_mag <= 0:
        raise InputError(f"target must be positive, got mpp={target_mpp}, magnification={target_mag}")
    if target_mag is not None and slide.objective_power is not None:
        return slide.objective_power / target_mag
    if target_mpp is not None and slide.mpp is not None:
        return target_mpp / slide.mpp
    if target_mag is not None and slide.mpp is not None:
        return (MPP_AT_1X / target_mag) / slide.mpp
    if target_mpp is not None and slide.objective_power is not None:
        return target_mpp / (MPP_AT_1X / slide.objective_power)
    raise SlideMetadataError(
        f"{slide.path}: no resolution metadata (microns per pixel or objective power) in the file; "
        f"set it with --mpp MICRONS_PER_PIXEL or --objective-power MAGNIFICATION "
        f"(open_slide(path, mpp=..., objective_power=...))")


def best_level_for_downsample(slide: Slide, downsample: float) -> int:
    """Index of the coarsest level whose downsample does not exceed ``downsample`` (0 if none)."""
    fine_enough = [index for index, value in enumerate(slide.level_downsamples)
                   if value <= downsample * (1 + LEVEL_TOLERANCE)]
    return max(fine_enough, key=lambda index: slide.level_downsamples[index], default=0)


def choose_level(slide: Slide, target_mpp: float | None = None,
                 target_mag: float | None = None) -> LevelChoice:
    """Coarsest level at least as fine as the target, and the resize left to do.

    Reading a finer level and shrinking keeps detail; a level is accepted when its
    downsample is within ``LEVEL_TOLERANCE`` of the target (avoids a 0.999 resize).
    """
    downsample = target_downsample(slide, target_mpp, target_mag)
    level = best_level_for_downsample(slide, downsample)
    scale = slide.level_downsamples[level] / downsample
    if abs(scale - 1.0) < LEVEL_TOLERANCE:
        scale = 1.0
    return LevelChoice(level=level, downsample=float(downsample), scale=float(scale))


def output_size(slide: Slide, choice: LevelChoice) -> tuple[int, int]:
    """``(width, height)`` of the whole slide at the chosen resolution."""
    width, height = slide.dimensions
    return int(width / choice.downsample), int(height / choice.downsample)


def read_scaled_region(slide: Slide, choice: LevelChoice, x: int, y: int,
                       width: int, height: int) -> np.ndarray:
    """A region at the chosen resolution: ``uint8`` RGB ``(height, width, 3)``.

    ``x, y, width, height`` are in output pixels (level-0 pixels / ``choice.downsample``).
    Only the level pixels under the region are read.
    """
    level0_x, level0_y = int(round(x * choice.downsample)), int(round(y * choice.downsample))
    if choice.scale == 1.0:
        return slide.read_region(level0_x, level0_y, choice.level, width, height)
    level_width = max(1, int(math.ceil(width / choice.scale)))
    level_height = max(1, int(math.ceil(height / choice.scale)))
    region = slide.read_region(level0_x, level0_y, choice.level, level_width, level_height)
    interpolation = cv2.INTER_AREA if choice.scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(region, (width, height), interpolation=interpolation)


def read_downsampled(slide: Slide, downsample: float) -> np.ndarray:
    """The whole slide reduced ``downsample`` times (level-0 pixels per output pixel).

    Reads the coarsest adequate level chunk by chunk (``READ_CHUNK`` level pixels a
    side), so memory stays at one chunk plus the output: never the whole level 0.
    """
    level = best_level_for_downsample(slide, downsample)
    level_downsample = slide.level_downsamples[level]
    width, height = slide.dimensions
    out_width, out_height = max(1, int(width / downsample)), max(1, int(height / downsample))
    out = np.full((out_height, out_width, 3), 255, np.uint8)
    step = READ_CHUNK * level_downsample  # chunk side in level-0 pixels
    for y0 in np.arange(0, height, step):
        for x0 in np.arange(0, width, step):
            ox0, oy0 = int(x0 / downsample), int(y0 / downsample)
            ox1 = min(out_width, int(min(x0 + step, width) / downsample))
            oy1 = min(out_height, int(min(y0 + step, height) / downsample))
            if ox1 <= ox0 or oy1 <= oy0:
                continue
            level_w = int(math.ceil((ox1 - ox0) * downsample / level_downsample))
            level_h = int(math.ceil((oy1 - oy0) * downsample / level_downsample))
            chunk = slide.read_region(int(ox0 * downsample), int(oy0 * downsample), level, level_w, level_h)
            out[oy0:oy1, ox0:ox1] = cv2.resize(chunk, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_AREA)
    return out
