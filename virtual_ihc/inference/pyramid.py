"""Streaming a stained slide to a pyramidal tiled TIFF through raw scratch files.

Level 0 is stitched band by band into a raw ``uint8`` file (row-major
``height x width x 3``, written with ``os.pwrite``: unlike a memory map, the
pages written do not count in the process's memory). When all rows are done,
each reduced level is made from the one above by 2 x 2 area averaging, a band
at a time, into its own raw file, and
:func:`~virtual_ihc.slides.synthetic_slides.write_pyramidal_tiff` streams the
levels tile by tile into the TIFF (one top-level directory per level, the
layout OpenSlide's generic-TIFF reader and tiffslide both open). Memory: a band
of ``tile_size`` rows of one level; disk: 4/3 of the raw level 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.slides.synthetic_slides import pyramid_downsamples, write_pyramidal_tiff

#: TIFF tile side of the output
TIFF_TILE = 256
#: reduced levels stop before their short side falls under this
MIN_LEVEL_SIDE = 256
#: rows per band when reducing a level
REDUCE_BAND = 256
COMPRESSIONS = {"jpeg": "jpeg", "deflate": "zlib"}


class RawImage:
    """A ``uint8`` RGB image of ``height x width`` stored row-major in a file, read and written by rows."""

    def __init__(self, path: str | os.PathLike, height: int, width: int, create: bool = False):
        self.path, self.height, self.width = Path(path), height, width
        self._row_bytes = width * 3
        if create:
            with open(self.path, "wb") as handle:
                handle.truncate(height * self._row_bytes)  # sparse: no disk used until written
        elif self.path.stat().st_size != height * self._row_bytes:
            raise ValueError(f"{self.path}: size does not match a {width}x{height} RGB image")

    def write_rows(self, y: int, rows: np.ndarray) -> None:
        """Store ``uint8 (n, width, 3)`` at rows ``[y, y + n)``."""
        if rows.shape[1:] != (self.width, 3) or y + len(rows) > self.height:
            raise ValueError(f"rows {rows.shape} at y={y} do not fit a {self.width}x{self.height} image")
        with open(self.path, "r+b") as handle:
            os.pwrite(handle.fileno(), np.ascontiguousarray(rows, np.uint8).tobytes(), y * self._row_bytes)

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """``uint8 (y1 - y0, width, 3)`` (``y1`` clipped to the height)."""
        y1 = min(y1, self.height)
        with open(self.path, "rb") as handle:
            data = os.pread(handle.fileno(), (y1 - y0) * self._row_bytes, y0 * self._row_bytes)
        return np.frombuffer(data, np.uint8).reshape(y1 - y0, self.width, 3)


def reduce_by_two(source: RawImage, path: str | os.PathLike) -> RawImage:
    """The next pyramid level: ``height // 2 x width // 2``, each pixel the mean of a 2 x 2 block."""
    target = RawImage(path, source.height // 2, source.width // 2, create=True)
    for y in range(0, target.height, REDUCE_BAND):
        rows = min(REDUCE_BAND, target.height - y)
        band = source.read_rows(2 * y, 2 * (y + rows))[:, :2 * target.width]
        target.write_rows(y, cv2.resize(band, (target.width, rows), interpolation=cv2.INTER_AREA))
    return target


class _BandRenderer:
    """A ``TileRenderer`` over raw level files, caching the band of rows last asked for."""

    def __init__(self, levels: dict[int, RawImage], tile_size: int):
        self.levels, self.tile_size = levels, tile_size
        self._key, self._band = None, None

    def __call__(self, downsample: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        band_start = y - y % self.tile_size
        if self._key != (downsample, band_start):
            self._key = (downsample, band_start)
            self._band = self.levels[downsample].read_rows(band_start, band_start + self.tile_size)
        offset = y - band_start
        return self._band[offset:offset + height, x:x + width]


def write_pyramid(level0: RawImage, path: str | os.PathLike, mpp: float | None,
                  compression: str = "jpeg") -> Path:
    """Write ``level0`` and its reductions as a pyramidal tiled TIFF at ``path``.

    Args:
        level0: the stained slide at processing resolution.
        path: the TIFF to write (the caller renames it into place).
        mpp: µm per level-0 pixel for the resolution tags (``None`` = none).
        compression: ``"jpeg"`` or ``"deflate"``.
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    levels = {1: level0}
    scratch = []
    try:
        for downsample in pyramid_downsamples(level0.height, level0.width, MIN_LEVEL_SIDE)[1:]:
            reduced_path = level0.path.with_name(f"{level0.path.stem}_x{downsample}.raw")
            levels[downsample] = reduce_by_two(levels[downsample // 2], reduced_path)
            scratch.append(reduced_path)
        return write_pyramidal_tiff(path, (level0.height, level0.width), _BandRenderer(levels, TIFF_TILE),
                                    mpp=mpp, tile_size=TIFF_TILE, min_level_side=MIN_LEVEL_SIDE,
                                    compression=COMPRESSIONS[compression])
    finally:
        for reduced_path in scratch:
            reduced_path.unlink(missing_ok=True)
