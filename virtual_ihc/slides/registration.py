"""Registration of consecutive sections: the Ki-67 slide warped onto the H&E slide's grid.

Both stains are reduced to one stain-invariant channel, the *nuclear density*
(hematoxylin + DAB amounts from colour deconvolution): every nucleus holds
hematoxylin in H&E, and hematoxylin (negative) or DAB (positive) in Ki-67 IHC.

1. **Coarse affine** on a low-resolution view (long side ``coarse_size``):
   translation from the density centroids, rotation searched every
   ``rotation_step`` degrees, each candidate refined by OpenCV's ECC
   (``MOTION_AFFINE``) on a blurred density, coarse to fine; the best
   correlation wins. Mirrored sections are not handled.
2. **Dense refinement** on a view with long side ``flow_size``: DIS optical
   flow between the H&E density and the affinely aligned Ki-67 density,
   smoothed by tissue-weighted Gaussian averaging (normalised convolution).
3. **Warp**: for an H&E pixel ``p`` (working resolution) the Ki-67 pixel is
   ``A @ (p + s * f(p / s))`` (:meth:`Registration.map_points`), where ``A`` is
   the affine, ``f`` the flow and ``s`` the working pixels per flow pixel;
   registered tiles are cut from the H&E grid and the Ki-67 slide is resampled
   region by region.

Quality is the normalised cross-correlation and mutual information of the
densities on the H&E tissue, before (identity), after the affine and after the
dense step.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import cv2
import numpy as np

from virtual_ihc.histology.stains import stain_concentrations
from virtual_ihc.histology.tissue import tissue_mask

logger = logging.getLogger(__name__)

#: points per row when a list of points is resampled with cv2.remap
REMAP_ROW = 4096


@dataclasses.dataclass(frozen=True)
class RegistrationOptions:
    """Parameters of :func:`register_images`.

    Attributes:
        coarse_size: long side (px) of the view used for the affine.
        flow_size: long side (px) of the view used for the dense flow.
        rotation_step: degrees between the initial rotations tried (360 = none).
        blur: Gaussian sigma (coarse px) applied to the density before ECC.
        flow_smoothing: Gaussian sigma (flow px) of the flow smoothing.
    """

    coarse_size: int = 512
    flow_size: int = 2048
    rotation_step: float = 30.0
    blur: float = 2.0
    flow_smoothing: float = 6.0


@dataclasses.dataclass
class Registration:
    """A map from H&E working pixels to Ki-67 working pixels.

    Attributes:
        affine: float64 ``(2, 3)``; Ki-67 ``(x, y) = affine @ (x, y, 1)`` of an H&E point.
        flow: float32 ``(h, w, 2)`` displacement ``(dx, dy)`` in flow pixels, on the
            H&E grid reduced by ``flow_scale``, applied before the affine.
        flow_scale: working pixels per flow pixel.
    """

    affine: np.ndarray
    flow: np.ndarray
    flow_scale: float

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Ki-67 positions ``(N, 2)`` as ``(x, y)`` of H&E positions ``(N, 2)`` as ``(x, y)``."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        count = len(points)
        # cv2.remap wants maps under 32767 a side: lay the points out in rows of REMAP_ROW
        padded = np.zeros((-(-count // REMAP_ROW) * REMAP_ROW, 2), np.float32)
        padded[:count] = points / self.flow_scale
        grid = padded.reshape(-1, REMAP_ROW, 2)
        displacement = cv2.remap(self.flow, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)[:count]
        moved = points + displacement * self.flow_scale
        return moved @ self.affine[:, :2].T + self.affine[:, 2]

    def map_grid(self, x: float, y: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Ki-67 coordinates ``(map_x, map_y)``, float32 ``(height, width)`` each, of an H&E pixel block.

        The same map as :meth:`map_points`, computed on the block as images (sides < 32767).
        """
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
        grid_x += np.float32(x)
        grid_y += np.float32(y)
        scale = np.float32(self.flow_scale)
        displacement = cv2.remap(self.flow, grid_x / scale, grid_y / scale, cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        moved_x = grid_x + displacement[..., 0] * scale
        moved_y = grid_y + displacement[..., 1] * scale
        (a, b, tx), (c, d, ty) = self.affine.astype(np.float32)
        return a * moved_x + b * moved_y + tx, c * moved_x + d * moved_y + ty

    def scaled(self, factor: float) -> "Registration":
        """The same registration for images ``factor`` times larger (same physical map)."""
        affine = self.affine.copy()
        affine[:, 2] *= factor
        return Registration(affine, self.flow, self.flow_scale * factor)


def nuclear_density(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin + DAB amounts, float32 ``(H, W)`` >= 0, of a ``uint8`` RGB H&E or Ki-67 image."""
    amounts = stain_concentrations(rgb)
    return (np.maximum(amounts[..., 0], 0) + np.maximum(amounts[..., 2], 0)).astype(np.float32)


def _to_uint8(channel: np.ndarray) -> np.ndarray:
    """Scale a non-negative channel to ``uint8`` by its 99.5th percentile."""
    top = float(np.percentile(channel, 99.5)) or 1.0
    return np.clip(channel / top * 255.0, 0, 255).astype(np.uint8)


def _normalized(channel: np.ndarray) -> np.ndarray:
    return (channel / (float(np.percentile(channel, 99.5)) or 1.0)).astype(np.float32)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _centroid(weights: np.ndarray) -> np.ndarray:
    moments = cv2.moments(weights.astype(np.float32))
    if moments["m00"] <= 0:
        return np.array([weights.shape[1] / 2, weights.shape[0] / 2])
    return np.array([moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]])


def _rotation_about(center_he: np.ndarray, center_ki67: np.ndarray, degrees: float) -> np.ndarray:
    """Affine ``(2, 3)`` rotating about the H&E centroid and moving it onto the Ki-67 centroid."""
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([rotation, (center_ki67 - rotation @ center_he)[:, None]])


def _ecc(template: np.ndarray, moving: np.ndarray, warp: np.ndarray, iterations: int) -> tuple[float, np.ndarray]:
    """ECC affine refinement; returns (correlation, warp). A failed run keeps the input warp, correlation -1."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-5)
    try:
        correlation, refined = cv2.findTransformECC(template, moving, warp.astype(np.float32).copy(),
                                                    cv2.MOTION_AFFINE, criteria, None, 5)
    except cv2.error:
        return -1.0, warp
    return float(correlation), refined.astype(np.float64)


def coarse_affine(he_density: np.ndarray, ki67_density: np.ndarray, options: RegistrationOptions) -> np.ndarray:
    """Affine ``(2, 3)`` mapping H&E pixels to Ki-67 pixels of two coarse density images."""
    he = cv2.GaussianBlur(_normalized(he_density), (0, 0), options.blur)
    ki67 = cv2.GaussianBlur(_normalized(ki67_density), (0, 0), options.blur)
    center_he, center_ki67 = _centroid(he), _centroid(ki67)
    half = 0.5  # rotation search at half the coarse size, then refined at full size
    he_small, ki67_small = _resize(he, half), _resize(ki67, half)
    to_small = np.diag([half, half, 1.0])
    best = (-2.0, None)
    for degrees in np.arange(0.0, 360.0, options.rotation_step):
        warp = _rotation_about(center_he, center_ki67, degrees)
        small = (to_small[:2] @ np.vstack([warp, [0, 0, 1]]) @ np.linalg.inv(to_small))
        correlation, refined = _ecc(he_small, ki67_small, small, iterations=100)
        if correlation > best[0]:
            best = (correlation, refined)
    warp = np.linalg.inv(to_small)[:2] @ np.vstack([best[1], [0, 0, 1]]) @ to_small
    correlation, warp = _ecc(he, ki67, warp, iterations=200)
    logger.info("coarse affine: correlation %.3f", correlation)
    return warp


def _tissue_weight(density: np.ndarray, sigma: float) -> np.ndarray:
    blurred = cv2.GaussianBlur(density, (0, 0), sigma)
    return (blurred / (float(blurred.max()) or 1.0) + 1e-3).astype(np.float32)


def dense_flow(he_density: np.ndarray, ki67_aligned: np.ndarray, smoothing: float) -> np.ndarray:
    """Smoothed DIS flow ``(H, W, 2)`` with ``he(p) ≈ ki67_aligned(p + flow(p))``."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(_to_uint8(he_density), _to_uint8(ki67_aligned), None)
    weight = _tissue_weight(he_density, smoothing)
    smoothed = cv2.GaussianBlur(flow * weight[..., None], (0, 0), smoothing)
    return (smoothed / cv2.GaussianBlur(weight, (0, 0), smoothing)[..., None]).astype(np.float32)


def warp_to_he(ki67: np.ndarray, registration: Registration, he_shape: tuple[int, int],
               border_value: float = 0) -> np.ndarray:
    """A Ki-67 image (working resolution) resampled on the H&E grid of ``he_shape``."""
    map_x, map_y = registration.map_grid(0, 0, he_shape[1], he_shape[0])
    return cv2.remap(ki67, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=border_value if ki67.ndim == 2 else (border_value,) * 3)


def normalized_cross_correlation(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two images over ``mask`` (all pixels when ``None``), in [-1, 1]."""
    first, second = first.astype(np.float64), second.astype(np.float64)
    if mask is not None:
        first, second = first[mask], second[mask]
    first, second = first - first.mean(), second - second.mean()
    denominator = math.sqrt(float((first ** 2).sum() * (second ** 2).sum()))
    return float((first * second).sum() / denominator) if denominator > 0 else 0.0


def mutual_information(first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None, bins: int = 32) -> float:
    """Mutual information (nats) of two images' joint histogram over ``mask``."""
    if mask is not None:
        first, second = first[mask], second[mask]
    joint, _, _ = np.histogram2d(first.ravel(), second.ravel(), bins=bins)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) @ joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())


