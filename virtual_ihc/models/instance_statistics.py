"""A generator's instance-normalisation statistics: measured on a tile, or given from outside.

Instance normalisation (:func:`~virtual_ihc.models.layers.apply_instance_norm`) normalises
every channel of every sample by that sample's own mean and variance over H and W. Run tile
by tile over a slide, each tile gets its own statistics: a tile that is mostly glass is
normalised differently from its neighbour that is mostly tissue, and the stitched slide
shows the tile grid. Slide-consistent staining (kernelized instance normalisation, URUST,
Ho et al. ECCV 2022) splits the generator in two uses:

- :func:`statistics_model`: the same generator, run normally, returning the mean and the
  variance that each instance-norm layer measured, flattened over the layers:
  ``(means, variances)``, each ``float32 (B, C)`` with ``C`` the sum of the layers' channels;
- :func:`given_statistics_model`: the same generator whose instance-norm layers normalise
  with statistics passed in (``images, means, variances -> images``), e.g. statistics
  smoothed over neighbouring tiles.

Both share the generator's weights (its layers are reused, not copied; the affine gain and
bias of each instance norm are copied into :class:`GivenStatisticsNormalization`). Given the
statistics a tile measures itself, the second returns what the generator returns.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops


@dataclasses.dataclass(frozen=True)
class StatisticsLayout:
    """Where each instance-norm layer's channels sit in the flattened statistics vector.

    Attributes:
        names: layer names, in the order the generator calls them.
        channels: channels of each layer.
    """

    names: tuple[str, ...]
    channels: tuple[int, ...]

    @property
    def size(self) -> int:
        """Length ``C`` of a flattened statistics vector."""
        return sum(self.channels)


def is_instance_norm(layer: keras.layers.Layer) -> bool:
    """A ``GroupNormalization`` with one channel per group (instance normalisation)."""
    return (isinstance(layer, layers.GroupNormalization) and layer.built
            and layer.groups == int(layer.gamma.shape[0] if layer.scale else layer.beta.shape[0]))


def _check_has_instance_norm(generator: keras.Model) -> None:
    if not any(is_instance_norm(layer) for layer in generator.layers):
        raise ValueError(f"{generator.name} has no instance-normalisation layer")


def statistics_layout(generator: keras.Model) -> StatisticsLayout:
    """The :class:`StatisticsLayout` of ``generator`` (the order its graph calls the layers in)."""
    _check_has_instance_norm(generator)
    found = []

    def record(layer, *args, **kwargs):
        if is_instance_norm(layer):
            found.append((layer.name, int(layer.groups)))
        return layer(*args, **kwargs)

    keras.models.clone_model(generator, clone_function=lambda layer: layer, call_function=record)
    names, channels = zip(*found)
    return StatisticsLayout(tuple(names), tuple(channels))


def statistics_model(generator: keras.Model) -> keras.Model:
    """``images (B, H, W, 3) in [-1, 1] -> [means, variances]``, each ``float32 (B, C)``.

    Entry ``c`` of the flattened vectors is channel ``c - offset`` of the instance-norm layer
    whose block starts at ``offset`` (:func:`statistics_layout`), measured over H and W of each
    image as the layer measures it (in float32). Layers after the last instance norm are not run.
    """
    _check_has_instance_norm(generator)
    means, variances = [], []

    def measure(layer, *args, **kwargs):
        if is_instance_norm(layer):
            mean, variance = ops.moments(ops.cast(args[0], "float32"), axes=[1, 2])
            means.append(mean)
            variances.append(variance)
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(generator, clone_function=lambda layer: layer, call_function=measure)
    return keras.Model(clone.inputs, [ops.concatenate(means, axis=-1), ops.concatenate(variances, axis=-1)],
                       name=f"{generator.name}_statistics")


@keras.saving.register_keras_serializable(package="virtual_ihc")
class GivenStatisticsNormalization(layers.Layer):
    """Instance normalisation with the statistics passed in instead of measured.

    Call on ``[x, mean, variance]``: ``x (B, H, W, C)``, ``mean`` and ``variance`` ``(B, C)``;
    returns ``(x - mean) / sqrt(variance + epsilon) * gamma + beta`` computed in float32 (as
    ``GroupNormalization`` does), in the layer's compute dtype.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs):
        x, mean, variance = inputs
        scale = ops.rsqrt(ops.cast(variance, "float32") + self.epsilon) * ops.cast(self.gamma, "float32")
        shift = ops.cast(self.beta, "float32") - ops.cast(mean, "float32") * scale
        out = ops.cast(x, "float32") * scale[:, None, None, :] + shift[:, None, None, :]
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def given_statistics_model(generator: keras.Model) -> keras.Model:
    """``[images (B, H, W, 3), means (B, C), variances (B, C)] -> images``: the generator with given statistics.

    The flattened statistics follow :func:`statistics_layout` (what :func:`statistics_model`
    returns). The instance norms' gain and bias are copied; every other layer is the generator's own.
    """
    layout = statistics_layout(generator)
    means = keras.Input((layout.size,), name="means")
    variances = keras.Input((layout.size,), name="variances")
    replaced = []
    offset = 0

    def normalize_with_given(layer, *args, **kwargs):
        nonlocal offset
        if not is_instance_norm(layer):
            return layer(*args, **kwargs)
        given = GivenStatisticsNormalization(layer.epsilon, dtype=layer.dtype_policy, name=f"{layer.name}_given")
        channels = int(layer.groups)
        output = given([args[0], means[:, offset:offset + channels], variances[:, offset:offset + channels]])
        offset += channels
        replaced.append((layer, given))
        return output

    images = keras.Input(generator.inputs[0].shape[1:], dtype=generator.inputs[0].dtype, name="images")
    # clone_model would build its model from the images input alone; the graph is run the same way
    # (the generator's own layers, our call for the instance norms) with the statistics as inputs too
    outputs = generator._run_through_graph([images], operation_fn=lambda layer: layer,
                                           call_fn=normalize_with_given)
    model = keras.Model([images, means, variances], outputs, name=f"{generator.name}_given_statistics")
    for layer, given in replaced:
        given.gamma.assign(layer.gamma if layer.scale else ops.ones_like(given.gamma))
        given.beta.assign(layer.beta if layer.center else ops.zeros_like(given.beta))
    return model
