"""Synthetic whole-slide images: pyramidal tiled TIFFs that OpenSlide reads, for tests, demos and benchmarks.

The slides are written by :func:`virtual_ihc.io.tiff_pyramid.write_pyramidal_tiff`
from a tile callback (:data:`~virtual_ihc.io.tiff_pyramid.TileRenderer`), so a
20 000 x 20 000 slide never exists in memory.

:func:`consecutive_sections` draws a piece of 20x tissue on glass and stains it twice,
as H&E and as Ki-67 IHC of the next section: the Ki-67 section is rotated, shifted
and elastically deformed by a known map, as consecutive sections are on their slides
(the input of registration demos; :func:`write_consecutive_section_slides` writes both
as slides).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.data.synthetic import make_layout, render_he, render_ki67
from virtual_ihc.io.tiff_pyramid import TileRenderer, write_pyramidal_tiff

def array_renderer(image: np.ndarray) -> TileRenderer:
    """A :data:`TileRenderer` over an in-memory ``uint8`` RGB image (levels by area averaging)."""

    def render_tile(downsample: int, y: int, x: int, height: int, width: int) -> np.ndarray:
        region = image[y * downsample:(y + height) * downsample, x * downsample:(x + width) * downsample]
        if downsample == 1:
            return region
        return cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)

    return render_tile


def write_image_as_slide(path: str | os.PathLike, image: np.ndarray, mpp: float | None = None,
                         tile_size: int = 256, min_level_side: int = 256) -> Path:
    """Write an in-memory ``uint8`` RGB image as a pyramidal tiled TIFF (small test slides)."""
    height, width = image.shape[:2]
    return write_pyramidal_tiff(path, (height, width), array_renderer(image), mpp=mpp,
                                tile_size=tile_size, min_level_side=min_level_side)


def blob_tissue_renderer(height: int, width: int, seed: int = 0, texture_size: int = 256,
                         cell: int = 512, tissue_fraction: float = 0.4, stain: str = "he") -> TileRenderer:
    """A :data:`TileRenderer` of a large H&E-like (or Ki-67-like) slide from small pieces.

    Tissue occupies the cells (``cell`` level-0 pixels a side) where a smooth
    random field exceeds its ``1 - tissue_fraction`` quantile; tissue pixels repeat
    one procedural texture tile, stained as ``stain`` (``"he"`` or ``"ki67"``);
    background is glass. Memory: the field (one value per cell) and the texture tile.
    """
    if stain not in ("he", "ki67"):
        raise ValueError(f"stain must be 'he' or 'ki67', got {stain!r}")
    rng = np.random.default_rng(seed)
    field = cv2.GaussianBlur(rng.standard_normal((math.ceil(height / cell), math.ceil(width / cell)))
                             .astype(np.float32), (0, 0), 2.0)
    field = (field > np.quantile(field, 1 - tissue_fraction)).astype(np.float32)
    render = render_he if stain == "he" else render_ki67
    texture = render(make_layout(rng, texture_size, nucleus_radius=4.0), rng)

    def render_tile(downsample: int, y: int, x: int, tile_height: int, tile_width: int) -> np.ndarray:
        rows = ((y + np.arange(tile_height)) * downsample) // cell
        cols = ((x + np.arange(tile_width)) * downsample) // cell
        tissue = field[rows[:, None], cols[None, :]] > 0.5
        pattern = texture[(y + np.arange(tile_height))[:, None] % texture_size,
                          (x + np.arange(tile_width))[None, :] % texture_size]
        return np.where(tissue[..., None], pattern, np.uint8(242))

    return render_tile


@dataclasses.dataclass
class ConsecutiveSections:
    """One piece of tissue stained as H&E and, on the next section, as Ki-67 IHC.

    Attributes:
        he: ``uint8 (S, S, 3)`` H&E section.
        ki67: ``uint8 (S, S, 3)`` Ki-67 section, moved: ``ki67[q] = ki67_aligned[ki67_to_he(q)]``.
        ki67_aligned: ``uint8 (S, S, 3)`` the Ki-67 section as it would lie on the H&E (registration's target).
        section: bool ``(S, S)`` where the section has tissue (on the H&E).
        affine: float64 ``(2, 3)``, the rigid part of ``ki67_to_he`` on ``(x, y)`` points.
        elastic: float32 ``(S, S, 2)`` ``(dx, dy)`` added after the affine, in pixels.
    """

    he: np.ndarray
    ki67: np.ndarray
    ki67_aligned: np.ndarray
    section: np.ndarray
    affine: np.ndarray
    elastic: np.ndarray

    def ki67_to_he(self, points: np.ndarray) -> np.ndarray:
        """H&E positions ``(N, 2)`` as ``(x, y)`` of Ki-67 positions ``(N, 2)`` as ``(x, y)``."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        grid = points.astype(np.float32).reshape(-1, 1, 2)
        elastic = cv2.remap(self.elastic, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)
        return points @ self.affine[:, :2].T + self.affine[:, 2] + elastic


def section_mask(rng: np.random.Generator, size: int, tissue_fraction: float = 0.5) -> np.ndarray:
    """A tissue section on glass: one irregular blob in the middle covering about ``tissue_fraction``.

    Bool ``(size, size)``: a radial falloff plus smooth noise (frayed, lobed edges), thresholded
    at its ``1 - tissue_fraction`` quantile, the largest connected piece kept; glass all around it
    (nothing within 6 % of the image side from the edges).
    """
    if not 0.0 < tissue_fraction < 1.0:
        raise ValueError(f"tissue_fraction must be in (0, 1), got {tissue_fraction}")
    rows, cols = (np.indices((size, size), dtype=np.float32) - (size - 1) / 2) / (size / 2)
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), size / 12)
    noise /= noise.std() + 1e-6
    radius = np.hypot(rows, cols)
    field = np.where(np.maximum(np.abs(rows), np.abs(cols)) < 0.88, -radius + 0.15 * noise, -np.inf)
    mask = (field > np.quantile(field, 1.0 - tissue_fraction)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def elastic_field(rng: np.random.Generator, size: int, max_shift: float, cells: int = 6) -> np.ndarray:
    """A smooth displacement field ``float32 (size, size, 2)`` as ``(dx, dy)``, largest length ``max_shift``.

    Random vectors on a ``cells x cells`` grid, interpolated (bicubic): about ``cells / 2`` bends per side.
    """
    coarse = rng.standard_normal((cells, cells, 2)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    peak = float(np.linalg.norm(field, axis=-1).max()) + 1e-6
    return (field * (max_shift / peak)).astype(np.float32)


def consecutive_sections(size: int, seed: int = 0, rotation: float = 5.0, shift: tuple[float, float] = (24.0, -16.0),
                         elastic: float = 6.0, tissue_fraction: float = 0.5) -> ConsecutiveSections:
    """Draw a tissue section on glass and stain it as H&E and, moved, as Ki-67 (20x, about 0.5 um/px).

    Args:
        size: side of both images in pixels (nuclei keep their 20x size).
        seed: random seed of the tissue, its staining and the elastic deformation.
        rotation: degrees the Ki-67 section is turned by, about the image centre.
        shift: ``(dx, dy)`` pixels the Ki-67 section is moved by.
        elastic: largest elastic displacement, pixels (smooth, as a section stretches on the slide).
        tissue_fraction: share of the image the section covers.
    """
    rng = np.random.default_rng(seed)
    section = section_mask(rng, size, tissue_fraction)
    layout = make_layout(rng, size)
    inside = section.astype(np.float32)
    layout = dataclasses.replace(
        layout, stroma=layout.stroma * inside, nucleus_density=layout.nucleus_density * inside,
        positive_density=layout.positive_density * inside, nucleus_labels=layout.nucleus_labels * section,
        cytoplasm=layout.cytoplasm * inside, blood=layout.blood * inside, nucleoli=layout.nucleoli * inside)
    he, ki67_aligned = render_he(layout, rng), render_ki67(layout, rng)
    angle = np.deg2rad(rotation)
    rotation_matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.full(2, (size - 1) / 2)
    # the Ki-67 section is the H&E's turned by +rotation and shifted: its pixel q shows the H&E point
    # R^-1 (q - centre - shift) + centre
    inverse = rotation_matrix.T
    affine = np.hstack([inverse, (centre - inverse @ (centre + np.asarray(shift, np.float64)))[:, None]])
    displacement = elastic_field(rng, size, elastic)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    map_x = affine[0, 0] * grid_x + affine[0, 1] * grid_y + affine[0, 2] + displacement[..., 0]
    map_y = affine[1, 0] * grid_x + affine[1, 1] * grid_y + affine[1, 2] + displacement[..., 1]
    ki67 = cv2.remap(ki67_aligned, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)
    return ConsecutiveSections(he=he, ki67=ki67, ki67_aligned=ki67_aligned, section=section, affine=affine,
                               elastic=displacement)


def write_consecutive_section_slides(folder: str | os.PathLike, size: int, seed: int = 0, mpp: float = 0.5,
                                     name: str = "case01", **options) -> tuple[Path, Path]:
    """Write :func:`consecutive_sections` as two pyramidal TIFF slides ``<name>_he.tif``, ``<name>_ki67.tif``.

    ``options`` go to :func:`consecutive_sections`. Returns the H&E and the Ki-67 slide paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sections = consecutive_sections(size, seed, **options)
    return (write_image_as_slide(folder / f"{name}_he.tif", sections.he, mpp=mpp),
            write_image_as_slide(folder / f"{name}_ki67.tif", sections.ki67, mpp=mpp))
