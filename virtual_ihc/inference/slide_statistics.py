"""Slide-consistent instance normalisation: measure every tile's statistics first, stain with smoothed ones.

Per-tile instance normalisation gives each tile the statistics of its own content: a tile
that is 20 % tissue is normalised mostly by its glass, its neighbour by its tissue, and the
stitched slide shows the tile grid. Kernelized instance normalisation (URUST, Ho et al.,
ECCV 2022) stains in two passes:

1. **measure** (:func:`measure_statistics`): every tissue tile (a centre crop of
   ``sample_size`` pixels, which costs a fraction of the tile) goes through the generator
   once, normally, and the mean and variance measured by each instance-norm layer are kept
   (:class:`StatisticsStore`: one small file per tile row in the partial folder, or memory);
2. **stain** (:class:`SmoothedStatistics`): each tile is normalised with the statistics of
   the tiles around it, a Gaussian of ``kernel_tiles`` tile strides over the distance
   between tile centres. Means and second moments are averaged (the mixture's variance,
   ``E[x^2] - E[x]^2``), which is what the layer would measure over the union of the tiles.
   ``kernel_tiles = inf`` is one set of statistics for the whole slide.

A tiny weight (:data:`PRIOR_WEIGHT`) of the whole slide's statistics is mixed in, so a tile
with no measured tile within reach still gets statistics. Memory: the second pass holds the
stored rows within three kernel widths of the current row (a band, whatever the slide
height); the first pass holds one batch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.inference.stitching import TileLayout, TileReader, prefetched

#: normalisation methods: slide-consistent (kernelized), or each tile its own (the generator as trained)
METHODS = ("kernel", "tile")
#: weight of the whole slide's pooled statistics against a tile's kernel weights (about 1 for its own tile)
PRIOR_WEIGHT = 1e-3
#: kernel weights are cut at this many kernel widths
KERNEL_REACH = 3.0
#: largest float16 (statistics are stored as float16 means and standard deviations)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclasses.dataclass(frozen=True)
class NormalizationOptions:
    """How instance normalisation is done over a tiled slide.

    Attributes:
        method: ``"kernel"`` (statistics smoothed over neighbouring tiles) or ``"tile"``
            (each tile its own statistics, one pass).
        kernel_tiles: standard deviation of the Gaussian kernel in tile strides
            (``tile_size - overlap`` pixels); ``inf`` = the whole slide's statistics.
        sample_size: side of the centre crop of each tile that is measured (pixels;
            tiles smaller than this are measured whole).
    """

    method: str = "kernel"
    kernel_tiles: float = 2.0
    sample_size: int = 256

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"normalization must be one of {METHODS}, got {self.method!r}")
        if not self.kernel_tiles > 0:
            raise InputError(f"kernel width must be positive (inf = whole slide), got {self.kernel_tiles}")
        if self.sample_size < 16:
            raise InputError(f"sample size must be at least 16 pixels, got {self.sample_size}")


class StatisticsModel(Protocol):
    """What the two passes call (:class:`~virtual_ihc.inference.model.StatisticsServingModule`)."""

    def measure_tiles(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def stain_tiles(self, tiles: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray: ...


class StatisticsStore:
    """The first pass's statistics, one entry per tile row: the measured columns, their means and variances.

    Kept as float16 means and standard deviations (half the bytes of float32, relative
    precision 1e-3), in ``folder/statistics_NNNNN.npy`` files written under a temporary
    name and renamed, or in memory when ``folder`` is ``None``.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._memory: dict[int, np.ndarray] = {}

    def _path(self, row: int) -> Path:
        return self.folder / f"statistics_{row:05d}.npy"

    def save_row(self, row: int, columns: np.ndarray, means: np.ndarray, variances: np.ndarray) -> None:
        """Keep tile row ``row``: ``columns (n,)`` and float32 ``(n, C)`` means and variances."""
        packed = np.concatenate([np.clip(means, -_FLOAT16_MAX, _FLOAT16_MAX),
                                 np.minimum(np.sqrt(np.maximum(variances, 0.0)), _FLOAT16_MAX)], axis=1)
        record = np.concatenate([np.asarray(columns, np.float16)[:, None], packed.astype(np.float16)], axis=1)
        if self.folder is None:
            self._memory[row] = record
            return
        tmp = self.folder / f".statistics_{row:05d}.npy.tmp"
        with open(tmp, "wb") as handle:
            np.save(handle, record)
        os.replace(tmp, self._path(row))

    def load_row(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(columns int (n,), means float32 (n, C), variances float32 (n, C))``; ``n = 0`` if none was kept."""
        if self.folder is None:
            record = self._memory.get(row)
        else:
            record = np.load(self._path(row)) if self._path(row).is_file() else None
        if record is None or not len(record):
            return np.zeros(0, int), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        columns = record[:, 0].astype(int)
        values = record[:, 1:].astype(np.float32)
        half = values.shape[1] // 2
        return columns, values[:, :half], np.square(values[:, half:])

    def nbytes(self) -> int:
        """Bytes the kept rows take (on disk, or in memory)."""
        if self.folder is None:
            return sum(record.nbytes for record in self._memory.values())
        return sum(path.stat().st_size for path in self.folder.glob("statistics_*.npy"))


def _centre_crop(layout: TileLayout, size: int) -> tuple[int, int, int, int]:
    """``(dy, dx, height, width)`` of the measured crop within a tile."""
    height, width = min(size, layout.tile_height), min(size, layout.tile_width)
    return (layout.tile_height - height) // 2, (layout.tile_width - width) // 2, height, width


def measure_statistics(layout: TileLayout, read_tile: TileReader, model: StatisticsModel, is_tissue: np.ndarray,
                       batch_size: int, store: StatisticsStore, options: NormalizationOptions, first_row: int = 0,
                       row_done: Callable[[int], None] | None = None) -> int:
    """The first pass: measure the centre crop of every tissue tile, row by row, into ``store``.

    Args:
        layout, read_tile, is_tissue, batch_size: as for :func:`~virtual_ihc.inference.stitching.stitch_rows`.
        model: measures statistics of uint8 tiles.
        store: where each row's statistics go.
        options: the crop size.
        first_row: tile row to start from (resuming: rows before it are in ``store``).
        row_done: called with ``row + 1`` after each row is stored.

    Returns:
        the number of tiles measured.
    """
    dy, dx, height, width = _centre_crop(layout, options.sample_size)

    def read_batch(row: int, columns: np.ndarray) -> np.ndarray:
        return np.stack([read_tile(layout.row_starts[row] + dy, layout.col_starts[col] + dx, height, width)
                         for col in columns])

    batches = ((row, columns[start:start + batch_size]) for row in range(first_row, layout.num_rows)
               for columns in [np.flatnonzero(is_tissue[row])] for start in range(0, len(columns), batch_size))
    measured = 0
    reader = prefetched(batches, read_batch)
    try:
        pending = next(reader, None)
        for row in range(first_row, layout.num_rows):
            columns, means, variances = [], [], []
            while pending is not None and pending[0] == row:
                _, batch_columns, tiles = pending
                batch_means, batch_variances = model.measure_tiles(tiles)
                columns.append(batch_columns)
                means.append(batch_means)
                variances.append(batch_variances)
                pending = next(reader, None)
            if columns:
                store.save_row(row, np.concatenate(columns), np.concatenate(means), np.concatenate(variances))
                measured += sum(len(batch) for batch in columns)
            if row_done:
                row_done(row + 1)
    finally:
        reader.close()  # waits for a read under way: the caller may close the slide next
    return measured


def grid_stride(layout: TileLayout) -> int:
    """Pixels from one tile to the next (``tile_size - overlap``; the tile side for a one-tile grid)."""
    for starts in (layout.row_starts, layout.col_starts):
        if len(starts) > 1:
            return starts[1] - starts[0]
    return max(layout.tile_height, layout.tile_width)


class SmoothedStatistics:
    """The second pass's statistics: for each tile, the Gaussian-weighted mixture of the measured tiles around it.

    Call :meth:`for_row` with tile rows in increasing order (rows far above the current one
    are dropped from memory).
    """

    def __init__(self, layout: TileLayout, store: StatisticsStore, options: NormalizationOptions):
        self.layout, self.store, self.options = layout, store, options
        self.stride = float(grid_stride(layout))
        self.row_centres = np.asarray(layout.row_starts, np.float64) + layout.tile_height / 2
        self.col_centres = np.asarray(layout.col_starts, np.float64) + layout.tile_width / 2
        self._rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.pooled_mean, self.pooled_variance = self._pooled()

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole slide's mixture statistics, streamed over the stored rows."""
        count, first, second = 0, 0.0, 0.0
        for row in range(self.layout.num_rows):
            columns, means, variances = self.store.load_row(row)
            if not len(columns):
                continue
            means, variances = means.astype(np.float64), variances.astype(np.float64)
            first = first + means.sum(0)
            second = second + (variances + np.square(means)).sum(0)
            count += len(columns)
        if not count:
            raise ValueError("no tile was measured: the slide has no tissue tile to take statistics from")
        mean = first / count
        return mean.astype(np.float32), np.maximum(second / count - mean ** 2, 0.0).astype(np.float32)

    def _row(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if row not in self._rows:
            self._rows[row] = self.store.load_row(row)
        return self._rows[row]

    def for_row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(columns, C)`` means and variances for every tile of tile row ``row``."""
        columns_total = len(self.layout.col_starts)
        if math.isinf(self.options.kernel_tiles):
            return (np.broadcast_to(self.pooled_mean, (columns_total, self.pooled_mean.size)),
                    np.broadcast_to(self.pooled_variance, (columns_total, self.pooled_variance.size)))
        sigma = self.options.kernel_tiles * self.stride
        reach = KERNEL_REACH * sigma
        near = [other for other in range(self.layout.num_rows)
                if abs(self.row_centres[other] - self.row_centres[row]) <= reach]
        for stale in [other for other in self._rows if other < near[0]]:
            del self._rows[stale]
        pooled_second = self.pooled_variance + np.square(self.pooled_mean)
        weight_sum = np.full((columns_total, 1), PRIOR_WEIGHT)
        first = PRIOR_WEIGHT * np.broadcast_to(self.pooled_mean, (columns_total, self.pooled_mean.size)).astype(np.float64)
        second = PRIOR_WEIGHT * np.broadcast_to(pooled_second, first.shape).astype(np.float64)
        for other in near:
            columns, means, variances = self._row(other)
            if not len(columns):
                continue
            row_weight = np.exp(-0.5 * ((self.row_centres[other] - self.row_centres[row]) / sigma) ** 2)
            distance = self.col_centres[:, None] - self.col_centres[columns][None, :]
            weights = row_weight * np.exp(-0.5 * (distance / sigma) ** 2) * (np.abs(distance) <= reach)
            weight_sum += weights.sum(1, keepdims=True)
            first += weights @ means
            second += weights @ (variances + np.square(means))
        mean = first / weight_sum
        variance = np.maximum(second / weight_sum - mean ** 2, 0.0)
        return mean.astype(np.float32), variance.astype(np.float32)
