"""Tile reads for staining: an adapter until :mod:`virtual_ihc.data.slides` reads opaque regions fast.

``Slide.read_region`` converts every OpenSlide region with the generic
:func:`~virtual_ihc.data.io.to_rgb_uint8`, which composites alpha over white in
float even when the region is opaque, as regions inside a slide are: about half
the cost of reading a 512-px tile. :class:`RegionReader` opens its own OpenSlide
or tiffslide handle on the same file and composites only regions that have
transparent pixels (the same pixels either way); plain images and resized reads
go through :func:`~virtual_ihc.data.slides.read_scaled_region` unchanged.
"""

from __future__ import annotations

import numpy as np

from virtual_ihc.data.io import to_rgb_uint8
from virtual_ihc.data.slides import LevelChoice, Slide, read_scaled_region


def _open_library_handle(slide: Slide):
    if slide.backend == "openslide":
        import openslide

        return openslide.OpenSlide(str(slide.path))
    if slide.backend == "tiffslide":
        import tiffslide

        return tiffslide.TiffSlide(str(slide.path))
    return None


class RegionReader:
    """``reader(y, x, height, width)`` -> ``uint8`` RGB ``(height, width, 3)`` at the chosen resolution.

    Coordinates are processing-resolution pixels, as for ``read_scaled_region``.
    Close it (``close()``) when done; it does not close ``slide``.
    """

    def __init__(self, slide: Slide, choice: LevelChoice):
        self.slide, self.choice = slide, choice
        self._handle = _open_library_handle(slide) if choice.scale == 1.0 else None

    def __call__(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        if self._handle is None:
            return read_scaled_region(self.slide, self.choice, x, y, width, height)
        corner = (int(round(x * self.choice.downsample)), int(round(y * self.choice.downsample)))
        region = np.asarray(self._handle.read_region(corner, self.choice.level, (width, height)))
        if region.ndim == 3 and region.shape[2] == 4 and region[:, :, 3].min() == 255:
            return np.ascontiguousarray(region[:, :, :3])
        return to_rgb_uint8(region, source=str(self.slide.path))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
