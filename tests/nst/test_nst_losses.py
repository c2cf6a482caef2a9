"""NST loss formulas against independent NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.nst.losses import content_loss, gram_matrix, mean_gram_matrix, style_layer_loss, total_variation_loss


@pytest.fixture
def rng():
    return np.random.default_rng(6)


def numpy_gram(features):
    """Gatys' G = F^T F with F reshaped to (positions, channels), one per batch item."""
    batch, height, width, channels = features.shape
    flat = features.reshape(batch, height * width, channels)
    return np.stack([item.T @ item for item in flat])


def test_gram_matrix_matches_numpy(rng):
    features = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(gram_matrix(tf.constant(features)).numpy(), numpy_gram(features), rtol=1e-5)


def test_mean_gram_matrix_divides_by_positions(rng):
    features = rng.normal(size=(1, 5, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(mean_gram_matrix(tf.constant(features)).numpy(), numpy_gram(features) / 30,
                               rtol=1e-5)


def test_style_layer_loss_matches_gatys_normalisation(rng):
    generated = rng.normal(size=(1, 5, 6, 4)).astype(np.float32)
    style = rng.normal(size=(1, 5, 6, 4)).astype(np.float32)
    channels, positions = 4, 30
    expected = np.sum((numpy_gram(generated) - numpy_gram(style)) ** 2) / (4 * channels**2 * positions**2)
    target = mean_gram_matrix(tf.constant(style))
    assert style_layer_loss(tf.constant(generated), target).numpy() == pytest.approx(expected, rel=1e-5)


def test_style_target_from_a_larger_image_with_the_same_statistics_gives_the_same_loss(rng):
    generated = rng.normal(size=(1, 5, 6, 4)).astype(np.float32)
    style = rng.normal(size=(1, 5, 6, 4)).astype(np.float32)
    style_tiled = np.concatenate([style, style[:, ::-1]], axis=1)  # twice the positions, same Gram / M
    loss_same_size = style_layer_loss(tf.constant(generated), mean_gram_matrix(tf.constant(style)))
    loss_larger = style_layer_loss(tf.constant(generated), mean_gram_matrix(tf.constant(style_tiled)))
    assert loss_larger.numpy() == pytest.approx(loss_same_size.numpy(), rel=1e-5)


def test_style_layer_loss_is_zero_for_its_own_target(rng):
    features = tf.constant(rng.normal(size=(1, 4, 4, 3)).astype(np.float32))
    assert style_layer_loss(features, mean_gram_matrix(features)).numpy() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind, reference", [
    ("mse", lambda a, b: np.mean((a - b) ** 2)),
    ("mae", lambda a, b: np.mean(np.abs(a - b))),
])
def test_content_loss_matches_numpy(rng, kind, reference):
    features = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    target = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    value = content_loss(tf.constant(features), tf.constant(target), kind).numpy()
    assert value == pytest.approx(reference(features, target), rel=1e-5)


def test_content_loss_rejects_unknown_distance():
    with pytest.raises(ValueError, match="mse"):
        content_loss(tf.zeros((1, 2, 2, 1)), tf.zeros((1, 2, 2, 1)), "huber")


def test_total_variation_matches_numpy(rng):
    image = rng.uniform(0, 255, size=(1, 6, 7, 3)).astype(np.float32)
    expected = np.mean(np.abs(np.diff(image, axis=1))) + np.mean(np.abs(np.diff(image, axis=2)))
    assert total_variation_loss(tf.constant(image)).numpy() == pytest.approx(expected, rel=1e-5)
