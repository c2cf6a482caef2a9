"""H&E stain normalisation: Reinhard, Macenko and a simplified Vahadane.

All three map a *source* image's colours onto a *target* (reference) image's:

- ``reinhard`` (Reinhard et al. 2001): match the mean and standard deviation of
  each CIE-Lab channel over tissue pixels; glass is blended back unchanged.
- ``macenko`` (Macenko et al. 2009): stain vectors from the extreme angles of
  the optical densities projected on their plane of largest variance; each
  stain's concentrations are rescaled so their 99th percentiles match the
  target's, then re-rendered with the target's stain vectors (Beer-Lambert).
- ``vahadane`` (simplified from Vahadane et al. 2016): the stain vectors come
  from a sparse non-negative factorisation ``OD ≈ C @ M`` (L1 penalty on ``C``)
  solved with multiplicative updates on a subsample of tissue pixels, started
  from the standard H&E vectors, instead of the paper's SPAMS dictionary
  learning; concentrations are least squares clipped at zero (not a lasso).
  Rescaling and rendering are as in Macenko.

Statistics of a whole slide are estimated once (:func:`fit_stain_stats` on a low
resolution view) and passed to :meth:`StainNormalizer.transform` for every tile,
so all tiles of a slide get the same mapping; the target statistics are saved as
JSON (:meth:`StainNormalizer.save`) to apply the same normalisation at inference.
Optical density uses the natural logarithm with ``I0 = 255``, as
:mod:`virtual_ihc.histology.stains` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.histology.stains import EOSIN, HEMATOXYLIN

METHODS = ("macenko", "reinhard", "vahadane")
#: optical density below which a channel counts as glass (Macenko's beta)
BACKGROUND_OD = 0.15
#: percentile of the projected angles taken as the extreme stain directions (Macenko's alpha)
ANGLE_PERCENTILE = 1.0
#: percentile of each stain's concentration used as its "maximum"
MAX_CONCENTRATION_PERCENTILE = 99.0
#: pixels sampled for the factorisation and the statistics
SAMPLE_PIXELS = 20_000


@dataclasses.dataclass
class StainStats:
    """Colour statistics of one image (or slide) for one method.

    Attributes:
        method: one of :data:`METHODS`.
        stain_matrix: ``(2, 3)`` unit optical-density vectors, hematoxylin then eosin
            (macenko / vahadane; ``None`` for reinhard).
        max_concentrations: ``(2,)`` 99th-percentile stain amounts (macenko / vahadane).
        lab_mean: ``(3,)`` mean of L, a, b over tissue (reinhard).
        lab_std: ``(3,)`` standard deviation of L, a, b over tissue (reinhard).
    """

    method: str
    stain_matrix: np.ndarray | None = None
    max_concentrations: np.ndarray | None = None
    lab_mean: np.ndarray | None = None
    lab_std: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {field.name: (value.tolist() if isinstance(value, np.ndarray) else value)
                for field in dataclasses.fields(self)
                for value in [getattr(self, field.name)]}

    @classmethod
    def from_dict(cls, data: dict) -> "StainStats":
        return cls(method=data["method"], **{key: None if data.get(key) is None else np.asarray(data[key], np.float64)
                                             for key in ("stain_matrix", "max_concentrations", "lab_mean", "lab_std")})


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """``-ln(I / 255)`` of a ``uint8`` RGB image, float64 ``(..., 3)``, >= 0 (0 = glass)."""
    return -np.log(np.maximum(np.asarray(rgb, np.float64), 1.0) / 255.0)


def _tissue_od(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
    """Optical densities ``(N, 3)`` of tissue pixels (every channel above :data:`BACKGROUND_OD`), subsampled."""
    od = optical_density(rgb).reshape(-1, 3)
    od = od[(od > BACKGROUND_OD).all(axis=1)]
    if len(od) < 100:
        raise InputError(f"too little stained tissue to estimate stains ({len(od)} pixels)")
    if len(od) > SAMPLE_PIXELS:
        od = od[np.random.default_rng(seed).choice(len(od), SAMPLE_PIXELS, replace=False)]
    return od


def _order_hematoxylin_first(vectors: np.ndarray) -> np.ndarray:
    """Unit rows, the one with the larger red optical density first (hematoxylin absorbs red, eosin barely)."""
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors if vectors[0, 0] >= vectors[1, 0] else vectors[::-1].copy()


def macenko_stain_matrix(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin and eosin unit OD vectors ``(2, 3)`` of a ``uint8`` RGB H&E image (Macenko)."""
    od = _tissue_od(rgb)
    _, eigenvectors = np.linalg.eigh(np.cov(od.T))
    plane = eigenvectors[:, 1:3]  # the two directions of largest variance
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    vectors = np.stack([plane @ [np.cos(low), np.sin(low)], plane @ [np.cos(high), np.sin(high)]])
    return _order_hematoxylin_first(np.abs(vectors))


