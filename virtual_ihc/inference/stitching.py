"""Stitching a generator's outputs over overlapping tiles, one tile row at a time.

The image (at processing resolution, ``height x width``) is covered by tiles of
``tile_size`` pixels overlapping by ``overlap`` (the last row and column are
aligned to the image edge, :func:`~virtual_ihc.grid.tile_starts`). Tile
rows are processed top to bottom; each tile's output is accumulated with its
blending window (:mod:`virtual_ihc.inference.blending`) into a band of
``tile_size`` rows. After a tile row, the rows no later tile can touch are
final: they are divided by the accumulated weight, rounded and handed to the
caller, and the rest of the band (the overlap with the next tile row, the
*carry*) moves up. Memory is one band, whatever the image height.

Background tiles (``is_tissue`` false) are not run through the model: they
count as the background colour (white unless told otherwise), so background
comes out that colour and blends smoothly into neighbouring tissue tiles.
They cost nothing: the band accumulates ``window * (output - background)``
of tissue tiles only, and a finished pixel is ``background + sum / coverage``,
where the coverage (the sum of all tiles' windows at that pixel) is known in
closed form, ``rows(y) * cols(x)``, because the windows are separable and the
grid is a product of two axes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Callable, Iterator

import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.grid import tile_starts
from virtual_ihc.inference.blending import axis_weights
from virtual_ihc.pixels import SIZE_MULTIPLE

#: read_tile(y, x, height, width) -> uint8 RGB (height, width, 3), processing-resolution pixels
TileReader = Callable[[int, int, int, int], np.ndarray]
#: model(tiles uint8 (N, h, w, 3)) -> uint8 (N, h, w, 3)
TileModel = Callable[[np.ndarray], np.ndarray]
#: stain_batch(row, columns int (N,), tiles uint8 (N, h, w, 3)) -> uint8 (N, h, w, 3): a model that
#: may use where the tiles are (tile row ``row``, its tile columns ``columns``)
BatchStainer = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
WHITE = (255, 255, 255)
#: smallest tile side the serving signature accepts (a bottleneck of at least 2 pixels)
MIN_SIDE = 2 * SIZE_MULTIPLE


@dataclasses.dataclass(frozen=True)
class StitchOptions:
    """How an image is cut into tiles and put back together.

    Attributes:
        tile_size: tile side in processing-resolution pixels (>= ``MIN_SIDE``).
        overlap: pixels shared by neighbouring tiles (``0 <= overlap < tile_size``).
        margin: context margin: pixels next to an overlapping tile side that get
            zero weight (at most ``overlap // 2``).
        batch_size: tiles per model call.
        min_tissue: tiles whose tissue fraction is at most this are background.
        keep_background: run every tile through the model, background included.
    """

    tile_size: int = 512
    overlap: int = 64
    margin: int = 16
    batch_size: int = 4
    min_tissue: float = 0.0
    keep_background: bool = False

    def __post_init__(self):
        if self.tile_size < MIN_SIDE:
            raise InputError(f"tile size must be at least {MIN_SIDE} pixels, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise InputError(f"overlap must be in [0, tile size {self.tile_size}), got {self.overlap}")
        if not 0 <= 2 * self.margin <= self.overlap:
            raise InputError(f"margin must be in [0, overlap / 2 = {self.overlap // 2}], got {self.margin}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """The tile grid of one image.

    Attributes:
        height, width: image size in processing-resolution pixels.
        tile_height, tile_width: tile size (the tile size, or the image side if smaller).
        row_starts, col_starts: tile origins along each axis.
        margin: context margin of the blending windows.
    """

    height: int
    width: int
    tile_height: int
    tile_width: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    margin: int

    @classmethod
    def plan(cls, height: int, width: int, options: StitchOptions) -> "TileLayout":
        """Tiles for an image of ``height x width``; sides shorter than a tile get one tile of their length."""
        if min(height, width) < MIN_SIDE:
            raise InputError(f"image must be at least {MIN_SIDE} pixels high and wide, got {width}x{height}")
        stride = options.tile_size - options.overlap
        tile_height, tile_width = min(options.tile_size, height), min(options.tile_size, width)
        return cls(height, width, tile_height, tile_width,
                   tuple(tile_starts(height, tile_height, stride)),
                   tuple(tile_starts(width, tile_width, stride)), options.margin)

    @classmethod
    def whole(cls, height: int, width: int) -> "TileLayout":
        """One tile covering the image (``--whole``)."""
        return cls(height, width, height, width, (0,), (0,), 0)

    @property
    def num_rows(self) -> int:
        return len(self.row_starts)

    @property
    def num_tiles(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def origins(self) -> list[tuple[int, int]]:
        """``(x, y)`` of every tile, row-major."""
        return [(x, y) for y in self.row_starts for x in self.col_starts]

    def final_rows_end(self, row: int) -> int:
        """First image row that tile row ``row``'s successors still touch (``height`` after the last)."""
        return self.row_starts[row + 1] if row + 1 < self.num_rows else self.height


@dataclasses.dataclass
class FinishedBand:
    """Rows of the output that are final after one tile row.

    Attributes:
        row: index of the tile row just processed.
        y: first image row of ``pixels``.
        pixels: ``uint8`` RGB ``(rows, width, 3)``.
        carry: float32 ``(rows, width, 3)``: the weighted sums of the rows below
            ``pixels`` that the next tile row adds to (empty after the last row).
        tiles_run: tiles of this row that went through the model.
    """

    row: int
    y: int
    pixels: np.ndarray
    carry: np.ndarray
    tiles_run: int


def stitch_rows(layout: TileLayout, read_tile: TileReader, stain_batch: BatchStainer, is_tissue: np.ndarray,
                batch_size: int, first_row: int = 0, carry: np.ndarray | None = None,
                background: tuple[int, int, int] = WHITE) -> Iterator[FinishedBand]:
    """Run the model over the tile grid row by row and yield the finished output rows.

    The tiles of the next batch are read in a background thread while the model
    runs on the current one; close the generator (``contextlib.closing``) before
    closing the slide if the iteration may stop early.

    Args:
        layout: the tile grid.
        read_tile: pixel source.
        stain_batch: the model, given where the tiles are (:func:`positionless` makes one of a
            tile function such as :class:`~virtual_ihc.inference.model.StainModel`).
        is_tissue: bool ``(num_rows, num_cols)``; false tiles are ``background``, not run.
        batch_size: tiles per model call.
        first_row: tile row to start from (resuming); rows before it are not read.
        carry: the :attr:`FinishedBand.carry` of tile row ``first_row - 1`` when resuming.
        background: RGB of the tiles that are not run (and of the band before any tile adds to it).
    """
    row_weights = axis_weights(list(layout.row_starts), layout.tile_height, layout.margin)
    col_weights = axis_weights(list(layout.col_starts), layout.tile_width, layout.margin)
    row_coverage = _coverage(layout.row_starts, row_weights, layout.height)
    col_coverage = _coverage(layout.col_starts, col_weights, layout.width)

    def read_batch(row: int, columns: np.ndarray) -> np.ndarray:
        return np.stack([read_tile(layout.row_starts[row], layout.col_starts[col], layout.tile_height,
                                   layout.tile_width) for col in columns])

    background = np.asarray(background, np.float32)
    batches = prefetched(_batches(is_tissue, batch_size, first_row), read_batch)
    try:
        pending = next(batches, None)
        for row in range(first_row, layout.num_rows):
            y = layout.row_starts[row]
            band = np.zeros((layout.tile_height, layout.width, 3), np.float32)
            if carry is not None and len(carry):
                band[:len(carry)] = carry
            while pending is not None and pending[0] == row:
                _, columns, tiles = pending
                for col, output in zip(columns, stain_batch(row, columns, tiles)):
                    _accumulate(band, output, row_weights[row], col_weights[col], layout.col_starts[col], background)
                pending = next(batches, None)
            final = layout.final_rows_end(row) - y
            carry = band[final:].copy()
            yield FinishedBand(row, y, _finish(band[:final], row_coverage[y:y + final], col_coverage, background),
                               carry,
                               int(is_tissue[row].sum()))
    finally:
        batches.close()  # waits for a read under way: the caller may close the slide next


def positionless(model: TileModel) -> BatchStainer:
    """The :data:`BatchStainer` that runs ``model`` on the tiles wherever they are."""
    return lambda row, columns, tiles: model(tiles)


def _batches(is_tissue: np.ndarray, batch_size: int, first_row: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(row, columns)`` of every model call in order: the tissue tiles of each row, ``batch_size`` at a time."""
    for row in range(first_row, len(is_tissue)):
        columns = np.flatnonzero(is_tissue[row])
        for start in range(0, len(columns), batch_size):
            yield row, columns[start:start + batch_size]


def prefetched(batches: Iterator[tuple[int, np.ndarray]],
                read_batch: Callable[[int, np.ndarray], np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(row, columns, tiles)`` for each batch; the next batch's read is under way when one is yielded."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        previous = None
        for row, columns in batches:
            future = pool.submit(read_batch, row, columns)
            if previous is not None:
                yield previous[0], previous[1], previous[2].result()
            previous = (row, columns, future)
        if previous is not None:
            yield previous[0], previous[1], previous[2].result()


def _finish(sums: np.ndarray, row_coverage: np.ndarray, col_coverage: np.ndarray,
            background: np.ndarray) -> np.ndarray:
    """``uint8`` pixels ``background + sums / coverage`` of finished rows; ``sums`` is overwritten (no band copies)."""
    sums /= row_coverage[:, None, None]
    sums /= col_coverage[None, :, None]
    sums += background
    np.rint(sums, out=sums)
    return np.clip(sums, 0, 255, out=sums).astype(np.uint8)


def _coverage(starts: tuple[int, ...], weights: list[np.ndarray], length: int) -> np.ndarray:
    """float32 ``(length,)``: the sum of the tiles' windows along one axis (> 0 everywhere)."""
    total = np.zeros(length)
    for start, weight in zip(starts, weights):
        total[start:start + len(weight)] += weight
    return total.astype(np.float32)


def _accumulate(band: np.ndarray, output: np.ndarray, row_weight: np.ndarray, col_weight: np.ndarray,
                x: int, background: np.ndarray) -> None:
    """Add ``window * (output - background)`` of one tile (``uint8 (h, w, 3)``) to ``band`` in place."""
    window = row_weight.astype(np.float32)[:, None, None] * col_weight.astype(np.float32)[None, :, None]
    band[:, x:x + len(col_weight)] += window * (output.astype(np.float32) - background)
