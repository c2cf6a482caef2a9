"""Slides opened for the viewer, with OpenSlide's own Deep Zoom tiling.

A whole-slide image (SVS, NDPI, MRXS, generic pyramidal TIFF such as
``virtual-ihc stain``'s output, ...) opens with OpenSlide; any other image
Pillow reads (PNG, JPEG, plain TIFF) opens as an ``openslide.ImageSlide``, a
one-level slide held by Pillow. Tiles and the DZI descriptor come from
``openslide.deepzoom.DeepZoomGenerator``; nothing here cuts tiles by hand.

The full slide extent is served (``limit_bounds=False``), so that slides of the
same section (an H&E and the virtual Ki-67 stained from it) cover the same
area and line up by their µm/px.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image, UnidentifiedImageError

from virtual_ihc.errors import InputError
from virtual_ihc.io.slides import positive_float

logger = logging.getLogger(__name__)


class SlideOpenError(InputError):
    """A slide given to the viewer is missing or unreadable; the message names the file."""


@dataclasses.dataclass(frozen=True)
class TileOptions:
    """How Deep Zoom tiles are cut and encoded.

    Attributes:
        tile_size: tile side without overlap; ``tile_size + 2 * overlap`` a power of two is fastest.
        overlap: pixels shared with each neighbouring tile.
        quality: JPEG quality of the tiles (1-95).
    """

    tile_size: int = 254
    overlap: int = 1
    quality: int = 80

    def __post_init__(self):
        if self.tile_size < 1 or self.overlap < 0:
            raise InputError(f"tile_size must be >= 1 and overlap >= 0, got {self.tile_size}, {self.overlap}")
        if not 1 <= self.quality <= 95:
            raise InputError(f"quality must be in [1, 95], got {self.quality}")


class ViewerSlide:
    """One slide served as a Deep Zoom image.

    Attributes:
        path: the file.
        name: the file name shown above its pane.
        mpp: µm per level-0 pixel from the slide's metadata, or ``None``.
        dimensions: ``(width, height)`` of level 0.
    """

    def __init__(self, path: Path, handle: openslide.AbstractSlide, options: TileOptions):
        self.path = path
        self.name = path.name
        self._handle = handle
        self._options = options
        self._generator = DeepZoomGenerator(handle, tile_size=options.tile_size, overlap=options.overlap,
                                            limit_bounds=False)
        self.dimensions = tuple(int(v) for v in handle.dimensions)
        self.mpp = positive_float(handle.properties.get(openslide.PROPERTY_NAME_MPP_X))
        # OpenSlide reads from many threads at once; a Pillow image (ImageSlide) is not thread-safe
        self._lock = threading.Lock() if isinstance(handle, openslide.ImageSlide) else None

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels (1 x 1 pixel up to full resolution)."""
        return self._generator.level_count

    def dzi(self) -> str:
        """The Deep Zoom descriptor (XML) of this slide, JPEG tiles."""
        return self._generator.get_dzi("jpeg")

    def tile_jpeg(self, level: int, column: int, row: int) -> bytes:
        """One Deep Zoom tile encoded as JPEG.

        Raises:
            ValueError: ``level``, ``column`` or ``row`` out of range.
            openslide.OpenSlideError: the slide could not be read there (e.g. a damaged file).
        """
        if self._lock is None:
            tile = self._generator.get_tile(level, (column, row))
        else:
            with self._lock:
                tile = self._generator.get_tile(level, (column, row))
        buffer = io.BytesIO()
        tile.save(buffer, "JPEG", quality=self._options.quality)
        return buffer.getvalue()

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def open_viewer_slide(path: str | os.PathLike, options: TileOptions = TileOptions()) -> ViewerSlide:
    """Open one slide or image for the viewer.

    Raises:
        SlideOpenError: the file is missing, not a file, or neither OpenSlide nor Pillow reads it.
    """
    path = Path(path)
    if not path.exists():
        raise SlideOpenError(f"{path}: no such file")
    if not path.is_file():
        raise SlideOpenError(f"{path}: not a file")
    try:
        handle = openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError:
        handle = _open_image_slide(path)
    except (openslide.OpenSlideError, OSError) as error:
        raise SlideOpenError(f"{path}: OpenSlide cannot read it ({error})") from error
    try:
        slide = ViewerSlide(path, handle, options)
        slide.tile_jpeg(slide.level_count - 1, 0, 0)  # a damaged file fails here, before the server starts
    except (openslide.OpenSlideError, OSError, ValueError) as error:
        handle.close()
        raise SlideOpenError(f"{path}: cannot read it as a slide ({error})") from error
    return slide


def _open_image_slide(path: Path) -> openslide.ImageSlide:
    """A plain image as a one-level slide; the pixels are decoded now, so a truncated file fails here."""
    try:
        with Image.open(path) as image:
            image.load()
            handle = openslide.ImageSlide(image.copy() if image.mode in ("RGB", "RGBA") else image.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise SlideOpenError(f"{path}: neither a slide OpenSlide reads nor an image Pillow reads "
                             f"({error})") from error
    return handle


def open_viewer_slides(paths, options: TileOptions = TileOptions()) -> list[ViewerSlide]:
    """Open every slide, or none: the first missing or unreadable file raises :class:`SlideOpenError`."""
    slides: list[ViewerSlide] = []
    try:
        for path in paths:
            slides.append(open_viewer_slide(path, options))
    except SlideOpenError:
        for slide in slides:
            slide.close()
        raise
    for slide in slides:
        logger.info("%s: %d x %d px, %s", slide.path, *slide.dimensions,
                    f"{slide.mpp:.4g} µm/px" if slide.mpp else "no µm/px in its metadata")
    return slides
