"""How each tile of an input is stained: its instance normalisation, and glass.

:class:`TileStaining` holds an input's tile grid with the choices of :func:`effective_normalization`
(per tile, or slide-consistent: :mod:`virtual_ihc.inference.slide_statistics`) and of glass
(:mod:`virtual_ihc.inference.glass`), and runs the passes over the grid: :meth:`TileStaining.measure`
(slide-consistent only) and :meth:`TileStaining.stitch`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from virtual_ihc.inference.glass import GlassRule
from virtual_ihc.inference.slide_statistics import (NormalizationOptions, SmoothedStatistics, StatisticsStore,
                                                    measure_statistics)
from virtual_ihc.inference.stitching import (WHITE, BatchStainer, FinishedBand, TileLayout, TileModel, TileReader,
                                             positionless, stitch_rows)

logger = logging.getLogger(__name__)


def effective_normalization(model: TileModel, chosen: NormalizationOptions | None,
                            whole: bool = False) -> NormalizationOptions | None:
    """The slide-consistent normalisation this run uses, or ``None`` for per-tile normalisation.

    ``whole`` (``--whole``) runs one tile: its own statistics are the image's. Without a
    choice (``chosen is None``), slide-consistent when the model has a ``.keras``
    generator; a :class:`~virtual_ihc.inference.model.StainModel` without one falls back to
    per-tile normalisation with a warning.
    """
    if whole:
        return None
    if chosen is not None:
        return chosen if chosen.method == "kernel" else None
    keras_path = getattr(model, "keras_path", None)
    if keras_path is None:
        return None  # a plain tile function: nothing to measure statistics with
    if not Path(keras_path).is_file():
        logger.warning("%s: no .keras generator beside the export: each tile is normalised on its own (per-tile "
                       "instance normalisation; the tile grid may show)", keras_path)
        return None
    return NormalizationOptions()


@dataclasses.dataclass
class TileStaining:
    """One input's tile grid and how its tiles are stained: the passes over it.

    Attributes:
        layout, read_tile, is_tissue, batch_size: the grid, the pixels, which tiles run, tiles per call.
        model: the generator (a :class:`~virtual_ihc.inference.model.StainModel` for
            slide-consistent normalisation, which needs its ``statistics_module``).
        normalization: slide-consistent normalisation, or ``None`` for per tile.
        glass: what glass becomes, or ``None`` to keep the generator's output.
    """

    layout: TileLayout
    read_tile: TileReader
    model: TileModel
    is_tissue: np.ndarray
    batch_size: int
    normalization: NormalizationOptions | None
    glass: GlassRule | None

    def measure(self, store: StatisticsStore, first_row: int, row_done: Callable[[int], None]) -> int:
        """The first pass (slide-consistent normalisation only): the tiles' statistics into ``store``."""
        return measure_statistics(self.layout, self.read_tile, self.model.statistics_module(), self.is_tissue,
                                  self.batch_size, store, self.normalization, first_row, row_done)

    def stitch(self, store: StatisticsStore | None, first_row: int = 0,
               carry: np.ndarray | None = None) -> Iterator[FinishedBand]:
        """The second pass: stain, blend and yield the finished rows."""
        background = self.glass.colour if self.glass is not None else WHITE
        return stitch_rows(self.layout, self.read_tile, self._stainer(store), self.is_tissue, self.batch_size,
                           first_row, carry, background)

    def _stainer(self, store: StatisticsStore | None) -> BatchStainer:
        if self.normalization is None:
            stain = positionless(self.model)
        else:
            module = self.model.statistics_module()
            smoothed = SmoothedStatistics(self.layout, store, self.normalization)
            cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

            def stain(row: int, columns: np.ndarray, tiles: np.ndarray) -> np.ndarray:
                if row not in cache:
                    cache.clear()
                    cache[row] = smoothed.for_row(row)
                means, variances = cache[row]
                return module.stain_tiles(tiles, means[columns], variances[columns])

        if self.glass is None:
            return stain
        return lambda row, columns, tiles: self.glass.apply(tiles, stain(row, columns, tiles))
