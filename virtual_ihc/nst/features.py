"""VGG19 feature extraction for neural style transfer."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from virtual_ihc.weights import describe_weights

logger = logging.getLogger(__name__)

#: VGG19 pools five times; below 32 pixels the deepest blocks have no positions.
MIN_IMAGE_SIZE = 32


def build_vgg19(weights: str | None) -> keras.Model:
    """The frozen convolutional part of VGG19 for images of any size >= 32x32.

    Args:
        weights: resolved weights (:func:`virtual_ihc.weights.resolve_weights`):
            ``"imagenet"`` (downloaded once, cached in ``~/.keras/models``),
            ``None`` (random, only for tests and timing) or a ``.h5`` path.

    Returns:
        ``keras.applications.VGG19(include_top=False)`` with input ``(None, None, None, 3)``.
    """
    logger.info("building VGG19 with %s", describe_weights(weights))
    vgg = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    vgg.trainable = False
    return vgg


def build_feature_extractor(vgg: keras.Model, layer_names: tuple[str, ...]) -> keras.Model:
    """A model mapping preprocessed images to ``{layer name: activations}``.

    Only the layers up to the deepest requested one are evaluated; the layers
    (and weights) are shared with ``vgg``.
    """
    outputs = {name: vgg.get_layer(name).output for name in layer_names}
    return keras.Model(inputs=vgg.input, outputs=outputs, name="vgg19_features")


def vgg19_preprocess(rgb: tf.Tensor) -> tf.Tensor:
    """RGB in [0, 255] -> the VGG19 input convention (BGR, ImageNet mean subtracted).

    Args:
        rgb: float32 ``(B, H, W, 3)`` in [0, 255].

    Returns:
        float32 ``(B, H, W, 3)``, channels BGR, roughly in [-124, 152].
    """
    return keras.applications.vgg19.preprocess_input(rgb)
