"""Read a virtual Ki-67 slide: every nucleus, positive or negative, streamed tile by tile.

:func:`read_out` walks the virtual slide's level 0 in tiles of ``tile_size`` pixels, each read
with a context margin (:mod:`virtual_ihc.readout.cells`), skipping tiles without tissue on the
slide's overview. The cells go straight into ``cells.geojson`` (:class:`~virtual_ihc.readout.qupath.CellWriter`),
in the H&E slide's level-0 pixel frame, and into the region counters
(:mod:`virtual_ihc.readout.regions`); nothing else is kept, so memory is one tile plus two
counters per region whatever the slide's area. At the end: ``regions.csv``, ``index_map.png``
(the index of each region over a thumbnail), ``index_layer.png`` and ``index_layer.json`` (the
same as a transparent overlay, for ``virtual-ihc view --readout``) and ``report.md``
(:mod:`virtual_ihc.readout.report`). Every file is written under a temporary name and renamed.

Where the virtual slide lies on the H&E: its level-0 pixels are ``downsample`` H&E level-0
pixels (the processing downsample of ``virtual-ihc stain``), taken from the H&E slide when
given (``--he``: the ratio of the two slides' widths), else from the TIFF's ImageDescription
that ``virtual-ihc stain`` writes, else 1 (with a warning).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.grid import tile_tissue_fractions
from virtual_ihc.histology.nuclei import NucleusOptions
from virtual_ihc.histology.tissue import tissue_mask
from virtual_ihc.io.images import write_image_rgb
from virtual_ihc.io.slides import Slide, open_slide, read_downsampled
from virtual_ihc.readout.cells import tile_cells
from virtual_ihc.readout.qupath import CellWriter, read_roi
from virtual_ihc.readout.regions import RegionCounts, index_map, write_index_layer
from virtual_ihc.readout.report import ReadoutSummary, write_report

logger = logging.getLogger(__name__)

#: long side of the overview (tissue tiles) and of the index map's thumbnail
OVERVIEW_SIDE = 1024
#: relative disagreement of the two slides' aspect allowed when mapping one onto the other
SIZE_TOLERANCE = 0.02
#: the key ``virtual-ihc stain`` writes its geometry under in the TIFF's ImageDescription
DESCRIPTION_KEY = "virtual_ihc"


class GeometryError(InputError):
    """Where the virtual slide lies on the H&E, or its µm/px, cannot be known; the message says what to give."""


@dataclasses.dataclass(frozen=True)
class ReadoutOptions:
    """Settings of a readout.

    Attributes:
        region_um: side of the square regions of ``regions.csv`` and of the hot spot, µm.
        hotspot_min_nuclei: fewest nuclei a region needs to be the hot spot.
        tile_size: side of the tiles the slide is read in, virtual-slide pixels.
        margin: context read around each tile, pixels.
        nucleus: the nucleus instrument's settings (and the DAB threshold of positivity).
    """

    region_um: float = 250.0
    hotspot_min_nuclei: int = 500
    tile_size: int = 1024
    margin: int = 32
    nucleus: NucleusOptions = NucleusOptions()

    def __post_init__(self):
        if not self.region_um > 0:
            raise InputError(f"region size must be positive (µm), got {self.region_um}")
        if self.hotspot_min_nuclei < 1:
            raise InputError(f"the hot spot's minimum count must be at least 1, got {self.hotspot_min_nuclei}")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where the virtual slide lies on the H&E slide.

    Attributes:
        downsample: H&E level-0 pixels per virtual-slide pixel.
        he_size: ``(width, height)`` of the H&E's level 0 (the virtual slide's size times
            ``downsample`` when the H&E is unknown).
        he_mpp: µm per H&E level-0 pixel.
        source: where ``downsample`` came from.
    """

    downsample: float
    he_size: tuple[float, float]
    he_mpp: float
    source: str


