"""The cells of one tile of a (virtual) Ki-67 slide: nucleus outlines, centroids and DAB calls.

Nuclei are found by the project's instrument (:func:`virtual_ihc.histology.nuclei.segment_nuclei`)
and called positive or negative by their mean DAB
(:func:`virtual_ihc.histology.ki67_index.nucleus_dab`). A tile is read with a context margin on
every side (the instrument's local background looks about 15 px around each pixel); a nucleus
belongs to the tile whose *core* holds its centroid, so tiles that overlap by their margins
count every nucleus once.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy import ndimage

from virtual_ihc.histology.ki67_index import nucleus_dab
from virtual_ihc.histology.nuclei import NucleusOptions, segment_nuclei


@dataclasses.dataclass
class Cells:
    """Nuclei of one tile, in the slide's pixel frame (continuous coordinates: pixel ``(0, 0)`` spans [0, 1)).

    Attributes:
        centroids: float64 ``(N, 2)`` as ``(x, y)``.
        outlines: ``N`` float64 ``(k, 2)`` closed rings ``(x, y)`` (first point repeated last).
        areas: int ``(N,)`` pixels.
        mean_dab: float64 ``(N,)`` mean DAB amount (``rgb2hed`` units).
        positive: bool ``(N,)``.
    """

    centroids: np.ndarray
    outlines: list[np.ndarray]
    areas: np.ndarray
    mean_dab: np.ndarray
    positive: np.ndarray

    def __len__(self) -> int:
        return len(self.areas)

    def scaled(self, factor: float) -> "Cells":
        """The same cells with coordinates multiplied by ``factor`` (e.g. into the H&E's level-0 frame)."""
        return Cells(self.centroids * factor, [ring * factor for ring in self.outlines], self.areas,
                     self.mean_dab, self.positive)

    def subset(self, keep: np.ndarray) -> "Cells":
        keep = np.asarray(keep, bool)
        return Cells(self.centroids[keep], [ring for ring, kept in zip(self.outlines, keep) if kept],
                     self.areas[keep], self.mean_dab[keep], self.positive[keep])


def outline(mask: np.ndarray) -> np.ndarray:
    """The outer boundary of a bool mask (one component) as a valid closed ring of ``(x, y)`` points.

    Traced on the mask upsampled twice, so that a one-pixel neck between two lobes is two
    pixels wide and the ring does not run out and back along it: the ring passes a quarter
    of a pixel inside the mask's edge. What still touches itself (lobes joined by a corner
    only) is mended (shapely's ``buffer(0)``, the largest part kept); a mask too thin for a
    polygon gets the ring of its bounding box.
    """
    from shapely.geometry import Polygon

    doubled = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    ring = max(contours, key=len)[:, 0, :].astype(np.float64) / 2 + 0.25 if contours else np.zeros((0, 2))
    polygon = Polygon(ring) if len(ring) >= 3 else Polygon()
    if not polygon.is_valid:
        polygon = polygon.buffer(0)
        if polygon.geom_type == "MultiPolygon":
            polygon = max(polygon.geoms, key=lambda part: part.area)
    if polygon.is_empty or polygon.area == 0:
        rows, cols = np.nonzero(mask)
        x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], np.float64)
    return np.asarray(polygon.exterior.coords, np.float64)


def tile_cells(rgb: np.ndarray, origin: tuple[int, int], core: tuple[int, int, int, int],
               options: NucleusOptions = NucleusOptions()) -> Cells:
    """The nuclei of ``rgb`` whose centroid lies in ``core``.

    Args:
        rgb: ``uint8 (H, W, 3)`` tile with its context margin.
        origin: ``(x, y)`` of the tile's top-left pixel in the slide.
        core: ``(x0, y0, x1, y1)`` in the slide: the part of the slide this tile answers for.
        options: the nucleus instrument's settings (and the DAB threshold).
    """
    labels = segment_nuclei(rgb, options)
    count = int(labels.max())
    if count == 0:
        return Cells(np.zeros((0, 2)), [], np.zeros(0, int), np.zeros(0), np.zeros(0, bool))
    mean_dab, positive = nucleus_dab(rgb, labels, options)
    index = np.arange(1, count + 1)
    centroids_yx = np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, index), np.float64)
    centroids = centroids_yx[:, ::-1] + 0.5 + np.asarray(origin, np.float64)  # (x, y), pixel centres
    x0, y0, x1, y1 = core
    inside = ((centroids[:, 0] >= x0) & (centroids[:, 0] < x1) & (centroids[:, 1] >= y0) & (centroids[:, 1] < y1))
    slices = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    outlines = []
    for label in np.flatnonzero(inside) + 1:
        rows, cols = slices[label - 1]
        ring = outline(labels[rows, cols] == label)
        outlines.append(ring + np.array([cols.start + origin[0], rows.start + origin[1]], np.float64))
    return Cells(centroids[inside], outlines, areas[inside], mean_dab[inside], positive[inside])
