"""Exports in bfloat16: the same signatures, computing under mixed_bfloat16, within 40 dB PSNR of float32."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.export import METADATA_PATH, export_saved_model, generator_in_precision, serving_module
from virtual_ihc.models import build_resnet_generator

#: the documented bound (docs/stain.md): bfloat16 output vs float32 output of the same generator
MIN_PSNR_DB = 40.0


def stain(module, tiles):
    return module.serve(tf.constant(tiles))["images"].numpy()


@pytest.fixture(scope="module")
def small_generator():
    keras.utils.set_random_seed(2)
    return build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1))


@pytest.mark.slow
def test_paper_generator_in_bfloat16_is_within_40_db_of_float32_on_sample_tiles():
    keras.utils.set_random_seed(0)
    generator = build_resnet_generator(GeneratorConfig())  # the paper's size: base 32 filters, 10 blocks
    tiles = sample_tiles("he", 8, 128, seed=0)
    reference = stain(serving_module(generator, "float32"), tiles)
    bfloat16 = stain(serving_module(generator, "bfloat16"), tiles)
    assert not np.array_equal(reference, bfloat16)  # bfloat16 really computed something else
    worst = min(peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(reference, bfloat16))
    assert worst >= MIN_PSNR_DB, f"worst tile {worst:.1f} dB"


def test_bfloat16_copy_has_bfloat16_layers_a_float32_head_and_the_same_weights(small_generator):
    converted = generator_in_precision(small_generator, "bfloat16")
    policies = {layer.name: layer.dtype_policy.name for layer in converted.layers}
    assert policies.pop("head_tanh") == "float32"
    policies.pop("images")  # the input layer
    assert set(policies.values()) == {"mixed_bfloat16"}
    for ours, theirs in zip(converted.get_weights(), small_generator.get_weights(), strict=True):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)
    assert generator_in_precision(converted, "bfloat16") is converted
    assert generator_in_precision(small_generator, "float32") is small_generator
    back = generator_in_precision(converted, "float32")
    images = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(back(images), small_generator(images))


@pytest.mark.slow
def test_bfloat16_export_serves_the_bfloat16_generator_and_records_its_precision(small_generator, tmp_path):
    path = export_saved_model(small_generator, tmp_path / "he_to_ki67", precision="bfloat16")
    assert json.loads((path / METADATA_PATH).read_text())["precision"] == "bfloat16"
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    tiles = sample_tiles("he", 2, 48, seed=1)
    served = serve(images=tf.constant(tiles))["images"].numpy()
    np.testing.assert_array_equal(served, stain(serving_module(small_generator, "bfloat16"), tiles))
    assert not np.array_equal(served, stain(serving_module(small_generator, "float32"), tiles))


def test_unknown_precision_is_an_error(small_generator, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        export_saved_model(small_generator, tmp_path / "he_to_ki67", precision="float16")
    assert not (tmp_path / "he_to_ki67").exists()
