"""ResNet generator with encoder-decoder skip connections (the paper's improved CycleGAN).

Layout for the paper configuration (base 32 filters, 3 downsamplings, 10 blocks),
shapes for a 288x288 input::

    input                                  (B, 288, 288, 3)    float in [-1, 1]
    7x7 conv, IN, LeakyReLU  -> e0         (B, 288, 288, 32)
    3x3 conv /2, IN, LReLU   -> e1         (B, 144, 144, 64)
    3x3 conv /2, IN, LReLU   -> e2         (B,  72,  72, 128)
    3x3 conv /2, IN, LReLU   -> e3         (B,  36,  36, 256)   bottleneck
    10 x residual block                    (B,  36,  36, 256)
    3x3 tconv x2, IN, LReLU, concat e2     (B,  72,  72, 128 + 128)
    3x3 tconv x2, IN, LReLU, concat e1     (B, 144, 144, 64 + 64)
    3x3 tconv x2, IN, LReLU, concat e0     (B, 288, 288, 32 + 32)
    7x7 conv, tanh                         (B, 288, 288, 3)    float32 in [-1, 1]

The model is fully convolutional: any H and W that are multiples of
``2 ** num_downsamplings`` work.

Reference: Liu et al., "Unpaired stain transfer using pathology-consistent
constrained generative adversarial networks" / the improved CycleGAN for
H&E -> Ki-67 virtual staining (skip connections + SSIM cycle loss).
"""

from __future__ import annotations

import keras
from keras import layers

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.models.layers import apply_instance_norm, apply_padding, kernel_initializer


def apply_conv_block(x, filters: int, kernel_size: int, strides: int, config: GeneratorConfig, name: str,
                     transpose: bool = False, activation: bool = True):
    """Conv (or transposed conv) + instance norm (+ LeakyReLU).

    Stride-1 convs pad explicitly (reflect or zero, per ``config.padding``) and
    convolve ``valid``; stride-2 convs use ``same`` padding so that every size
    divisible by 2 halves (or doubles) exactly.
    """
    init = kernel_initializer(config.kernel_init)
    if transpose:
        x = layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding="same",
                                   kernel_initializer=init, name=f"{name}_tconv")(x)
    elif strides == 1:
        x = apply_padding(x, kernel_size // 2, config.padding, name=f"{name}_pad")
        x = layers.Conv2D(filters, kernel_size, padding="valid", kernel_initializer=init, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                          kernel_initializer=init, name=f"{name}_conv")(x)
    x = apply_instance_norm(x, config.norm_epsilon, name=f"{name}_norm")
    if activation:
        x = layers.LeakyReLU(negative_slope=config.leaky_relu_slope, name=f"{name}_act")(x)
    return x


def apply_residual_block(x, config: GeneratorConfig, name: str):
    """Two 3x3 conv blocks (the second without activation) plus the identity."""
    filters = x.shape[-1]
    residual = apply_conv_block(x, filters, 3, 1, config, name=f"{name}_a")
    residual = apply_conv_block(residual, filters, 3, 1, config, name=f"{name}_b", activation=False)
    return layers.Add(name=f"{name}_add")([x, residual])


def build_resnet_generator(config: GeneratorConfig | None = None, name: str = "generator") -> keras.Model:
    """Build the generator as a functional Keras model.

    Args:
        config: architecture options (``GeneratorConfig()`` = the paper's).
        name: model name, e.g. ``"generator_he_to_ki67"``.

    Returns:
        ``keras.Model`` mapping float ``(B, H, W, 3)`` in [-1, 1] to float32
        ``(B, H, W, 3)`` in [-1, 1]; H and W multiples of ``2 ** num_downsamplings``.

    Example:
        >>> generator = build_resnet_generator(GeneratorConfig(base_filters=8, num_residual_blocks=2))
        >>> generator(np.zeros((1, 64, 64, 3), "float32")).shape
        TensorShape([1, 64, 64, 3])
    """
    config = config or GeneratorConfig()
    images = keras.Input(shape=(None, None, 3), name="images")
    x = apply_conv_block(images, config.base_filters, 7, 1, config, name="stem")
    encoder_features = []
    for level in range(config.num_downsamplings):
        encoder_features.append(x)
        x = apply_conv_block(x, config.base_filters * 2 ** (level + 1), 3, 2, config, name=f"down{level + 1}")
    for block in range(config.num_residual_blocks):
        x = apply_residual_block(x, config, name=f"res{block + 1}")
    for level in reversed(range(config.num_downsamplings)):
        x = apply_conv_block(x, config.base_filters * 2 ** level, 3, 2, config,
                             name=f"up{config.num_downsamplings - level}", transpose=True)
        if config.skip:
            x = layers.Concatenate(name=f"skip{config.num_downsamplings - level}")([x, encoder_features[level]])
    x = apply_padding(x, 3, config.padding, name="head_pad")
    x = layers.Conv2D(3, 7, padding="valid", kernel_initializer=kernel_initializer(config.kernel_init),
                      name="head_conv")(x)
    # float32 output whatever the mixed-precision policy: losses and export read it
    outputs = layers.Activation("tanh", dtype="float32", name="head_tanh")(x)
    return keras.Model(images, outputs, name=name)
