"""The generator's instance-norm statistics: measured as the layers measure them, and given back."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.export import generator_in_precision
from virtual_ihc.models import build_resnet_generator
from virtual_ihc.models.instance_statistics import given_statistics_model, statistics_layout, statistics_model


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(0)
    return build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1))


@pytest.fixture(scope="module")
def images():
    return tf.constant(np.random.default_rng(0).uniform(-1, 1, (2, 32, 48, 3)).astype("float32"))


def test_layout_lists_every_instance_norm_in_call_order(generator):
    layout = statistics_layout(generator)
    norms = [layer for layer in generator.layers if isinstance(layer, keras.layers.GroupNormalization)]
    assert len(layout.names) == len(norms) and layout.names[0] == "stem_norm"
    assert layout.size == sum(int(layer.gamma.shape[0]) for layer in norms)


def test_statistics_are_the_layer_inputs_mean_and_variance_over_height_and_width(generator, images):
    means, variances = statistics_model(generator)(images)
    stem = keras.Model(generator.inputs, generator.get_layer("stem_conv").output)(images).numpy()
    channels = stem.shape[-1]
    np.testing.assert_allclose(means[:, :channels], stem.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(variances[:, :channels], stem.var(axis=(1, 2)), rtol=1e-4, atol=1e-6)


def test_given_its_own_statistics_the_generator_is_unchanged(generator, images):
    means, variances = statistics_model(generator)(images)
    given = given_statistics_model(generator)([images, means, variances]).numpy()
    np.testing.assert_allclose(given, generator(images).numpy(), atol=1e-5)


def test_other_statistics_change_the_output(generator, images):
    means, variances = statistics_model(generator)(images)
    swapped = given_statistics_model(generator)([images, means[::-1], variances[::-1]]).numpy()
    assert np.abs(swapped - generator(images).numpy()).max() > 0.05


def test_bfloat16_generator_given_its_own_statistics_stays_close(generator, images):
    bfloat16 = generator_in_precision(generator, "bfloat16")
    means, variances = statistics_model(bfloat16)(images)
    given = given_statistics_model(bfloat16)([images, means, variances]).numpy()
    np.testing.assert_allclose(given, bfloat16(images).numpy(), atol=0.03)


def test_a_model_without_instance_norm_is_refused():
    plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 3, padding="same")])
    with pytest.raises(ValueError, match="no instance-normalisation layer"):
        statistics_model(plain)
