"""Patchwork measures: how much a stitched virtual slide shows the tile grid it was stained on.

Three numbers, each on the output at processing resolution, with the H&E's tissue mask
(:func:`he_tissue_mask`: the same full-resolution rule that turns glass into glass):

- :func:`glass_spread`: the range (max - min) over grid cells of the mean grey level of
  the output's glass. Under per-tile normalisation a cell whose tile holds some tissue gets
  its own grey while cells of tiles never run stay white: a checkerboard on the glass.
- :func:`boundary_gradient_ratio`: gradient energy (squared difference between neighbouring
  pixels) across the tile grid's boundary lines over the energy across the reference lines
  near them (:func:`~virtual_ihc.inference.seams.seam_lines`: tile edges and overlap centres,
  against lines 8, 16, 24 px away, the generator's upsampling phase), counting only pixel
  pairs inside ``mask`` (tissue, or everything). An output without a grid scores about 1.
- :func:`mean_colour_difference`: mean absolute difference (grey levels, over RGB) from a
  reference output, e.g. ``--whole`` (no tiles, no patchwork by construction), inside ``mask``.

A grid cell is the part of the slide where one tile has the largest blending weight: cells
are bounded by the centres of the overlaps (:func:`grid_cells`).
"""

from __future__ import annotations

import cv2
import numpy as np

from virtual_ihc.inference.glass import GlassRule
from virtual_ihc.inference.seams import SeamLines
from virtual_ihc.histology.tissue import tissue_weight

#: a cell's glass counts when it has at least this share of glass pixels
MIN_GLASS_SHARE = 0.05


def he_tissue_mask(he: np.ndarray, rule: GlassRule, erode: int = 0) -> np.ndarray:
    """bool ``(H, W)``: where the H&E (``uint8`` RGB at processing resolution) is tissue, eroded by ``erode`` px."""
    mask = tissue_weight(he, rule.threshold, rule.colourless) > 0.5
    if erode > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
        mask = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    return mask


def he_glass_mask(he: np.ndarray, rule: GlassRule, clearance: int = 8) -> np.ndarray:
    """bool ``(H, W)``: where the H&E is glass, at least ``clearance`` px from tissue (clear of the feathered edge)."""
    tissue = he_tissue_mask(he, rule).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * clearance + 1, 2 * clearance + 1))
    return ~cv2.dilate(tissue, kernel).astype(bool)


def cell_bounds(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """``(begin, end)`` of each tile's cell along one axis: tile edges, or the centres of the overlaps."""
    bounds = [0]
    for previous, start in zip(starts, starts[1:]):
        bounds.append((start + min(previous + tile, length)) // 2)
    bounds.append(length)
    return list(zip(bounds[:-1], bounds[1:]))


def grid_cells(row_starts: list[int], col_starts: list[int], tile: int, height: int,
               width: int) -> list[tuple[slice, slice]]:
    """``(rows, cols)`` slices of every grid cell, row-major."""
    return [(slice(*rows), slice(*cols)) for rows in cell_bounds(row_starts, tile, height)
            for cols in cell_bounds(col_starts, tile, width)]


def glass_spread(image: np.ndarray, glass: np.ndarray, cells: list[tuple[slice, slice]]) -> dict:
    """The spread of the mean grey level of glass between grid cells.

    Args:
        image: ``uint8 (H, W, 3)`` output.
        glass: bool ``(H, W)``, where the H&E is glass (e.g. ``~he_tissue_mask(..., erode=...)`` of the tissue).
        cells: :func:`grid_cells`.

    Returns:
        ``{"range": max - min, "std": ..., "cells": cells counted, "means": [...]}``
        (grey = mean of R, G, B); a range of 0 with fewer than 2 cells.
    """
    grey = image.astype(np.float32).mean(axis=-1)
    means = []
    for rows, cols in cells:
        cell_glass = glass[rows, cols]
        if cell_glass.mean() >= MIN_GLASS_SHARE:
            means.append(float(grey[rows, cols][cell_glass].mean()))
    spread = max(means) - min(means) if len(means) > 1 else 0.0
    return {"range": spread, "std": float(np.std(means)) if means else 0.0, "cells": len(means), "means": means}


def _line_energy(image: np.ndarray, mask: np.ndarray | None, axis: int, lines: list[int]) -> tuple[float, int]:
    """Summed squared differences (over RGB) across ``lines`` of ``axis`` and the number of pixel pairs counted."""
    values = image.astype(np.float32)
    total, count = 0.0, 0
    for line in lines:
        before = values.take(line - 1, axis=axis)
        after = values.take(line, axis=axis)
        energy = np.square(after - before).sum(axis=-1)
        if mask is not None:
            inside = mask.take(line - 1, axis=axis) & mask.take(line, axis=axis)
            energy = energy[inside]
        total += float(energy.sum())
        count += int(energy.size)
    return total, count


def boundary_gradient_ratio(image: np.ndarray, rows: SeamLines, cols: SeamLines,
                            mask: np.ndarray | None = None) -> float:
    """Mean gradient energy across the grid's boundary lines / across their reference lines (both axes).

    Args:
        image: ``uint8 (H, W, 3)``.
        rows, cols: the grid's lines between rows and between columns (:func:`seam_lines`).
        mask: bool ``(H, W)``; only pixel pairs with both pixels in it count (``None`` = all).

    Returns:
        the ratio; NaN when no pixel pair of either kind is counted.
    """
    seam_sum = seam_count = reference_sum = reference_count = 0
    for axis, lines in ((0, rows), (1, cols)):
        total, count = _line_energy(image, mask, axis, list(lines.seams))
        seam_sum, seam_count = seam_sum + total, seam_count + count
        total, count = _line_energy(image, mask, axis, lines.references())
        reference_sum, reference_count = reference_sum + total, reference_count + count
    if not seam_count or not reference_count or reference_sum == 0:
        return float("nan")
    return (seam_sum / seam_count) / (reference_sum / reference_count)


def mean_colour_difference(image: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference in grey levels over RGB between two ``uint8 (H, W, 3)`` images, inside ``mask``."""
    difference = np.abs(image.astype(np.float32) - reference.astype(np.float32)).mean(axis=-1)
    return float(difference[mask].mean() if mask is not None else difference.mean())
