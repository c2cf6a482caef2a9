"""Registered paired tiles from one H&E slide and its consecutive Ki-67 slide.

:func:`register_slide_pair` reads both slides at a working resolution (a target
µm/px or magnification, as for tiling), registers them on reduced views
(:mod:`virtual_ihc.slides.registration`), then cuts tissue tiles on the H&E grid
and resamples the Ki-67 slide region by region onto each tile. Outputs::

    OUT/pairs/he/<pair>_x<X>_y<Y>.png     OUT/pairs/ki67/<pair>_x<X>_y<Y>.png  (same names)
    OUT/qc/<pair>_checkerboard.png        alternating H&E / registered Ki-67 squares
    OUT/qc/<pair>_overlay.png             nuclear densities: H&E magenta, Ki-67 green
    OUT/transforms/<pair>.npz             affine, flow, flow_scale (working pixels)
    OUT/registration.csv                  one row per pair: quality and transform

``X, Y`` are level-0 pixels of the H&E slide.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.io.images import write_image_rgb
from virtual_ihc.io.slides import (LevelChoice, Slide, choose_level, open_slide, output_size, read_downsampled,
                                   read_scaled_region)
from virtual_ihc.slides.registration import (Registration, RegistrationOptions, checkerboard, density_overlay,
                                             nuclear_density, register_images, warp_to_he)
from virtual_ihc.slides.splits import SlideEntry, slide_id_for
from virtual_ihc.slides.tiling import TilingOptions, plan_slide

logger = logging.getLogger(__name__)

QUALITY_COLUMNS = ("pair_id", "he_slide", "ki67_slide", "ncc_before", "ncc_affine", "ncc_after",
                   "mi_before", "mi_affine", "mi_after", "flow_mean_px", "flow_max_px",
                   "affine_a", "affine_b", "affine_tx", "affine_c", "affine_d", "affine_ty", "tiles")


@dataclasses.dataclass
class PairResult:
    """What :func:`register_slide_pair` wrote."""

    pair_id: str
    registration: Registration
    quality: dict[str, float]
    tiles: int
    out_dir: Path


def save_registration(path: str | os.PathLike, registration: Registration) -> Path:
    """Write a registration as ``.npz`` (``affine``, ``flow``, ``flow_scale``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, affine=registration.affine, flow=registration.flow,
                        flow_scale=np.float64(registration.flow_scale))
    return path


def load_registration(path: str | os.PathLike) -> Registration:
    """Read a registration written by :func:`save_registration`."""
    with np.load(path) as data:
        return Registration(data["affine"], data["flow"], float(data["flow_scale"]))


def warp_tile(ki67_slide: Slide, ki67_choice: LevelChoice, registration: Registration,
              x: int, y: int, size: int) -> np.ndarray:
    """The Ki-67 slide resampled on the H&E tile at ``(x, y)`` (working pixels): ``uint8 (size, size, 3)``.

    Only the Ki-67 region under the mapped tile (plus a 2 px margin) is read.
    """
    map_x, map_y = registration.map_grid(x, y, size, size)
    width, height = output_size(ki67_slide, ki67_choice)
    x0, y0 = max(0, math.floor(map_x.min()) - 2), max(0, math.floor(map_y.min()) - 2)
    x1, y1 = min(width, math.ceil(map_x.max()) + 3), min(height, math.ceil(map_y.max()) + 3)
    if x1 <= x0 or y1 <= y0:
        return np.full((size, size, 3), 255, np.uint8)
    region = read_scaled_region(ki67_slide, ki67_choice, x0, y0, x1 - x0, y1 - y0)
    return cv2.remap(region, map_x - x0, map_y - y0, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


def _upsert_quality_row(csv_path: Path, row: dict) -> None:
    """Replace (or add) the row of ``row['pair_id']`` in the quality table."""
    rows = []
    if csv_path.exists():
        with open(csv_path, newline="") as handle:
            rows = [old for old in csv.DictReader(handle) if old["pair_id"] != row["pair_id"]]
    rows.append(row)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=QUALITY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def register_slide_pair(he_path: str | os.PathLike, ki67_path: str | os.PathLike, out_dir: str | os.PathLike,
                        tiling: TilingOptions = TilingOptions(overlap=0),
                        options: RegistrationOptions = RegistrationOptions(),
                        pair_id: str | None = None) -> PairResult:
    """Register a Ki-67 slide onto its consecutive H&E slide and write paired tiles.

    Args:
        he_path, ki67_path: the two slides (any format :func:`open_slide` reads).
        out_dir: output folder (layout in the module docstring).
        tiling: tile size, overlap, target resolution, metadata overrides and
            ``min_tissue`` of the paired tiles (cut on the H&E tissue).
        options: registration parameters.
        pair_id: prefix of tile names (default: the H&E slide id).
    """
    out_dir = Path(out_dir)
    pair_id = pair_id or slide_id_for(he_path)
    overrides = dict(mpp=tiling.mpp, objective_power=tiling.objective_power)
    with open_slide(he_path, **overrides) as he_slide, open_slide(ki67_path, **overrides) as ki67_slide:
        he_choice = choose_level(he_slide, tiling.target_mpp, tiling.target_mag)
        ki67_choice = choose_level(ki67_slide, tiling.target_mpp, tiling.target_mag)
        longest = max(*output_size(he_slide, he_choice), *output_size(ki67_slide, ki67_choice))
        view_scale = max(1.0, longest / options.flow_size)  # working pixels per view pixel
        he_view = read_downsampled(he_slide, he_choice.downsample * view_scale)
        ki67_view = read_downsampled(ki67_slide, ki67_choice.downsample * view_scale)
        result = register_images(he_view, ki67_view, options, scale=view_scale)
        registration = result.registration

        view_registration = registration.scaled(1.0 / view_scale)
        warped_view = warp_to_he(ki67_view, view_registration, he_view.shape[:2], border_value=255)
        write_image_rgb(out_dir / "qc" / f"{pair_id}_checkerboard.png", checkerboard(he_view, warped_view))
        write_image_rgb(out_dir / "qc" / f"{pair_id}_overlay.png",
                        density_overlay(nuclear_density(he_view), nuclear_density(warped_view)))
        save_registration(out_dir / "transforms" / f"{pair_id}.npz", registration)

        plan = plan_slide(SlideEntry(Path(he_path), "he", pair_id), tiling)
        for x, y in plan.origins:
            level0_x, level0_y = int(round(x * he_choice.downsample)), int(round(y * he_choice.downsample))
            name = f"{pair_id}_x{level0_x}_y{level0_y}.png"
            write_image_rgb(out_dir / "pairs" / "he" / name,
                            read_scaled_region(he_slide, he_choice, x, y, tiling.tile_size, tiling.tile_size))
            write_image_rgb(out_dir / "pairs" / "ki67" / name,
                            warp_tile(ki67_slide, ki67_choice, registration, x, y, tiling.tile_size))
    affine = registration.affine.ravel()
    row = dict(pair_id=pair_id, he_slide=str(he_path), ki67_slide=str(ki67_path),
               **{key: round(value, 5) for key, value in result.quality.items()},
               **{f"affine_{name}": round(float(value), 6)
                  for name, value in zip(("a", "b", "tx", "c", "d", "ty"), affine)},
               tiles=len(plan.origins))
    _upsert_quality_row(out_dir / "registration.csv", row)
    logger.info("%s: %d paired tiles, NCC %.3f -> %.3f", pair_id, len(plan.origins),
                result.quality["ncc_before"], result.quality["ncc_after"])
    return PairResult(pair_id, registration, result.quality, len(plan.origins), out_dir)
