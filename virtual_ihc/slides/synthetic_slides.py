"""Synthetic whole-slide images: pyramidal tiled TIFFs that OpenSlide reads.

OpenSlide's "generic tiled TIFF" format wants every pyramid level as a top-level
TIFF directory (SubIFD pyramids are only seen by tiffslide), tiled, and takes
µm/px from the X/Y resolution tags when the unit is centimetre. The writer below
streams tiles from a callback, so a 20 000 x 20 000 slide never exists in memory.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

#: render_tile(downsample, y, x, height, width) -> uint8 RGB (height, width, 3);
#: ``y, x`` are in pixels of the level whose downsample is given
TileRenderer = Callable[[int, int, int, int, int], np.ndarray]


def pyramid_downsamples(height: int, width: int, min_side: int = 512) -> list[int]:
    """Power-of-two downsamples ``[1, 2, 4, ...]`` while the level's short side stays >= ``min_side``."""
    downsamples = [1]
    while min(height, width) // (downsamples[-1] * 2) >= min_side:
        downsamples.append(downsamples[-1] * 2)
    return downsamples


def _level_tiles(render_tile: TileRenderer, downsample: int, height: int, width: int,
                 tile_size: int) -> Iterator[np.ndarray]:
    """Full-size tiles of one level in row-major order, edge tiles padded with white."""
    for y in range(0, height, tile_size):
        for x in range(0, width, tile_size):
            tile = np.full((tile_size, tile_size, 3), 255, np.uint8)
            h, w = min(tile_size, height - y), min(tile_size, width - x)
            tile[:h, :w] = render_tile(downsample, y, x, h, w)
            yield tile


def write_pyramidal_tiff(path: str | os.PathLike, shape: tuple[int, int], render_tile: TileRenderer,
                         mpp: float | None = None, tile_size: int = 256, min_level_side: int = 512,
                         compression: str = "jpeg") -> Path:
    """Write a tiled pyramidal RGB TIFF, one top-level directory per level.

    Args:
        path: output file.
        shape: ``(height, width)`` of level 0.
        render_tile: pixel source, called once per tile and level.
        mpp: µm per level-0 pixel written to the resolution tags (``None`` = no metadata).
        tile_size: TIFF tile side (multiple of 16).
        min_level_side: smallest short side of a reduced level.
        compression: TIFF compression (``"jpeg"``, ``"zlib"``, ``None``).
    """
    import tifffile

    path = Path(path)
    height, width = shape
    with tifffile.TiffWriter(path, bigtiff=height * width * 3 > 2**31) as tif:
        for index, downsample in enumerate(pyramid_downsamples(height, width, min_level_side)):
            level_height, level_width = height // downsample, width // downsample
            options = {}
            if mpp is not None:
                pixels_per_cm = 1e4 / (mpp * downsample)
                options = dict(resolution=(pixels_per_cm, pixels_per_cm), resolutionunit="CENTIMETER")
            tif.write(_level_tiles(render_tile, downsample, level_height, level_width, tile_size),
                      shape=(level_height, level_width, 3), dtype=np.uint8, tile=(tile_size, tile_size),
                      photometric="rgb", compression=compression, subfiletype=1 if index else 0,
                      **options)
    return path


def array_renderer(image: np.ndarray) -> TileRenderer:
    """A :data:`TileRenderer` over an in-memory ``uint8`` RGB image (levels by area averaging)."""

    def render_tile(downsample: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        region = image[y * downsample:(y + height) * downsample, x * downsample:(x + width) * downsample]
        if downsample == 1:
            return region
        return cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)

    return render_tile


def write_image_as_slide(path: str | os.PathLike, image: np.ndarray, mpp: float | None = None,
                         tile_size: int = 256, min_level_side: int = 256) -> Path:
    """Write an in-memory ``uint8`` RGB image as a pyramidal tiled TIFF (small test slides)."""
    height, width = image.shape[:2]
    return write_pyramidal_tiff(path, (height, width), array_renderer(image), mpp=mpp,
                                tile_size=tile_size, min_level_side=min_level_side)


def blob_tissue_renderer(height: int, width: int, seed: int = 0, texture_size: int = 256,
                         cell: int = 512, tissue_fraction: float = 0.4) -> TileRenderer:
    """A :data:`TileRenderer` of a large H&E-like slide from small pieces.

    Tissue occupies the cells (``cell`` level-0 pixels a side) where a smooth
    random field exceeds its ``1 - tissue_fraction`` quantile; tissue pixels repeat
    one procedural H&E texture tile, background is glass. Memory: the field
    (one value per cell) and the texture tile.
    """
    from virtual_ihc.data.synthetic import make_layout, render_he

    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.standard_normal((math.ceil(height / cell), math.ceil(width / cell)))
                             .astype(np.float32), (0, 0), 2.0)
    field = (field > np.quantile(field, 1 - tissue_fraction)).astype(np.float32)
    texture = render_he(make_layout(rng, texture_size, nucleus_radius=4.0), rng)

    def render_tile(downsample: int, y: int, x: int, tile_height: int, tile_width: int) -> np.ndarray:
        rows = ((y + np.arange(tile_height)) * downsample) // cell
        cols = ((x + np.arange(tile_width)) * downsample) // cell
        tissue = field[rows[:, None], cols[None, :]] > 0.5
        pattern = texture[(y + np.arange(tile_height))[:, None] % texture_size,
                          (x + np.arange(tile_width))[None, :] % texture_size]
        return np.where(tissue[..., None], pattern, np.uint8(242))

    return render_tile
