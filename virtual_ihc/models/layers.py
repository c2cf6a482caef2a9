"""Building blocks shared by the generator and the discriminator.

Instance normalisation is ``keras.layers.GroupNormalization(groups=-1)``: one
group per channel, so mean and variance are taken over H and W of each sample
and channel, which is instance norm (Ulyanov et al. 2016). Choices:

- ``epsilon=1e-5``, PyTorch ``InstanceNorm2d``'s value used by the CycleGAN
  reference code (Keras' 1e-3 default over-smooths nearly flat background tiles);
- ``center=True, scale=True`` (affine): a learned per-channel gain and bias. The
  PyTorch CycleGAN default is non-affine, but the following conv already has a
  free bias and the gain costs two vectors per layer; the affine form lets the
  decoder re-scale features after the skip concatenation.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="virtual_ihc")
class ReflectionPadding2D(layers.Layer):
    """Pad H and W by mirroring the border (no edge artefacts from zero padding).

    Input and output: ``(batch, H, W, C)`` -> ``(batch, H + 2p, W + 2p, C)``.
    """

    def __init__(self, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        return keras.ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = lambda size: None if size is None else size + 2 * self.padding  # noqa: E731
        return (batch, grow(height), grow(width), channels)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def kernel_initializer(name: str, seed: int | None = None) -> keras.initializers.Initializer:
    """``"glorot"`` (Xavier uniform, the paper) or ``"normal"`` (N(0, 0.02), pix2pix/CycleGAN)."""
    if name == "glorot":
        return keras.initializers.GlorotUniform(seed=seed)
    if name == "normal":
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.02, seed=seed)
    raise ValueError(f"kernel_init must be 'glorot' or 'normal', got {name!r}")


def apply_instance_norm(x, epsilon: float, name: str):
    """Instance normalisation of ``x`` (see module docstring for the choices)."""
    return layers.GroupNormalization(groups=-1, epsilon=epsilon, center=True, scale=True, name=name)(x)


def apply_padding(x, size: int, mode: str, name: str):
    """Pad H and W by ``size`` pixels, mirroring (``"reflect"``) or with zeros (``"zero"``)."""
    if size == 0:
        return x
    if mode == "reflect":
        return ReflectionPadding2D(size, name=name)(x)
    if mode == "zero":
        return layers.ZeroPadding2D(size, name=name)(x)
    raise ValueError(f"padding must be 'reflect' or 'zero', got {mode!r}")
