"""PatchGAN discriminator (Isola et al. 2017): a real/fake logit per overlapping patch.

Default layout (70x70 receptive field), shapes for a 288x288 input::

    4x4 conv /2, LeakyReLU                 (B, 144, 144, 64)
    4x4 conv /2, IN, LeakyReLU             (B,  72,  72, 128)
    4x4 conv /2, IN, LeakyReLU             (B,  36,  36, 256)
    4x4 conv /1, IN, LeakyReLU             (B,  35,  35, 512)
    4x4 conv /1 -> logits                  (B,  34,  34, 1)    float32
"""

from __future__ import annotations

import keras
from keras import layers

from virtual_ihc.config import DiscriminatorConfig
from virtual_ihc.models.layers import apply_instance_norm, kernel_initializer


def apply_patch_conv(x, filters: int, strides: int, config: DiscriminatorConfig, name: str,
                     normalize: bool = True):
    """Zero-pad 1, 4x4 conv, optional instance norm, LeakyReLU (the pix2pix convention)."""
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, 4, strides=strides, padding="valid",
                      kernel_initializer=kernel_initializer(config.kernel_init), name=f"{name}_conv")(x)
    if normalize:
        x = apply_instance_norm(x, config.norm_epsilon, name=f"{name}_norm")
    return layers.LeakyReLU(negative_slope=config.leaky_relu_slope, name=f"{name}_act")(x)


def build_patchgan_discriminator(config: DiscriminatorConfig | None = None,
                                 name: str = "discriminator") -> keras.Model:
    """Build the PatchGAN as a functional Keras model.

    Args:
        config: ``DiscriminatorConfig()`` gives the 70x70 PatchGAN (64-128-256-512).
        name: model name, e.g. ``"discriminator_ki67"``.

    Returns:
        ``keras.Model`` mapping ``(B, H, W, 3)`` in [-1, 1] to float32 logits
        ``(B, h, w, 1)`` (one per patch; apply a sigmoid for probabilities).
    """
    config = config or DiscriminatorConfig()
    images = keras.Input(shape=(None, None, 3), name="images")
    x = apply_patch_conv(images, config.base_filters, 2, config, name="layer0", normalize=False)
    # pix2pix layout: layers 1 .. n-1 halve the size, the last one keeps stride 1
    for layer in range(1, config.num_layers + 1):
        filters = config.base_filters * 2 ** min(layer, 3)
        x = apply_patch_conv(x, filters, 2 if layer < config.num_layers else 1, config, name=f"layer{layer}")
    x = layers.ZeroPadding2D(1, name="logits_pad")(x)
    logits = layers.Conv2D(1, 4, padding="valid", kernel_initializer=kernel_initializer(config.kernel_init),
                           dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name=name)
