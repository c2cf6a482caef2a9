"""Style transfer on tiny images with random VGG19 weights (no download)."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.io.images import read_image_rgb, write_image_rgb
from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.nst.features import build_vgg19
from virtual_ihc.nst.transfer import StyleTransfer, initial_image
from virtual_ihc.weights import resolve_weights


@pytest.fixture(scope="module")
def vgg():
    keras.utils.set_random_seed(6)
    return build_vgg19(None)


@pytest.fixture(scope="module")
def he_tile():
    return sample_tiles("he", 1, 48, seed=1)[0]


@pytest.fixture(scope="module")
def ki67_tile():
    return sample_tiles("ki67", 1, 64, seed=2)[0]


SHALLOW_LAYERS = {"content_layers": ("block2_conv1",), "style_layers": (("block1_conv1", 0.5), ("block2_conv1", 0.5))}


@pytest.mark.parametrize("settings", [
    {"optimizer": "adam"},  # default layers
    {"optimizer": "lbfgs", **SHALLOW_LAYERS},  # shallow: tracing through all of VGG19 takes seconds
], ids=["adam", "lbfgs"])
def test_total_loss_decreases_monotonically_and_output_keeps_content_shape(vgg, he_tile, ki67_tile, settings):
    transfer = StyleTransfer(NSTConfig(iterations=3, **settings), vgg)
    result = transfer.run(he_tile, transfer.style_targets([ki67_tile]))
    history = np.array(result.loss_history)
    assert len(history) >= 3
    assert np.all(np.diff(history) < 0), history
    assert result.image.shape == he_tile.shape
    assert result.image.dtype == np.uint8
    assert not np.array_equal(result.image, he_tile)
    assert result.final_losses["total_loss"] == pytest.approx(history[-1], rel=1e-4)
    assert 0 < result.seconds_per_iteration <= result.seconds


def test_each_image_starts_a_fresh_adam_optimisation(vgg, he_tile, ki67_tile):
    transfer = StyleTransfer(NSTConfig(iterations=2, **SHALLOW_LAYERS), vgg)
    targets = transfer.style_targets([ki67_tile])
    first = transfer.run(he_tile, targets)
    transfer.run(he_tile[::-1].copy(), targets)  # another tile of the same size in between
    again = transfer.run(he_tile, targets)
    np.testing.assert_array_equal(again.image, first.image)
    np.testing.assert_allclose(again.loss_history, first.loss_history, rtol=1e-6)


def test_mae_and_mse_content_losses_differ(vgg, he_tile, ki67_tile):
    noisy = tf.constant(initial_image(he_tile, "noise", seed=0)[None])
    terms = {}
    for kind in ("mse", "mae"):
        transfer = StyleTransfer(NSTConfig(content_loss=kind), vgg)
        terms[kind] = transfer.loss_terms(noisy, transfer.content_targets(he_tile),
                                          transfer.style_targets([ki67_tile]))
    assert terms["mse"]["content_loss"].numpy() > 0
    assert terms["mse"]["content_loss"].numpy() != pytest.approx(terms["mae"]["content_loss"].numpy(), rel=1e-3)
    total_change = terms["mse"]["total_loss"].numpy() - terms["mae"]["total_loss"].numpy()
    content_change = terms["mse"]["content_loss"].numpy() - terms["mae"]["content_loss"].numpy()
    assert total_change == pytest.approx(content_change, rel=1e-3)  # content_weight is 1
    assert terms["mse"]["style_loss"].numpy() == pytest.approx(terms["mae"]["style_loss"].numpy(), rel=1e-5)


def test_content_start_has_zero_content_loss(vgg, he_tile, ki67_tile):
    transfer = StyleTransfer(NSTConfig(), vgg)
    terms = transfer.loss_terms(tf.constant(he_tile[None], tf.float32), transfer.content_targets(he_tile),
                                transfer.style_targets([ki67_tile]))
    assert terms["content_loss"].numpy() == pytest.approx(0.0, abs=1e-6)
    assert terms["style_loss"].numpy() > 0


def test_style_image_of_another_size_is_used_at_its_own_size(vgg, he_tile):
    wide_style = sample_tiles("ki67", 1, 80, seed=3)[0][:64]  # 64x80, content is 48x48
    transfer = StyleTransfer(NSTConfig(), vgg)
    targets = transfer.style_targets([wide_style])
    assert targets["block1_conv1"].shape == (1, 64, 64)
    terms = transfer.loss_terms(tf.constant(he_tile[None], tf.float32), transfer.content_targets(he_tile), targets)
    assert np.isfinite(terms["total_loss"].numpy())


def test_style_targets_of_a_set_are_the_mean_of_single_targets(vgg):
    styles = sample_tiles("ki67", 2, 48, seed=4)
    transfer = StyleTransfer(NSTConfig(), vgg)
    together = transfer.style_targets(list(styles))
    singles = [transfer.style_targets([style]) for style in styles]
    for name in together:
        np.testing.assert_allclose(together[name].numpy(), (singles[0][name] + singles[1][name]).numpy() / 2,
                                   rtol=1e-4, atol=1e-6)


def test_grayscale_style_file_is_accepted_with_a_warning(vgg, ki67_tile, tmp_path, caplog):
    path = write_image_rgb(tmp_path / "grey.png", np.repeat(ki67_tile.mean(axis=2, keepdims=True), 3, axis=2))
    style = read_image_rgb(path)
    with caplog.at_level(logging.WARNING, logger="virtual_ihc.nst.transfer"):
        targets = StyleTransfer(NSTConfig(), vgg).style_targets([style])
    assert "grayscale" in caplog.text
    assert np.isfinite(targets["block5_conv1"].numpy()).all()


@pytest.mark.parametrize("role", ["content", "style"])
def test_images_smaller_than_vgg_minimum_are_rejected(vgg, he_tile, role):
    transfer = StyleTransfer(NSTConfig(), vgg)
    tiny = he_tile[:20, :40]
    with pytest.raises(ValueError, match="20x40.*32x32"):
        transfer.content_targets(tiny) if role == "content" else transfer.style_targets([tiny])


def test_noise_start_is_seeded_and_in_pixel_range(he_tile):
    first, again = initial_image(he_tile, "noise", seed=5), initial_image(he_tile, "noise", seed=5)
    np.testing.assert_array_equal(first, again)
    assert first.shape == he_tile.shape and first.min() >= 0 and first.max() <= 255
    assert not np.array_equal(first, initial_image(he_tile, "noise", seed=6))
    np.testing.assert_array_equal(initial_image(he_tile, "content", seed=5), he_tile.astype(np.float32))


def test_local_weights_file_is_loaded(vgg, tmp_path):
    path = tmp_path / "vgg19_notop.weights.h5"
    vgg.save_weights(path)
    keras.utils.set_random_seed(7)  # different random init, overwritten by the file
    loaded = build_vgg19(resolve_weights(str(path)))
    np.testing.assert_array_equal(loaded.get_layer("block3_conv2").kernel.numpy(),
                                  vgg.get_layer("block3_conv2").kernel.numpy())
