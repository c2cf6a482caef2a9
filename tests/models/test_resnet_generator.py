import keras
import numpy as np
import pytest
from keras import layers

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.models.layers import ReflectionPadding2D, apply_instance_norm
from virtual_ihc.models.resnet_generator import build_resnet_generator

TINY = GeneratorConfig(base_filters=4, num_residual_blocks=1)


@pytest.mark.parametrize("height, width", [(64, 64), (48, 80), (16, 24)])
def test_output_shape_matches_input_for_multiples_of_8_from_16_pixels(height, width):
    generator = build_resnet_generator(TINY)
    images = np.random.default_rng(0).uniform(-1, 1, (2, height, width, 3)).astype("float32")
    output = np.asarray(generator(images))
    assert output.shape == (2, height, width, 3)
    assert output.dtype == np.float32
    assert np.all(np.abs(output) <= 1.0)


def test_paper_configuration_layout():
    generator = build_resnet_generator(GeneratorConfig())
    names = [layer.name for layer in generator.layers]
    residual_adds = [name for name in names if name.startswith("res") and name.endswith("_add")]
    strided = [layer for layer in generator.layers
               if isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.Conv2DTranspose)
               and layer.strides == (2, 2)]
    transposed = [layer for layer in generator.layers if isinstance(layer, layers.Conv2DTranspose)]
    assert len(residual_adds) == 10
    assert len(strided) == 3 and all(layer.kernel_size == (3, 3) for layer in strided)
    assert len(transposed) == 3 and all(layer.strides == (2, 2) for layer in transposed)
    assert generator.get_layer("stem_conv").kernel_size == (7, 7)
    assert generator.get_layer("head_conv").kernel_size == (7, 7)
    # 288 -> 36x36x256 bottleneck
    bottleneck = keras.Model(generator.input, generator.get_layer("res10_add").output)
    assert tuple(bottleneck(np.zeros((1, 288, 288, 3), "float32")).shape) == (1, 36, 36, 256)


def test_skip_flag_adds_or_removes_concatenations():
    with_skip = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1, skip=True))
    without = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1, skip=False))
    concat = lambda model: [layer for layer in model.layers if isinstance(layer, layers.Concatenate)]  # noqa
    assert len(concat(with_skip)) == 3
    assert concat(without) == []
    assert with_skip.count_params() > without.count_params()


def test_zero_padding_and_normal_init_options_change_the_network():
    reflect = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1))
    zero = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1, padding="zero",
                                                  kernel_init="normal"))
    assert any(isinstance(layer, ReflectionPadding2D) for layer in reflect.layers)
    assert not any(isinstance(layer, ReflectionPadding2D) for layer in zero.layers)
    kernel = zero.get_layer("stem_conv").kernel.numpy()
    assert abs(kernel.std() - 0.02) < 0.005


def test_instance_norm_normalises_each_sample_and_channel_independently():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, apply_instance_norm(inputs, 1e-5, name="norm"))
    rng = np.random.default_rng(1)
    scale = np.array([1.0, 10.0, 0.1], "float32")
    batch = (rng.normal(size=(2, 16, 16, 3)) * scale + np.array([[[[5.0, -3.0, 100.0]]], [[[0, 1, 2]]]])
             ).astype("float32")
    output = np.asarray(model(batch))
    np.testing.assert_allclose(output.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(output.std(axis=(1, 2)), 1.0, atol=1e-2)
    changed = batch.copy()
    changed[1] *= 7.0
    np.testing.assert_allclose(np.asarray(model(changed))[0], output[0], atol=1e-5)


def test_reflection_padding_mirrors_the_border():
    image = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    padded = np.asarray(ReflectionPadding2D(1)(image))[0, :, :, 0]
    assert padded.shape == (6, 6)
    assert padded[0, 1] == image[0, 1, 0, 0]  # row -1 mirrors row 1
    assert padded[1, 0] == image[0, 0, 1, 0]


def test_keras_file_round_trip(tmp_path):
    generator = build_resnet_generator(TINY, name="generator_he_to_ki67")
    path = tmp_path / "generator.keras"
    generator.save(path)
    reloaded = keras.saving.load_model(path)
    images = np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(generator(images)), atol=1e-6)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in generator.layers]
