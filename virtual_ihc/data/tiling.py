"""Tile grids: where overlapping square tiles start along an image."""

from __future__ import annotations


def tile_starts(length: int, tile_size: int, stride: int, cover_edge: bool = True) -> list[int]:
    """Start offsets of tiles of ``tile_size`` every ``stride`` pixels along ``length``.

    With ``cover_edge`` a last tile is aligned to the end so that every pixel is
    covered (what stitching needs); without it only the regular grid is returned
    (what training tiles use). A length shorter than one tile gives ``[0]`` with
    ``cover_edge`` (the caller pads) and ``[]`` without.
    """
    if tile_size <= 0 or stride <= 0:
        raise ValueError(f"tile_size and stride must be positive, got {tile_size}, {stride}")
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
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile {tile_size}")
    stride = tile_size - overlap
    return [(y, x)
            for y in tile_starts(height, tile_size, stride, cover_edge)
            for x in tile_starts(width, tile_size, stride, cover_edge)]
