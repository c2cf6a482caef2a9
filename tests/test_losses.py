import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc import losses


def _images(seed, shape=(2, 32, 32, 3)):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32"))


def test_structural_cycle_loss_is_zero_for_perfect_reconstruction():
    he, ki67 = _images(0), _images(1)
    np.testing.assert_allclose(losses.structural_cycle_loss(he, he, ki67, ki67).numpy(), 0.0, atol=1e-5)


def test_structural_similarity_agrees_with_tf_image_ssim_on_unit_range():
    a, b = _images(2), _images(3)
    expected = tf.image.ssim((a + 1) / 2, (b + 1) / 2, max_val=1.0)
    np.testing.assert_allclose(losses.structural_similarity(a, b).numpy(), expected.numpy(), rtol=1e-5)
    loss = losses.structural_cycle_loss(a, b, b, a).numpy()
    np.testing.assert_allclose(loss, 2.0 - 2.0 * expected.numpy(), rtol=1e-5)


def test_ms_ssim_uses_the_scales_that_fit_the_tile():
    assert len(losses.ms_ssim_power_factors(288)) == 5
    factors = losses.ms_ssim_power_factors(64)
    assert len(factors) == 3 and abs(sum(factors) - 1.0) < 1e-9
    a = _images(4, (2, 64, 64, 3))
    np.testing.assert_allclose(losses.structural_similarity(a, a, "ms_ssim").numpy(), 1.0, atol=1e-5)
    assert np.all(losses.structural_similarity(a, _images(5, (2, 64, 64, 3)), "ms_ssim").numpy() < 0.5)


def _ms_ssim_cases():
    """Pairs in [0, 1]: a noisy copy (every term positive), independent noise (some contrast-structure
    terms negative) and a negative (all negative)."""
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 1, (2, 176, 176, 3)).astype("float32")  # 176 px: all five scales fit
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype("float32")
    return {"noisy": (a, noisy), "independent": (a, rng.uniform(0, 1, a.shape).astype("float32")),
            "negative": (a, 1 - a)}


def _value_and_gradient(function, a, b):
    a = tf.Variable(a)
    with tf.GradientTape() as tape:
        value = function(a, tf.constant(b))
    return value.numpy(), tape.gradient(value, a).numpy()


@pytest.mark.parametrize("case", ["noisy", "independent", "negative"])
def test_multiscale_ssim_has_the_value_of_tf_image_ssim_multiscale(case):
    a, b = _ms_ssim_cases()[case]
    expected = tf.image.ssim_multiscale(a, b, max_val=1.0, power_factors=losses.MS_SSIM_POWER_FACTORS).numpy()
    np.testing.assert_allclose(losses.multiscale_ssim(a, b).numpy(), expected, atol=1e-5)


def test_multiscale_ssim_gradient_is_finite_where_tf_gives_nan():
    a, b = _ms_ssim_cases()["independent"]
    reference = lambda x, y: tf.image.ssim_multiscale(  # noqa: E731
        x, y, max_val=1.0, power_factors=losses.MS_SSIM_POWER_FACTORS)
    _, tf_gradient = _value_and_gradient(reference, a, b)
    assert np.isnan(tf_gradient).any()  # the defect this function exists to avoid
    for case in ("independent", "negative"):
        _, gradient = _value_and_gradient(losses.multiscale_ssim, *_ms_ssim_cases()[case])
        assert np.isfinite(gradient).all(), case
    _, noisy_gradient = _value_and_gradient(losses.multiscale_ssim, *_ms_ssim_cases()["noisy"])
    _, noisy_reference = _value_and_gradient(reference, *_ms_ssim_cases()["noisy"])
    np.testing.assert_allclose(noisy_gradient, noisy_reference, atol=1e-7, rtol=1e-3)


def test_multiscale_ssim_gradient_matches_finite_differences():
    """Directional derivatives in float64 against central differences (3 scales, 5x5 window)."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (2, 40, 40, 3))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    factors = losses.ms_ssim_power_factors(40, 5)
    function = lambda x: tf.reduce_sum(losses.multiscale_ssim(x, tf.constant(b), factors, 5))  # noqa: E731
    _, gradient = _value_and_gradient(lambda x, _: function(x), a, b)
    step = 1e-6
    for _ in range(5):
        direction = rng.normal(size=a.shape)
        numeric = (function(tf.constant(a + step * direction)) - function(tf.constant(a - step * direction))) / (
            2 * step)
        np.testing.assert_allclose(float(np.sum(gradient * direction)), float(numeric), rtol=1e-5)


def test_adversarial_losses_match_their_formulas():
    logits = np.array([[[[2.0]], [[-1.0]]], [[[0.5]], [[0.0]]]], "float32")  # (2, 2, 1, 1)
    sigmoid = 1 / (1 + np.exp(-logits))
    bce = losses.generator_adversarial_loss(logits, "bce").numpy()
    np.testing.assert_allclose(bce, -np.log(sigmoid).reshape(2, -1).mean(1), rtol=1e-5)
    lsgan = losses.generator_adversarial_loss(logits, "lsgan").numpy()
    np.testing.assert_allclose(lsgan, ((logits - 1) ** 2).reshape(2, -1).mean(1), rtol=1e-6)
    real, fake = logits, -logits
    d_bce = losses.discriminator_loss(real, fake, "bce").numpy()
    expected = 0.5 * (-np.log(sigmoid) - np.log(1 - 1 / (1 + np.exp(-fake)))).reshape(2, -1).mean(1)
    np.testing.assert_allclose(d_bce, expected, rtol=1e-5)
    d_lsgan = losses.discriminator_loss(real, fake, "lsgan").numpy()
    np.testing.assert_allclose(d_lsgan, 0.5 * ((real - 1) ** 2 + fake ** 2).reshape(2, -1).mean(1), rtol=1e-6)
    with pytest.raises(ValueError, match="bce"):
        losses.generator_adversarial_loss(logits, "wasserstein")


def test_l1_and_psnr_per_example():
    a = tf.zeros((2, 8, 8, 3))
    b = tf.concat([tf.zeros((1, 8, 8, 3)), tf.fill((1, 8, 8, 3), 0.5)], axis=0)
    np.testing.assert_allclose(losses.l1_loss(a, b).numpy(), [0.0, 0.5])
    # 0.5 in [-1, 1] is 0.25 in [0, 1]: PSNR = 10 log10(1 / 0.0625)
    assert losses.psnr(a, b).numpy()[1] == pytest.approx(10 * np.log10(1 / 0.0625), rel=1e-4)