def vahadane_stain_matrix(rgb: np.ndarray, sparsity: float = 0.1, iterations: int = 300) -> np.ndarray:
    """Hematoxylin and eosin unit OD vectors ``(2, 3)`` by sparse NMF (simplified Vahadane).

    Solves ``min ||OD - C M||² + sparsity * |C|_1`` with ``C, M >= 0`` and unit rows
    of ``M`` by Lee-Seung multiplicative updates, starting from the standard H&E vectors.
    """
    od = _tissue_od(rgb)
    stains = np.stack([HEMATOXYLIN, EOSIN]).astype(np.float64)
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    amounts = np.maximum(od @ np.linalg.pinv(stains), 1e-3)
    eps = 1e-9
    for _ in range(iterations):
        amounts *= (od @ stains.T) / (amounts @ stains @ stains.T + sparsity * od.mean() + eps)
        stains *= (amounts.T @ od) / (amounts.T @ amounts @ stains + eps)
        norms = np.linalg.norm(stains, axis=1, keepdims=True) + eps
        stains /= norms
        amounts *= norms.T
    return _order_hematoxylin_first(stains)


def stain_amounts(rgb: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """Non-negative stain amounts ``(H, W, 2)`` of an RGB image for a ``(2, 3)`` stain matrix."""
    od = optical_density(rgb).reshape(-1, 3)
    amounts = np.linalg.lstsq(stain_matrix.T, od.T, rcond=None)[0].T
    return np.maximum(amounts, 0.0).reshape(*np.shape(rgb)[:2], 2)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIE-Lab float32 ``(..., 3)`` (L in [0, 100]) of a ``uint8`` RGB image."""
    return cv2.cvtColor(np.asarray(rgb, np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _tissue_weight(rgb: np.ndarray) -> np.ndarray:
    """``(H, W)`` in [0, 1]: 0 on glass, 1 on stained tissue, a ramp between."""
    total = optical_density(rgb).sum(axis=-1)
    return np.clip((total - BACKGROUND_OD) / (2 * BACKGROUND_OD), 0.0, 1.0)


def fit_stain_stats(method: str, rgb: np.ndarray) -> StainStats:
    """Statistics of a ``uint8`` RGB H&E image for ``method`` (a tile, or a slide's low-res view).

    Raises:
        ValueError: unknown method, or too little tissue in the image.
    """
    if method not in METHODS:
        raise InputError(f"stain normalisation method must be one of {METHODS}, got {method!r}")
    if method == "reinhard":
        tissue = _tissue_weight(rgb) > 0.5
        if tissue.sum() < 100:
            raise InputError(f"too little stained tissue to estimate colour statistics ({tissue.sum()} pixels)")
        lab = _lab(rgb)[tissue]
        return StainStats(method, lab_mean=lab.mean(axis=0).astype(np.float64),
                          lab_std=np.maximum(lab.std(axis=0), 1e-3).astype(np.float64))
    estimate = macenko_stain_matrix if method == "macenko" else vahadane_stain_matrix
    stain_matrix = estimate(rgb)
    tissue_amounts = stain_amounts(rgb, stain_matrix).reshape(-1, 2)[_tissue_weight(rgb).reshape(-1) > 0.5]
    maxima = np.percentile(tissue_amounts, MAX_CONCENTRATION_PERCENTILE, axis=0)
    return StainStats(method, stain_matrix=stain_matrix, max_concentrations=np.maximum(maxima, 1e-6))


@dataclasses.dataclass
class StainNormalizer:
    """Maps images onto the colours of a target; ``target`` comes from :func:`fit_stain_stats`."""

    target: StainStats

    @classmethod
    def fit(cls, method: str, target_rgb: np.ndarray) -> "StainNormalizer":
        return cls(fit_stain_stats(method, target_rgb))

    @property
    def method(self) -> str:
        return self.target.method

    def transform(self, rgb: np.ndarray, source: StainStats | None = None) -> np.ndarray:
        """Normalised ``uint8`` RGB, same shape as ``rgb``.

        Args:
            rgb: ``uint8 (H, W, 3)`` H&E image.
            source: statistics of the slide ``rgb`` comes from (same method);
                ``None`` estimates them from ``rgb`` itself.
        """
        source = source or fit_stain_stats(self.method, rgb)
        if source.method != self.method:
            raise InputError(f"source statistics are {source.method!r}, normaliser is {self.method!r}")
        if self.method == "reinhard":
            lab = (_lab(rgb) - source.lab_mean) / source.lab_std * self.target.lab_std + self.target.lab_mean
            lab[..., 0] = np.clip(lab[..., 0], 0, 100)
            mapped = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0
            weight = _tissue_weight(rgb)[..., None]
            out = weight * mapped + (1 - weight) * np.asarray(rgb, np.float32)
        else:
            amounts = stain_amounts(rgb, source.stain_matrix)
            amounts = amounts * (self.target.max_concentrations / source.max_concentrations)
            out = 255.0 * np.exp(-amounts @ self.target.stain_matrix)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the target statistics as JSON (reload with :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.target.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StainNormalizer":
        return cls(StainStats.from_dict(json.loads(Path(path).read_text())))
