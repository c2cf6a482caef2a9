"""The Ki-67 index per region of a slide, its hot spot, and its map.

The slide (in the H&E's level-0 pixels) is cut into square regions of ``region_um`` µm
(250 µm by default); every counted nucleus adds to the region holding its centroid. The
labelling index of a region is ``positive / nuclei``. The *hot spot* is the region with the
highest index among those with at least ``hotspot_min_nuclei`` nuclei (500 by default: the
International Ki67 Working Group's minimum count for a hot-spot score). Memory: two counters
per region.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np


@dataclasses.dataclass
class RegionCounts:
    """Nuclei and positive nuclei per region.

    Attributes:
        side: region side in H&E level-0 pixels.
        nuclei, positive: int64 ``(rows, cols)``.
    """

    side: float
    nuclei: np.ndarray
    positive: np.ndarray

    @classmethod
    def empty(cls, width: float, height: float, side: float) -> "RegionCounts":
        """Counters for a slide of ``width x height`` level-0 pixels."""
        shape = (max(1, math.ceil(height / side)), max(1, math.ceil(width / side)))
        return cls(side, np.zeros(shape, np.int64), np.zeros(shape, np.int64))

    def add(self, centroids: np.ndarray, positive: np.ndarray) -> None:
        """Count cells at ``(x, y)`` level-0 centroids ``(N, 2)``."""
        rows = np.clip((centroids[:, 1] // self.side).astype(int), 0, self.nuclei.shape[0] - 1)
        cols = np.clip((centroids[:, 0] // self.side).astype(int), 0, self.nuclei.shape[1] - 1)
        np.add.at(self.nuclei, (rows, cols), 1)
        np.add.at(self.positive, (rows, cols), np.asarray(positive, np.int64))

    @property
    def index(self) -> np.ndarray:
        """float64 ``(rows, cols)`` labelling index (NaN where there is no nucleus)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.nuclei > 0, self.positive / np.maximum(self.nuclei, 1), np.nan)

    def hot_spot(self, min_nuclei: int) -> tuple[int, int] | None:
        """``(row, col)`` of the highest-index region with at least ``min_nuclei`` nuclei, or ``None``."""
        eligible = self.nuclei >= min_nuclei
        if not eligible.any():
            return None
        index = np.where(eligible, self.index, -1.0)
        return tuple(int(value) for value in np.unravel_index(int(np.argmax(index)), index.shape))

    def write_csv(self, path: str | os.PathLike, mpp: float | None) -> None:
        """``regions.csv``: one row per region with nuclei (position in level-0 pixels and µm, counts, index)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "col", "x0_px", "y0_px", "x0_um", "y0_um", "side_um", "nuclei", "positive",
                             "index"])
            for row, col in zip(*np.nonzero(self.nuclei)):
                x0, y0 = col * self.side, row * self.side
                um = (lambda value: f"{value * mpp:.1f}") if mpp else (lambda value: "")
                writer.writerow([row, col, f"{x0:.1f}", f"{y0:.1f}", um(x0), um(y0), um(self.side),
                                 self.nuclei[row, col], self.positive[row, col],
                                 f"{self.positive[row, col] / self.nuclei[row, col]:.4f}"])
        os.replace(tmp, path)


def index_colours(index: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(..., 3)`` of labelling indices in [0, 1]: matplotlib's ``turbo``, dark blue (0) through
    green and yellow to dark red (1); NaN as 0."""
    from matplotlib import colormaps

    return (colormaps["turbo"](np.clip(np.nan_to_num(index), 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def index_layer(counts: RegionCounts, pixels_per_region: int = 1) -> np.ndarray:
    """uint8 RGBA ``(rows * p, cols * p, 4)``: ``p = pixels_per_region`` pixels a side per region, its index
    colour, opaque where it has nuclei, transparent elsewhere (the viewer's overlay, stretched over the slide;
    several pixels a region keep its edges sharp when the browser scales it up)."""
    layer = np.zeros(counts.nuclei.shape + (4,), np.uint8)
    layer[..., :3] = index_colours(counts.index)
    layer[..., 3] = np.where(counts.nuclei > 0, 255, 0)
    return np.repeat(np.repeat(layer, pixels_per_region, axis=0), pixels_per_region, axis=1)


def write_index_layer(folder: str | os.PathLike, counts: RegionCounts, downsample: float, slide_name: str,
                      virtual_size: tuple[int, int], region_um: float, side: int = 1024) -> None:
    """``index_layer.png`` (:func:`index_layer`, about ``side`` pixels on its long side) and ``index_layer.json``.

    The JSON says which virtual slide the layer covers and where it lies on it (``virtual-ihc view
    --readout`` reads it): ``{"image", "slide" (file name), "virtual_size", "columns", "rows",
    "region_px" (virtual-slide pixels a region), "region_um"}``. Both written under temporary names
    and renamed.
    """
    folder = Path(folder)
    pixels = int(np.clip(side // max(counts.nuclei.shape), 1, 64))
    layer = index_layer(counts, pixels)
    tmp = folder / ".index_layer.tmp.png"
    cv2.imwrite(str(tmp), cv2.cvtColor(layer, cv2.COLOR_RGBA2BGRA))
    os.replace(tmp, folder / "index_layer.png")
    tmp = folder / ".index_layer.json.tmp"
    tmp.write_text(json.dumps({"image": "index_layer.png", "slide": slide_name,
                               "virtual_size": [int(value) for value in virtual_size],
                               "columns": int(counts.nuclei.shape[1]), "rows": int(counts.nuclei.shape[0]),
                               "region_px": counts.side / downsample, "region_um": region_um}))
    os.replace(tmp, folder / "index_layer.json")


def index_map(thumbnail: np.ndarray, counts: RegionCounts, level0_size: tuple[float, float],
              hot_spot: tuple[int, int] | None, alpha: float = 0.55) -> np.ndarray:
    """uint8 RGB: the slide's thumbnail with each counted region tinted by its index, the hot spot outlined.

    Args:
        thumbnail: ``uint8 (h, w, 3)`` of the whole slide.
        counts: the regions.
        level0_size: ``(width, height)`` of the slide in the regions' level-0 pixels.
        hot_spot: ``(row, col)`` to outline, or ``None``.
        alpha: tint strength.
    """
    height, width = thumbnail.shape[:2]
    scale = width / level0_size[0]
    layer = index_layer(counts)
    # region grid -> thumbnail pixels: each region covers side * scale thumbnail pixels
    rows = np.minimum((np.arange(height) / (counts.side * scale)).astype(int), layer.shape[0] - 1)
    cols = np.minimum((np.arange(width) / (counts.side * scale)).astype(int), layer.shape[1] - 1)
    stretched = layer[rows[:, None], cols[None, :]]
    weight = (stretched[..., 3:] / 255.0) * alpha
    out = (thumbnail * (1 - weight) + stretched[..., :3] * weight).astype(np.uint8)
    if hot_spot is not None:
        row, col = hot_spot
        top_left = (int(col * counts.side * scale), int(row * counts.side * scale))
        bottom_right = (int((col + 1) * counts.side * scale), int((row + 1) * counts.side * scale))
        cv2.rectangle(out, top_left, bottom_right, (0, 0, 0), max(1, width // 300))
    return np.ascontiguousarray(out)
