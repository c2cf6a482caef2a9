"""Loss terms of Gatys-style neural style transfer, as small TensorFlow functions.

Feature maps are float32 ``(B, H, W, N)`` activations of one VGG19 layer
(``N`` channels, ``M = H * W`` positions); images are float32 RGB
``(B, H, W, 3)`` in [0, 255].
"""

from __future__ import annotations

import tensorflow as tf


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Gram matrix ``G = F^T F`` summed over positions (Gatys et al., eq. 3).

    Args:
        features: float32 ``(B, H, W, N)``.

    Returns:
        float32 ``(B, N, N)``, unnormalised.
    """
    return tf.einsum("bhwi,bhwj->bij", features, features)


def mean_gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Gram matrix divided by the number of positions ``M``: ``(B, N, N)``.

    This is the size-independent form kept as a style target, so a style image
    need not have the content image's size (and keeps its magnification).
    """
    positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], features.dtype)
    return gram_matrix(features) / positions


def style_layer_loss(features: tf.Tensor, target_mean_gram: tf.Tensor) -> tf.Tensor:
    """Gatys' per-layer style loss ``E = sum((G - A)^2) / (4 N^2 M^2)``.

    ``A`` is the style target at the generated image's size,
    ``target_mean_gram * M``; for a style image of the same size this is exactly
    the Gram matrix of the style image.

    Args:
        features: float32 ``(B, H, W, N)`` activations of the generated image.
        target_mean_gram: float32 ``(1, N, N)`` or ``(B, N, N)`` from
            :func:`mean_gram_matrix` of the style image(s).

    Returns:
        float32 scalar >= 0, averaged over the batch.
    """
    channels = tf.cast(tf.shape(features)[3], features.dtype)
    positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], features.dtype)
    difference = gram_matrix(features) - target_mean_gram * positions
    per_image = tf.reduce_sum(tf.square(difference), axis=[1, 2]) / (4.0 * channels**2 * positions**2)
    return tf.reduce_mean(per_image)


def content_loss(features: tf.Tensor, target: tf.Tensor, kind: str = "mse") -> tf.Tensor:
    """Distance between activations of the generated and the content image.

    Args:
        features, target: float32 ``(B, H, W, N)`` of the same shape.
        kind: ``"mse"`` (mean squared error) or ``"mae"`` (mean absolute error).

    Returns:
        float32 scalar >= 0.
    """
    if kind == "mse":
        return tf.reduce_mean(tf.square(features - target))
    if kind == "mae":
        return tf.reduce_mean(tf.abs(features - target))
    raise ValueError(f"content loss must be 'mse' or 'mae', got {kind!r}")


def total_variation_loss(image: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference between vertical plus horizontal neighbours.

    Args:
        image: float32 ``(B, H, W, C)``, H and W >= 2.

    Returns:
        float32 scalar >= 0 in the image's units (pixel levels).
    """
    vertical = tf.reduce_mean(tf.abs(image[:, 1:, :, :] - image[:, :-1, :, :]))
    horizontal = tf.reduce_mean(tf.abs(image[:, :, 1:, :] - image[:, :, :-1, :]))
    return vertical + horizontal
