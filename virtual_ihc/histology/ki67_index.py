"""The Ki-67 labelling index of a tile: fraction of nuclei whose DAB staining is positive.

For a ``uint8`` RGB Ki-67 tile: nuclei are segmented by :mod:`virtual_ihc.histology.nuclei`
(hematoxylin counterstained and DAB-stained nuclei alike), and a nucleus is positive
when its mean DAB amount (``rgb2hed`` units) exceeds ``NucleusOptions.dab_threshold``.

The index is ``positive / nuclei`` per tile; per slide the counts are summed
over the slide's tiles first. The authors' area measures are also returned:
the fraction of tile pixels in positive (DAB) and negative (hematoxylin-only)
nuclei, whose Pearson correlation between virtual and real tiles the paper reports.

:func:`index_over_nuclei` counts the positive nuclei of a *virtual* Ki-67 tile over
nuclei found elsewhere (the H&E tile it was made from), which is how a virtual index
is read without trusting the virtual image to keep its nuclei.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from virtual_ihc.histology.nuclei import NucleusOptions, mean_per_nucleus, segment_nuclei
from virtual_ihc.histology.stains import stain_concentrations

#: tile names ``<slide>_x<X>_y<Y>.<ext>`` (as the registered-pair tiler writes them) -> slide
_TILE_SUFFIX = re.compile(r"_x\d+_y\d+$")


@dataclasses.dataclass(frozen=True)
class TileIndex:
    """Counts and areas of one tile."""

    nuclei: int
    positive: int
    positive_area: float  # fraction of pixels in positive nuclei, [0, 1]
    negative_area: float  # fraction of pixels in negative nuclei, [0, 1]

    @property
    def index(self) -> float:
        """Labelling index in [0, 1] (NaN when no nucleus was found)."""
        return self.positive / self.nuclei if self.nuclei else float("nan")


def nucleus_dab(rgb: np.ndarray, labels: np.ndarray,
                options: NucleusOptions = NucleusOptions()) -> tuple[np.ndarray, np.ndarray]:
    """Mean DAB amount of each nucleus 1..N of ``labels`` in ``rgb``, and whether it is Ki-67 positive.

    Returns:
        ``(mean_dab float64 (N,), positive bool (N,))``: positive when the mean DAB exceeds
        ``options.dab_threshold`` (``rgb2hed`` units).
    """
    mean_dab = mean_per_nucleus(stain_concentrations(rgb)[..., 2], labels)
    return mean_dab, mean_dab > options.dab_threshold


def index_over_nuclei(rgb: np.ndarray, labels: np.ndarray, options: NucleusOptions = NucleusOptions()) -> TileIndex:
    """Count the nuclei ``labels`` (int32 ``(H, W)``, 0 = background) whose mean DAB in ``rgb`` is positive."""
    count = int(labels.max())
    if count == 0:
        return TileIndex(0, 0, 0.0, 0.0)
    _, positive = nucleus_dab(rgb, labels, options)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float64)
    present = areas > 0
    positive = positive & present
    pixels = labels.size
    return TileIndex(nuclei=int(present.sum()), positive=int(positive.sum()),
                     positive_area=float(areas[positive].sum() / pixels),
                     negative_area=float(areas[present & ~positive].sum() / pixels))


def tile_index(rgb: np.ndarray, options: NucleusOptions = NucleusOptions()) -> TileIndex:
    """Detect nuclei in a ``uint8 (H, W, 3)`` Ki-67 tile and count the DAB-positive ones."""
    return index_over_nuclei(rgb, segment_nuclei(rgb, options), options)


def slide_of(tile_name: str) -> str:
    """Slide id of a tile name: ``pairA_x512_y0.png`` -> ``pairA``; other names map to ``"all"``."""
    stem = tile_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slide, found = _TILE_SUFFIX.subn("", stem)
    return slide if found else "all"


def slide_indices(names: list[str], tiles: list[TileIndex]) -> dict[str, float]:
    """Per-slide labelling index: positive / nuclei summed over each slide's tiles (NaN without nuclei)."""
    totals: dict[str, list[int]] = {}
    for name, tile in zip(names, tiles):
        counts = totals.setdefault(slide_of(name), [0, 0])
        counts[0] += tile.positive
        counts[1] += tile.nuclei
    return {slide: positive / nuclei if nuclei else float("nan") for slide, (positive, nuclei) in totals.items()}
