"""Tile grids: where overlapping square tiles start along an image, and how much tissue each holds.

One convention throughout: a tile is named by its top-left corner ``(y, x)``
(row, column: NumPy's order) in pixels of the image being tiled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from virtual_ihc.errors import InputError


def tile_starts(length: int, tile_size: int, stride: int, cover_edge: bool = True) -> list[int]:
    """Start offsets of tiles of ``tile_size`` every ``stride`` pixels along ``length``.

    With ``cover_edge`` a last tile is aligned to the end so that every pixel is
    covered (what stitching needs); without it only the regular grid is returned
    (what training tiles use). A length shorter than one tile gives ``[0]`` with
    ``cover_edge`` (the caller pads) and ``[]`` without.
    """
    if tile_size <= 0 or stride <= 0:
        raise InputError(f"tile_size and stride must be positive, got {tile_size}, {stride}")
    if length < tile_size:
        return [0] if cover_edge else []
    starts = list(range(0, length - tile_size + 1, stride))
    if cover_edge and starts[-1] + tile_size < length:
        starts.append(length - tile_size)
    return starts


def tile_grid(height: int, width: int, tile_size: int, overlap: int,
              cover_edge: bool = False) -> list[tuple[int, int]]:
    """``(y, x)`` origins of tiles of ``tile_size`` overlapping by ``overlap`` pixels."""
    if not 0 <= overlap < tile_size:
        raise InputError(f"overlap must be in [0, tile_size), got {overlap} for tile {tile_size}")
    stride = tile_size - overlap
    return [(y, x)
            for y in tile_starts(height, tile_size, stride, cover_edge)
            for x in tile_starts(width, tile_size, stride, cover_edge)]


def tile_tissue_fractions(mask: np.ndarray, origins: Sequence[tuple[int, int]], tile_size: int,
                          mask_downsample: float = 1.0) -> np.ndarray:
    """Share of each tile that ``mask`` marks as tissue, float64 ``(N,)`` in [0, 1].

    The mask may be smaller than the image (a low-resolution overview): a tile
    covers the mask pixels from ``int(corner / mask_downsample)`` to the
    rounded far edge, at least one pixel, clipped to the mask. At
    ``mask_downsample=1`` this is the exact share of the tile's pixels. Callers
    compare the result with their own threshold.

    Args:
        mask: boolean ``(h, w)`` tissue mask, one pixel per ``mask_downsample`` image pixels.
        origins: tile corners ``(y, x)`` in image pixels (as :func:`tile_grid` gives them).
        tile_size: tile side in image pixels.
        mask_downsample: image pixels per mask pixel.
    """
    integral = np.pad(np.asarray(mask, bool), ((1, 0), (1, 0))).cumsum(0, dtype=np.float64).cumsum(1)
    height, width = mask.shape
    fractions = np.zeros(len(origins))
    for index, (y, x) in enumerate(origins):
        y0, x0 = int(y / mask_downsample), int(x / mask_downsample)
        if y0 >= height or x0 >= width:
            continue
        y1 = min(height, max(y0 + 1, int(round((y + tile_size) / mask_downsample))))
        x1 = min(width, max(x0 + 1, int(round((x + tile_size) / mask_downsample))))
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        fractions[index] = inside / ((y1 - y0) * (x1 - x0))
    return fractions
