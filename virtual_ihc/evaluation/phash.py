"""The paper's perceptual hash (P-hash) between a virtual and a reference Ki-67 image.

Definition (the authors' Table 1): pass both images through ResNet-18 and take
the spatial mean of every channel of the ``layer2`` output (128 numbers per
image). A hash bit is set for a channel when the absolute difference of the two
means exceeds a threshold (0.01 for ``layer2``); the score is the fraction of
channels whose difference stays at or under the threshold, so 1.0 means
identical features and 0.0 means every channel differs. Scores are reported as
mean +- standard deviation over tile pairs.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from virtual_ihc.evaluation.resnet18 import build_resnet18

PHASH_LAYER = "layer2"
PHASH_THRESHOLD = 0.01


def phash_bits(virtual_means: np.ndarray, reference_means: np.ndarray,
               threshold: float = PHASH_THRESHOLD) -> np.ndarray:
    """The hash: bool ``(N, C)``, True where ``|virtual - reference| > threshold``."""
    return np.abs(np.asarray(virtual_means) - np.asarray(reference_means)) > threshold


def phash_scores(virtual_means: np.ndarray, reference_means: np.ndarray,
                 threshold: float = PHASH_THRESHOLD) -> np.ndarray:
    """P-hash score per pair: fraction of channels under the threshold, float64 ``(N,)`` in [0, 1]."""
    return 1.0 - phash_bits(virtual_means, reference_means, threshold).mean(axis=-1)


class PerceptualHash:
    """P-hash of image pairs with a ResNet-18 truncated at ``layer``.

    Args:
        weights: resolved weights (:func:`virtual_ihc.weights.resolve_weights`).
        layer: ResNet-18 stage whose channel means are hashed (``"layer1"`` .. ``"layer4"``).
        threshold: absolute channel-mean difference above which a bit is set.
    """

    def __init__(self, weights: str | None, layer: str = PHASH_LAYER, threshold: float = PHASH_THRESHOLD):
        self.extractor = build_resnet18(layer, weights)
        self.layer, self.threshold = layer, threshold
        # traced once for every batch and tile size (eager calls are several times slower)
        self._means = tf.function(lambda images: tf.reduce_mean(self.extractor(images, training=False), axis=(1, 2)),
                                  input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

    def means(self, images: np.ndarray) -> np.ndarray:
        """Channel means of ``uint8 (N, H, W, 3)`` images, float64 ``(N, C)``."""
        return np.asarray(self._means(tf.constant(np.asarray(images, np.float32))), np.float64)

    def __call__(self, virtual: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Scores of ``virtual[i]`` against ``reference[i]``, float64 ``(N,)``."""
        return phash_scores(self.means(virtual), self.means(reference), self.threshold)