@dataclasses.dataclass
class RegistrationResult:
    """A registration and its quality (densities of the flow-resolution views)."""

    registration: Registration
    quality: dict[str, float]
    he_view: np.ndarray
    ki67_view: np.ndarray


def register_images(he: np.ndarray, ki67: np.ndarray, options: RegistrationOptions = RegistrationOptions(),
                    scale: float = 1.0) -> RegistrationResult:
    """Register two ``uint8`` RGB views of consecutive sections.

    Args:
        he, ki67: views reduced ``scale`` times from the working resolution (their
            long side ideally near ``options.flow_size``).
        scale: working pixels per view pixel; the returned registration maps
            working-resolution pixels.

    Returns:
        The registration (working pixels) and NCC / mutual information of the
        densities on H&E tissue before, after the affine and after the flow.
    """
    he_density, ki67_density = nuclear_density(he), nuclear_density(ki67)
    coarse = options.coarse_size / max(*he.shape[:2], *ki67.shape[:2])
    coarse = min(coarse, 1.0)
    affine = coarse_affine(_resize(he_density, coarse), _resize(ki67_density, coarse), options)
    affine[:, 2] /= coarse  # coarse pixels -> view pixels
    identity = Registration(np.hstack([np.eye(2), np.zeros((2, 1))]), np.zeros((1, 1, 2), np.float32), 1.0)
    affine_only = Registration(affine, np.zeros((1, 1, 2), np.float32), 1.0)
    aligned = warp_to_he(ki67_density, affine_only, he_density.shape)
    flow = dense_flow(he_density, aligned, options.flow_smoothing)
    registration = Registration(affine, flow, 1.0)
    mask = tissue_mask(he)
    quality = {}
    for stage, candidate in (("before", identity), ("affine", affine_only), ("after", registration)):
        warped = warp_to_he(ki67_density, candidate, he_density.shape)
        quality[f"ncc_{stage}"] = normalized_cross_correlation(he_density, warped, mask)
        quality[f"mi_{stage}"] = mutual_information(he_density, warped, mask)
    magnitude = np.linalg.norm(flow, axis=-1)[mask] if mask.any() else np.zeros(1)
    quality["flow_mean_px"] = float(magnitude.mean() * scale)
    quality["flow_max_px"] = float(magnitude.max() * scale)
    logger.info("registration NCC %.3f -> %.3f (affine) -> %.3f (dense)",
                quality["ncc_before"], quality["ncc_affine"], quality["ncc_after"])
    return RegistrationResult(registration.scaled(scale), quality, he, ki67)


def checkerboard(first: np.ndarray, second: np.ndarray, squares: int = 8) -> np.ndarray:
    """Alternating squares of two same-shape images (``squares`` along the long side)."""
    height, width = first.shape[:2]
    side = max(1, max(height, width) // squares)
    rows, cols = np.mgrid[0:height, 0:width]
    pick = ((rows // side + cols // side) % 2 == 0)
    return np.where(pick[..., None] if first.ndim == 3 else pick, first, second)


def density_overlay(he_density: np.ndarray, ki67_density: np.ndarray) -> np.ndarray:
    """``uint8`` RGB: H&E density in magenta, Ki-67 density in green (aligned nuclei look grey/white)."""
    he_channel, ki67_channel = _to_uint8(he_density), _to_uint8(ki67_density)
    return np.stack([he_channel, ki67_channel, he_channel], axis=-1)
