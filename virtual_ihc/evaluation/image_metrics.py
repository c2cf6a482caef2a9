"""Full-reference image metrics: SSIM, MS-SSIM, PSNR and MAE per image.

Conventions (the same as the training losses in :mod:`virtual_ihc.losses`):

- inputs are ``uint8`` RGB batches ``(N, H, W, 3)``; they are compared in
  float [0, 1] (data range 1);
- **SSIM**: ``tf.image.ssim`` with an 11x11 Gaussian window (sigma 1.5),
  K1 = 0.01, K2 = 0.03, computed per colour channel over the *valid* window
  positions (no padding), then averaged over positions and channels. This is
  scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)``;
- **MS-SSIM**: ``tf.image.ssim_multiscale`` with the Wang et al. (2003) scale
  weights; tiles too small for five scales drop the coarsest ones and the
  remaining weights are renormalised (:func:`virtual_ihc.losses.ms_ssim_power_factors`);
- **PSNR**: ``10 log10(1 / MSE)`` dB with the MSE over all pixels and channels,
  capped at :data:`PSNR_CAP_DB` for identical images (so means stay finite);
- **MAE**: mean absolute difference over all pixels and channels, in [0, 1]
  (multiply by 255 for grey levels).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from virtual_ihc.losses import psnr, structural_similarity
from virtual_ihc.pixels import uint8_to_unit

#: PSNR reported for identical images (MSE = 0), instead of infinity
PSNR_CAP_DB = 100.0
#: the metrics :func:`image_metrics` returns, in report order
METRIC_NAMES = ("ssim", "ms_ssim", "psnr", "mae")


def _unit(images: np.ndarray) -> tf.Tensor:
    """``uint8 (N, H, W, 3)`` -> float32 in [-1, 1] (the convention of the loss helpers)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    return uint8_to_unit(tf.constant(images))


def image_metrics(reference: np.ndarray, candidate: np.ndarray) -> dict[str, np.ndarray]:
    """SSIM, MS-SSIM, PSNR (dB) and MAE of ``candidate`` against ``reference``, per image.

    Args:
        reference: ``uint8 (N, H, W, 3)`` RGB, e.g. the source H&E tiles.
        candidate: ``uint8 (N, H, W, 3)`` RGB of the same shape, e.g. their reconstructions.

    Returns:
        ``{name: float64 (N,)}`` for the names in :data:`METRIC_NAMES`.
    """
    if np.shape(reference) != np.shape(candidate):
        raise ValueError(f"shapes differ: {np.shape(reference)} vs {np.shape(candidate)}")
    a, b = _unit(reference), _unit(candidate)
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64)) / 255.0
    return {
        "ssim": structural_similarity(a, b, "ssim").numpy().astype(np.float64),
        "ms_ssim": structural_similarity(a, b, "ms_ssim").numpy().astype(np.float64),
        "psnr": np.minimum(psnr(a, b).numpy().astype(np.float64), PSNR_CAP_DB),
        "mae": diff.reshape(len(diff), -1).mean(axis=1),
    }
