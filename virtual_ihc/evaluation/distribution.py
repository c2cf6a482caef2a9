"""Distribution metrics between virtual and real Ki-67 tiles: FID and KID on InceptionV3 pool features.

- **FID** (Heusel et al., 2017): Fréchet distance between Gaussians fitted to
  the two feature sets, ``|mu_r - mu_v|^2 + Tr(S_r + S_v - 2 (S_r S_v)^(1/2))``.
  With fewer samples than feature dimensions (2048) the covariances are
  rank-deficient and FID is strongly biased upwards: compare values only at
  equal sample counts, and prefer KID for small sets.
- **KID** (Bińkowski et al., 2018): unbiased squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets
  (mean +- std reported); unbiased, so it can be slightly negative and is
  usable with tens of samples.

Features: ``keras.applications.InceptionV3(include_top=False, pooling="avg")``
on tiles resized (bilinear) to ``image_size`` (299 as published; at least 75).
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from virtual_ihc.errors import InputError
from virtual_ihc.weights import WeightsError, describe_weights

logger = logging.getLogger(__name__)

INCEPTION_SIZE = 299
INCEPTION_MIN_SIZE = 75
#: below this many samples per set FID is reported with a warning
FID_MIN_SAMPLES = 2048
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100


class InceptionFeatures:
    """InceptionV3 global-average-pool features (2048-d) of ``uint8`` RGB tiles.

    Args:
        weights: resolved weights (:func:`virtual_ihc.weights.resolve_weights`):
            ``"imagenet"`` (Keras downloads and caches them), ``None`` (random,
            for offline smoke runs) or a local ``.h5`` of the no-top network.
        image_size: side the tiles are resized to before the network.
    """

    def __init__(self, weights: str | None, image_size: int = INCEPTION_SIZE):
        if image_size < INCEPTION_MIN_SIZE:
            raise InputError(f"InceptionV3 needs images of at least {INCEPTION_MIN_SIZE} pixels, got {image_size}")
        self.image_size = image_size
        try:
            self.model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights,
                                                        input_shape=(image_size, image_size, 3))
        except Exception as error:  # Keras raises a bare Exception when the download fails, OSError for files
            raise WeightsError(f"InceptionV3 weights ({describe_weights(weights)}) could not be loaded: {error}; "
                               "pass --fid-weights PATH (a local no-top .h5) or --weights none") from error
        self.model.trainable = False
        logger.info("InceptionV3 features at %dx%d with %s", image_size, image_size, describe_weights(weights))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def _features(self, images: tf.Tensor) -> tf.Tensor:
        # one trace for every batch and tile size: eager InceptionV3 is ~20x slower per batch
        resized = tf.image.resize(tf.cast(images, tf.float32), (self.image_size, self.image_size))
        return self.model(keras.applications.inception_v3.preprocess_input(resized), training=False)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``uint8 (N, H, W, 3)`` -> float64 ``(N, 2048)``."""
        return np.asarray(self._features(tf.constant(images)), np.float64)


def _trace_sqrt_product(real: np.ndarray, virtual: np.ndarray) -> float:
    """``Tr((S_r S_v)^(1/2))`` of the two sample covariances, without a matrix square root.

    With centred data ``A (N, D)``, ``B (M, D)``: ``S_r S_v`` has the non-zero eigenvalues
    of ``(A B^T)(A B^T)^T / ((N-1)(M-1))``, so the trace is the sum of the singular
    values of ``A B^T`` over ``sqrt((N-1)(M-1))`` -- exact, and cheap while N, M <= D.
    With more samples it is ``sum sqrt(eig(S_r^(1/2) S_v S_r^(1/2)))`` on ``D x D`` matrices.
    """
    a = real - real.mean(axis=0)
    b = virtual - virtual.mean(axis=0)
    scale = (len(a) - 1) * (len(b) - 1)
    if min(len(a), len(b)) <= a.shape[1]:
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(scale))
    values, vectors = np.linalg.eigh(a.T @ a / (len(a) - 1))
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = np.linalg.eigvalsh(root @ (b.T @ b / (len(b) - 1)) @ root)
    return float(np.sqrt(np.clip(product, 0.0, None)).sum())


def frechet_distance(real: np.ndarray, virtual: np.ndarray) -> float:
    """FID between two feature sets ``(N, D)`` and ``(M, D)`` (N, M >= 2)."""
    real, virtual = np.asarray(real, np.float64), np.asarray(virtual, np.float64)
    if len(real) < 2 or len(virtual) < 2:
        raise InputError("FID needs at least 2 samples per set")
    mean_term = np.sum((real.mean(axis=0) - virtual.mean(axis=0)) ** 2)
    trace_real = np.sum(real.var(axis=0, ddof=1))
    trace_virtual = np.sum(virtual.var(axis=0, ddof=1))
    distance = mean_term + trace_real + trace_virtual - 2.0 * _trace_sqrt_product(real, virtual)
    return float(max(distance, 0.0))


def polynomial_mmd2(real: np.ndarray, virtual: np.ndarray) -> float:
    """Unbiased squared MMD with ``k(x, y) = (x.y / d + 1)^3`` (both sets need >= 2 samples)."""
    dims = real.shape[1]
    k_rr = (real @ real.T / dims + 1.0) ** 3
    k_vv = (virtual @ virtual.T / dims + 1.0) ** 3
    k_rv = (real @ virtual.T / dims + 1.0) ** 3
    n, m = len(real), len(virtual)
    return float((k_rr.sum() - np.trace(k_rr)) / (n * (n - 1))
                 + (k_vv.sum() - np.trace(k_vv)) / (m * (m - 1))
                 - 2.0 * k_rv.mean())


def kernel_inception_distance(real: np.ndarray, virtual: np.ndarray, subset_size: int = KID_SUBSET_SIZE,
                              subsets: int = KID_SUBSETS, seed: int = 0) -> tuple[float, float]:
    """KID as ``(mean, std)`` of :func:`polynomial_mmd2` over random subsets of both sets.

    ``subset_size`` is capped at the smaller set; with the whole of both sets in
    one subset the result is exact and the std is 0.
    """
    real, virtual = np.asarray(real, np.float64), np.asarray(virtual, np.float64)
    size = min(subset_size, len(real), len(virtual))
    if size < 2:
        raise InputError("KID needs at least 2 samples per set")
    if size == len(real) == len(virtual):
        return polynomial_mmd2(real, virtual), 0.0
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(real[rng.choice(len(real), size, replace=False)],
                              virtual[rng.choice(len(virtual), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def fid_warning(num_real: int, num_virtual: int) -> str | None:
    """A warning when the sample counts are too small for FID to mean much, else ``None``."""
    smallest = min(num_real, num_virtual)
    if smallest >= FID_MIN_SAMPLES:
        return None
    return (f"FID from {smallest} samples (< {FID_MIN_SAMPLES} feature dimensions) is biased upwards and "
            "only comparable between models at the same sample count; prefer KID")