def stain_description(path: Path) -> dict:
    """The ``virtual_ihc`` entry of a TIFF's ImageDescription JSON, or ``{}``."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            description = tif.pages[0].description
        return dict(json.loads(description).get(DESCRIPTION_KEY, {}))
    except (OSError, ValueError, AttributeError, tifffile.TiffFileError):
        return {}


def slide_geometry(virtual: Slide, he_path: Path | None) -> Geometry:
    """The :class:`Geometry` of ``virtual`` from the H&E slide, the TIFF's description, or neither.

    Raises:
        GeometryError: the slides' shapes disagree, or no µm/px is known.
    """
    width, height = virtual.dimensions
    recorded = stain_description(virtual.path)
    if he_path is not None:
        with open_slide(he_path) as he:
            he_width, he_height = he.dimensions
            he_mpp = he.mpp
        downsample = he_width / width
        if abs(he_height / height - downsample) > SIZE_TOLERANCE * downsample + 1.0 / height * downsample:
            raise GeometryError(f"{virtual.path} ({width}x{height}) is not {he_path} ({he_width}x{he_height}) at "
                                f"one scale: pass the H&E slide it was stained from")
        if recorded.get("downsample") and abs(recorded["downsample"] - downsample) > SIZE_TOLERANCE * downsample:
            logger.warning("%s records a downsample of %.4g, %s gives %.4g: using %s", virtual.path.name,
                           recorded["downsample"], he_path.name, downsample, he_path.name)
        source = f"the H&E slide {he_path.name}"
        he_size = (float(he_width), float(he_height))
    elif recorded.get("downsample"):
        downsample = float(recorded["downsample"])
        he_size = tuple(float(value) for value in recorded.get("source_size", (width * downsample,
                                                                              height * downsample)))
        he_mpp = virtual.mpp / downsample if virtual.mpp else None
        source = f"{virtual.path.name}'s metadata (stained from {recorded.get('source', 'an H&E slide')})"
    else:
        logger.warning("%s does not say where it lies on its H&E slide and no --he was given: cell coordinates "
                       "are the virtual slide's own pixels", virtual.path.name)
        downsample, he_size, source = 1.0, (float(width), float(height)), "none (the virtual slide's own pixels)"
        he_mpp = virtual.mpp
    if he_mpp is None:
        he_mpp = virtual.mpp / downsample if virtual.mpp else None
    if he_mpp is None:
        raise GeometryError(f"{virtual.path}: no µm/px in the file{' or in the H&E slide' if he_path else ''}; "
                            f"regions of --region-um need one (give --he with the H&E slide it was stained from)")
    return Geometry(downsample, he_size, he_mpp, source)


def _tiles(width: int, height: int, size: int) -> list[tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` cores covering the slide, row by row."""
    return [(x, y, min(x + size, width), min(y + size, height))
            for y in range(0, height, size) for x in range(0, width, size)]


def _write_png(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_image_rgb(tmp, image)
    os.replace(tmp, path)


def read_out(virtual_path: str | os.PathLike, out_dir: str | os.PathLike, he_path: str | os.PathLike | None = None,
             roi_path: str | os.PathLike | None = None, options: ReadoutOptions = ReadoutOptions()) -> ReadoutSummary:
    """Find, call and count the nuclei of a virtual Ki-67 slide; write the readout files into ``out_dir``.

    Args:
        virtual_path: the virtual Ki-67 slide (``virtual-ihc stain``'s TIFF, or any slide or image).
        out_dir: folder of ``cells.geojson``, ``regions.csv``, ``index_map.png``, ``index_layer.png``,
            ``index_layer.json`` and ``report.md`` (created).
        he_path: the H&E slide it was stained from (its level-0 frame is the cells' frame).
        roi_path: QuPath GeoJSON annotations; only nuclei whose centroid is inside count.
        options: see :class:`ReadoutOptions`.

    Raises:
        SlideReadError: a slide cannot be read. GeometryError, RoiError: see there.
    """
    import shapely

    virtual_path, out_dir = Path(virtual_path), Path(out_dir)
    roi = read_roi(roi_path) if roi_path is not None else None
    with open_slide(virtual_path) as virtual:
        geometry = slide_geometry(virtual, Path(he_path) if he_path is not None else None)
        out_dir.mkdir(parents=True, exist_ok=True)
        width, height = virtual.dimensions
        scale = max(1.0, max(width, height) / OVERVIEW_SIDE)
        overview = read_downsampled(virtual, scale)
        mask = cv2.dilate(tissue_mask(overview).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        cores = _tiles(width, height, options.tile_size)
        fractions = tile_tissue_fractions(mask, [(y0, x0) for x0, y0, _, _ in cores], options.tile_size, scale)
        counts = RegionCounts.empty(*geometry.he_size, options.region_um / geometry.he_mpp)
        if roi is not None:
            shapely.prepare(roi)
        with CellWriter(out_dir / "cells.geojson") as writer:
            for (x0, y0, x1, y1), fraction in zip(cores, fractions):
                if fraction <= 0:
                    continue
                left, top = max(0, x0 - options.margin), max(0, y0 - options.margin)
                right, bottom = min(width, x1 + options.margin), min(height, y1 + options.margin)
                rgb = virtual.read_region(left, top, 0, right - left, bottom - top)
                cells = tile_cells(rgb, (left, top), (x0, y0, x1, y1), options.nucleus).scaled(geometry.downsample)
                if roi is not None and len(cells):
                    cells = cells.subset(shapely.contains_xy(roi, cells.centroids[:, 0], cells.centroids[:, 1]))
                writer.write(cells)
                counts.add(cells.centroids, cells.positive)
    hot_spot = counts.hot_spot(options.hotspot_min_nuclei)
    counts.write_csv(out_dir / "regions.csv", geometry.he_mpp)
    _write_png(out_dir / "index_map.png", index_map(overview, counts, geometry.he_size, hot_spot))
    write_index_layer(out_dir, counts, geometry.downsample, virtual_path.name, (width, height), options.region_um)
    summary = ReadoutSummary.of(virtual_path, geometry, counts, hot_spot, options, roi_path, writer.count)
    write_report(out_dir / "report.md", summary)
    return summary
