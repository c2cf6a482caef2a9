"""Procedural H&E and Ki-67 IHC tiles: the built-in sample data.

A tile is a random tissue *layout* (stroma density, lumina, nuclei with shape,
chromatin texture and a Ki-67 status) rendered in one or both stains by
Beer-Lambert mixing of the standard hematoxylin, eosin and DAB vectors
(:mod:`virtual_ihc.histology.stains`):

- H&E: hematoxylin in every nucleus, eosin in stroma and cytoplasm;
- Ki-67 IHC: DAB (brown) in Ki-67-positive nuclei, a hematoxylin counterstain
  (blue) in negative nuclei and faintly in the stroma, no eosin.

The fraction of positive nuclei is known, so the labelling index of a rendered
Ki-67 tile is ground truth. Unpaired mode (training) renders the two stains from
independent layouts; paired mode renders one layout in both stains and warps the
Ki-67 side by a known smooth deformation, as consecutive sections differ.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.data.io import write_image_rgb
from virtual_ihc.histology.stains import STAIN_MATRIX_HED, render_beer_lambert

logger = logging.getLogger(__name__)

SAMPLE_DATA_VERSION = 1


@dataclasses.dataclass
class TissueLayout:
    """One tissue layout, before staining.

    Attributes:
        stroma: float32 ``(H, W)`` eosinophilic matrix density in [0, 1] (0 = lumen/glass).
        nucleus_density: float32 ``(H, W)`` hematoxylin-binding chromatin density.
        positive_density: float32 ``(H, W)`` chromatin density of Ki-67-positive nuclei only.
        nucleus_labels: int32 ``(H, W)``, 0 = no nucleus, ``i + 1`` = nucleus ``i``.
        centers: float32 ``(N, 2)`` nucleus centres as ``(y, x)``.
        radii: float32 ``(N,)`` nucleus semi-major axes in pixels.
        positive: bool ``(N,)`` Ki-67 status of each nucleus.
    """

    stroma: np.ndarray
    nucleus_density: np.ndarray
    positive_density: np.ndarray
    nucleus_labels: np.ndarray
    centers: np.ndarray
    radii: np.ndarray
    positive: np.ndarray

    @property
    def labelling_index(self) -> float:
        """Fraction of Ki-67-positive nuclei (0 when there are none)."""
        return float(self.positive.mean()) if len(self.positive) else 0.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth random field with unit standard deviation and features of ``scale`` pixels."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=scale, borderType=cv2.BORDER_REFLECT)
    return noise / (noise.std() + 1e-6)


def make_layout(rng: np.random.Generator, size: int | tuple[int, int],
                positive_fraction: float = 0.3, nucleus_radius: float = 6.0,
                nuclei_per_10k_px: float = 12.0) -> TissueLayout:
    """Draw a random tissue layout of ``size`` pixels.

    Args:
        rng: NumPy random generator (the only source of randomness).
        size: tile side, or ``(height, width)``.
        positive_fraction: probability that a nucleus is Ki-67 positive.
        nucleus_radius: mean nucleus semi-major axis in pixels (about 6 px at 20x).
        nuclei_per_10k_px: nucleus density on tissue.
    """
    height, width = (size, size) if isinstance(size, int) else size
    shape = (height, width)
    # stroma with lumina where a smooth field dips low
    field = _smooth_noise(rng, shape, scale=max(height, width) / 10)
    stroma = np.clip(0.55 + 0.25 * _smooth_noise(rng, shape, scale=3.0) * 0.3 + 0.15 * field, 0.15, 1.0)
    lumen = field < -1.1
    stroma[lumen] = 0.0
    stroma = cv2.GaussianBlur(stroma.astype(np.float32), (0, 0), 1.5)

    count = rng.poisson(nuclei_per_10k_px * height * width / 10_000)
    centers = np.stack([rng.uniform(0, height, count), rng.uniform(0, width, count)], axis=1)
    keep = ~lumen[centers[:, 0].astype(int).clip(0, height - 1), centers[:, 1].astype(int).clip(0, width - 1)]
    centers = centers[keep]
    count = len(centers)
    radii = (nucleus_radius * rng.uniform(0.7, 1.3, count)).astype(np.float32)
    positive = rng.random(count) < positive_fraction

    labels = np.zeros(shape, np.int32)
    chromatin = np.zeros(shape, np.float32)
    texture = 0.75 + 0.25 * np.clip(_smooth_noise(rng, shape, scale=1.0), -2, 2)
    for index, ((cy, cx), radius) in enumerate(zip(centers, radii)):
        axes = (max(1, int(round(radius))), max(1, int(round(radius * rng.uniform(0.55, 0.95)))))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(labels, (int(round(cx)), int(round(cy))), axes, angle, 0, 360, int(index + 1), -1)
        # later nuclei overlap earlier ones, like cells piled in a section
    amount = rng.uniform(0.8, 1.3, count + 1).astype(np.float32)
    amount[0] = 0.0
    chromatin = amount[labels] * texture
    chromatin = cv2.GaussianBlur(chromatin, (0, 0), 0.8)
    positive_mask = np.concatenate([[False], positive])[labels]
    positive_density = cv2.GaussianBlur(chromatin * positive_mask.astype(np.float32), (0, 0), 0.5)
    return TissueLayout(stroma=stroma.astype(np.float32), nucleus_density=chromatin.astype(np.float32),
                        positive_density=positive_density.astype(np.float32), nucleus_labels=labels,
                        centers=centers.astype(np.float32), radii=radii, positive=positive)


def _finish(rng: np.random.Generator, intensity: np.ndarray) -> np.ndarray:
    """Optical blur and sensor noise, then ``uint8``."""
    intensity = cv2.GaussianBlur(intensity, (0, 0), 0.6)
    intensity = intensity + rng.normal(0.0, 2.0, intensity.shape).astype(np.float32)
    return np.clip(np.rint(intensity), 0, 255).astype(np.uint8)


def render_he(layout: TissueLayout, rng: np.random.Generator) -> np.ndarray:
    """Render a layout as H&E: ``uint8 (H, W, 3)``."""
    hematoxylin = 1.1 * layout.nucleus_density + 0.05 * layout.stroma
    eosin = 0.55 * layout.stroma * (1.0 - 0.6 * np.clip(layout.nucleus_density, 0, 1))
    concentrations = np.stack([hematoxylin, eosin, np.zeros_like(eosin)], axis=-1)
    return _finish(rng, render_beer_lambert(concentrations, STAIN_MATRIX_HED))


def render_ki67(layout: TissueLayout, rng: np.random.Generator) -> np.ndarray:
    """Render a layout as Ki-67 IHC (DAB + hematoxylin counterstain): ``uint8 (H, W, 3)``."""
    negative_density = layout.nucleus_density - layout.positive_density
    hematoxylin = 0.6 * negative_density + 0.15 * layout.positive_density + 0.08 * layout.stroma
    dab = 2.5 * layout.positive_density + 0.02 * layout.stroma  # real positive nuclei: rgb2hed DAB 0.1-0.5
    concentrations = np.stack([hematoxylin, np.zeros_like(dab), dab], axis=-1)
    return _finish(rng, render_beer_lambert(concentrations, STAIN_MATRIX_HED))


def smooth_deformation(rng: np.random.Generator, shape: tuple[int, int], max_shift: float,
                       smoothness: float | None = None) -> np.ndarray:
    """A smooth random displacement field ``float32 (H, W, 2)`` as ``(dy, dx)``, |d| <= ``max_shift``."""
    height, width = shape
    smoothness = smoothness or max(height, width) / 4
    field = np.stack([_smooth_noise(rng, shape, smoothness) for _ in range(2)], axis=-1)
    peak = np.abs(field).max() + 1e-6
    return (field / peak * max_shift).astype(np.float32)


def warp_image(image: np.ndarray, displacement: np.ndarray, border_value: int = 255) -> np.ndarray:
    """Sample ``image`` at ``(y + dy, x + dx)``: output pixel p shows input pixel p + d(p)."""
    height, width = displacement.shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    return cv2.remap(image, grid_x + displacement[..., 1], grid_y + displacement[..., 0],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(border_value,) * 3)


@dataclasses.dataclass
class SyntheticPair:
    """One layout rendered in both stains.

    ``ki67`` shows the layout warped by ``displacement`` (``ki67[p] = ki67_aligned[p + d(p)]``);
    ``layout`` is the unwarped layout, aligned with ``he``.
    """

    he: np.ndarray
    ki67: np.ndarray
    layout: TissueLayout
    displacement: np.ndarray


def render_pair(rng: np.random.Generator, size: int, positive_fraction: float = 0.3,
                max_shift: float = 0.0, nucleus_radius: float = 6.0) -> SyntheticPair:
    """Render one layout as an H&E tile and a (deformed) Ki-67 tile of ``size`` pixels."""
    layout = make_layout(rng, size, positive_fraction, nucleus_radius)
    he = render_he(layout, rng)
    ki67 = render_ki67(layout, rng)
    displacement = (smooth_deformation(rng, (size, size), max_shift) if max_shift > 0
                    else np.zeros((size, size, 2), np.float32))
    if max_shift > 0:
        ki67 = warp_image(ki67, displacement)
    return SyntheticPair(he=he, ki67=ki67, layout=layout, displacement=displacement)


def sample_tiles(stain: str, count: int, size: int, seed: int, positive_fraction: float = 0.3,
                 nucleus_radius: float | None = None) -> np.ndarray:
    """``count`` tiles of one stain (``"he"`` or ``"ki67"``) from independent layouts, ``uint8 (N, S, S, 3)``."""
    renderers = {"he": render_he, "ki67": render_ki67}
    if stain not in renderers:
        raise ValueError(f"stain must be one of {sorted(renderers)}, got {stain!r}")
    # separate streams per stain: unpaired tiles never share a layout
    rng = np.random.default_rng([seed, 0 if stain == "he" else 1])
    radius = nucleus_radius if nucleus_radius is not None else max(3.0, size / 48)
    return np.stack([renderers[stain](make_layout(rng, size, positive_fraction, radius), rng)
                     for _ in range(count)])


def write_sample_dataset(root: str | Path, num_train: int, num_val: int, tile_size: int,
                         seed: int = 0, positive_fraction: float = 0.3, paired: bool = False,
                         max_shift: float = 2.0) -> Path:
    """Write the sample data set as PNG tiles under ``root``.

    Layout (what ``train.py --he-dir/--ki67-dir`` read)::

        root/he/train/*.png   root/ki67/train/*.png
        root/he/val/*.png     root/ki67/val/*.png
        root/sample_data.json (parameters; the folder is reused when they match)

    In paired mode tile ``i`` of both stains shows the same layout (the Ki-67 side
    deformed by up to ``max_shift`` pixels) and the nuclei are listed in
    ``root/<split>_nuclei.json``.
    """
    root = Path(root)
    params = dict(version=SAMPLE_DATA_VERSION, num_train=num_train, num_val=num_val, tile_size=tile_size,
                  seed=seed, positive_fraction=positive_fraction, paired=paired, max_shift=max_shift)
    marker = root / "sample_data.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        logger.info("reusing sample data in %s", root)
        return root
    radius = max(3.0, tile_size / 48)
    for split, count, split_seed in (("train", num_train, seed), ("val", num_val, seed + 10_007)):
        if paired:
            rng = np.random.default_rng([split_seed, 2])
            nuclei = []
            for index in range(count):
                pair = render_pair(rng, tile_size, positive_fraction, max_shift, radius)
                name = f"tile_{index:05d}.png"
                write_image_rgb(root / "he" / split / name, pair.he)
                write_image_rgb(root / "ki67" / split / name, pair.ki67)
                nuclei.append(dict(name=name, centers=pair.layout.centers.tolist(),
                                   positive=pair.layout.positive.tolist()))
            (root / f"{split}_nuclei.json").write_text(json.dumps(nuclei))
        else:
            for stain in ("he", "ki67"):
                tiles = sample_tiles(stain, count, tile_size, split_seed, positive_fraction, radius)
                for index, tile in enumerate(tiles):
                    write_image_rgb(root / stain / split / f"{stain}_{index:05d}.png", tile)
    marker.write_text(json.dumps(params, indent=2))
    logger.info("wrote sample data (%d train / %d val tiles per stain) to %s", num_train, num_val, root)
    return root
