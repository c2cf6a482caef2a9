"""The Ki-67 labelling index of a tile: fraction of nuclei whose DAB staining is positive.

Pipeline for a ``uint8`` RGB Ki-67 tile:

1. colour deconvolution into hematoxylin / eosin / DAB amounts
   (:func:`virtual_ihc.histology.stains.stain_concentrations`, i.e. ``skimage.color.rgb2hed``;
   amounts are optical densities divided by ln(10^6), so 0.033 is about 0.2 OD in log10 units);
2. nuclei: hematoxylin + DAB (every nucleus carries one or the other), lightly
   smoothed, thresholded by Otsu's method (never below ``min_nuclear_density``),
   small specks removed, touching nuclei split by a watershed on the distance transform;
3. a nucleus is positive when its mean DAB amount exceeds ``dab_threshold``.

The index is ``positive / nuclei`` per tile; per slide the counts are summed
over the slide's tiles first. The authors' area measures are also returned:
the fraction of tile pixels in positive (DAB) and negative (hematoxylin-only)
nuclei, whose Pearson correlation between virtual and real tiles the paper reports.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed

from virtual_ihc.histology.stains import stain_concentrations

#: tile names ``<slide>_x<X>_y<Y>.<ext>`` (as the registered-pair tiler writes them) -> slide
_TILE_SUFFIX = re.compile(r"_x\d+_y\d+$")


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    """Nucleus detection and positivity settings (amounts in ``rgb2hed`` units).

    Attributes:
        dab_threshold: mean DAB amount above which a nucleus is positive.
        min_nuclear_density: floor of the Otsu threshold on hematoxylin + DAB
            (stops Otsu from splitting pale stroma when a tile has no nuclei).
        min_area: smallest nucleus in pixels; smaller objects are specks.
        min_distance: smallest distance in pixels between two nucleus centres
            when touching nuclei are split.
        smoothing_sigma: Gaussian smoothing of the nuclear signal, pixels.
    """

    dab_threshold: float = 0.015
    min_nuclear_density: float = 0.015
    min_area: int = 8
    min_distance: int = 3
    smoothing_sigma: float = 1.0


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


def segment_nuclei(concentrations: np.ndarray, options: IndexOptions = IndexOptions()) -> np.ndarray:
    """Label nuclei in an ``(H, W, 3)`` H/E/DAB amount image: int32 ``(H, W)``, 0 = background."""
    signal = gaussian(concentrations[..., 0] + concentrations[..., 2], sigma=options.smoothing_sigma)
    threshold = options.min_nuclear_density
    if np.ptp(signal) > 0:
        threshold = max(threshold, threshold_otsu(signal))
    components, _ = ndimage.label(signal > threshold)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    mask = sizes[components] >= options.min_area  # drop specks
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    components[~mask] = 0
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=options.min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    # components without a distance peak (thin slivers) still count as one nucleus
    unclaimed = mask & (labels == 0)
    if unclaimed.any():
        extra, count = ndimage.label(unclaimed)
        labels[unclaimed] = extra[unclaimed] + labels.max()
    return labels.astype(np.int32)


def tile_index(rgb: np.ndarray, options: IndexOptions = IndexOptions()) -> TileIndex:
    """Detect nuclei in a ``uint8 (H, W, 3)`` Ki-67 tile and count the DAB-positive ones."""
    concentrations = stain_concentrations(rgb)
    labels = segment_nuclei(concentrations, options)
    count = int(labels.max())
    if count == 0:
        return TileIndex(0, 0, 0.0, 0.0)
    ids = np.arange(1, count + 1)
    mean_dab = ndimage.mean(concentrations[..., 2], labels=labels, index=ids)
    areas = ndimage.sum(np.ones_like(labels), labels=labels, index=ids)
    present = areas > 0
    positive = (mean_dab > options.dab_threshold) & present
    pixels = labels.size
    return TileIndex(nuclei=int(present.sum()), positive=int(positive.sum()),
                     positive_area=float(areas[positive].sum() / pixels),
                     negative_area=float(areas[present & ~positive].sum() / pixels))


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
