"""The pathology-consistency training losses: differentiable colour deconvolution, nuclear structure, DAB share."""

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from skimage.color import rgb2hed

from virtual_ihc import losses
from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.histology.nuclei import segment_nuclei
from virtual_ihc.histology.stains import restain_he_as_ki67


def as_network_input(images: np.ndarray) -> tf.Tensor:
    images = np.asarray(images)
    return tf.constant((images[None] if images.ndim == 3 else images).astype(np.float32) / 127.5 - 1.0)


@pytest.fixture(scope="module")
def real_ihc():
    return skimage.data.immunohistochemistry()[:128, :128]


@pytest.fixture(scope="module")
def he_and_restained():
    rng = np.random.default_rng(11)
    he = render_he(make_layout(rng, 96, nucleus_radius=5.0), rng)
    labels = segment_nuclei(he)
    return he, restain_he_as_ki67(he, np.isin(labels, np.arange(1, labels.max() + 1)[::4]))


def test_stain_amounts_equal_skimage_rgb2hed(real_ihc):
    amounts = losses.stain_amounts(as_network_input(real_ihc)).numpy()[0]
    not_black = real_ihc.min(axis=-1) >= 3  # below one grey level the optical density is floored
    np.testing.assert_allclose(np.maximum(amounts, 0)[not_black], rgb2hed(real_ihc)[not_black], atol=1e-5)


def test_nuclear_structure_loss_rewards_nuclei_in_place_whatever_their_colour(he_and_restained):
    he, restained = he_and_restained
    source = as_network_input(he)
    identity = float(losses.nuclear_structure_loss(source, source)[0])
    ideal_ki67 = float(losses.nuclear_structure_loss(source, as_network_input(restained))[0])
    inverted = float(losses.nuclear_structure_loss(source, as_network_input(255 - he))[0])
    shifted = float(losses.nuclear_structure_loss(source, as_network_input(np.roll(restained, 9, axis=1)))[0])
    assert identity == pytest.approx(0.0, abs=1e-4)
    assert ideal_ki67 < 0.25 < 0.6 < shifted
    assert inverted > 1.5


def test_structure_loss_barely_prefers_blue_over_brown_nuclei(he_and_restained):
    """The saturating map: DAB on a quarter of the nuclei costs little against none (an unsaturated map: much more)."""
    he, with_brown = he_and_restained
    all_blue = restain_he_as_ki67(he, np.zeros(he.shape[:2], bool))
    source = as_network_input(he)
    blue = float(losses.nuclear_structure_loss(source, as_network_input(all_blue))[0])
    brown = float(losses.nuclear_structure_loss(source, as_network_input(with_brown))[0])
    assert brown - blue < 0.1


def test_dab_exceedance_is_the_soft_share_of_pixels_above_each_dab_level(real_ihc):
    dab = rgb2hed(real_ihc)[..., 2]
    measured = losses.dab_exceedance(as_network_input(real_ihc)).numpy()
    soft = [np.mean(1.0 / (1.0 + np.exp(-(dab - level) / (level / 4.0)))) for level in losses.DAB_LEVELS]
    np.testing.assert_allclose(measured, soft, atol=1e-3)
    hard = np.array([(dab > level).mean() for level in losses.DAB_LEVELS])
    assert np.all(np.abs(measured - hard) < 0.12)  # a smoothed version of the exceedance curve
    assert np.all(np.diff(measured) <= 0)  # a distribution's tail shrinks with the level


def test_positivity_loss_tells_faintly_brown_nuclei_from_a_few_dark_ones(he_and_restained):
    """Every nucleus faintly brown is no match for a quarter of them dark brown, though both are 'brown'."""
    he, quarter_dark = he_and_restained
    nuclei = segment_nuclei(he) > 0
    all_faint = restain_he_as_ki67(he, nuclei, dab_amount=0.05)
    also_quarter_dark = restain_he_as_ki67(he, np.isin(segment_nuclei(he), np.arange(1, 1000)[::4]))
    target = as_network_input(quarter_dark)
    assert float(losses.positivity_loss(target, as_network_input(also_quarter_dark))) < 0.01
    assert float(losses.positivity_loss(target, as_network_input(all_faint))) > 0.1


def test_positivity_loss_pulls_only_the_virtual_side(real_ihc, he_and_restained):
    real = as_network_input(real_ihc[:96, :96])
    virtual = tf.Variable(as_network_input(he_and_restained[1]))
    real_variable = tf.Variable(real)
    with tf.GradientTape() as tape:
        loss = losses.positivity_loss(real_variable, virtual)
    virtual_gradient, real_gradient = tape.gradient(loss, [virtual, real_variable])
    assert float(loss) > 0 and np.isfinite(virtual_gradient.numpy()).all()
    assert np.abs(virtual_gradient.numpy()).max() > 0 and real_gradient is None
    assert float(losses.positivity_loss(real, real)) == pytest.approx(0.0, abs=1e-10)


def test_structure_gradients_are_finite_on_black_and_white_pixels():
    extremes = tf.Variable(as_network_input(np.tile(np.array([[0, 255]], np.uint8)[..., None], (32, 16, 3))))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses.nuclear_structure_loss(extremes, tf.reverse(extremes, axis=[2])))
    assert np.isfinite(tape.gradient(loss, extremes).numpy()).all()


@pytest.mark.parametrize("option, metric", [("structure_weight", "structure_loss"),
                                            ("positivity_weight", "positivity_loss")])
def test_train_step_adds_the_weighted_term_to_the_generator_loss(tiny_config, option, metric):
    """At learning rate 0 two runs see the same weights and batch: the losses differ by weight x term."""
    import keras

    from virtual_ihc.training.trainer import build_cycle_gan, compile_cycle_gan

    batch = (as_network_input(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3))),
             as_network_input(np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3))))
    results = {}
    for weight in (0.0, 2.0):
        config = tiny_config(loss={option: weight}, train={"learning_rate": 1e-12, "pool_size": 0})
        keras.utils.set_random_seed(0)  # same initial weights in both runs
        model = build_cycle_gan(config)
        compile_cycle_gan(model, config, steps_per_epoch=1)
        results[weight] = {key: float(value) for key, value in model.train_step(batch).items()}
    assert results[0.0][metric] == 0.0
    assert results[2.0][metric] > 0.0
    difference = results[2.0]["generator_loss"] - results[0.0]["generator_loss"]
    assert difference == pytest.approx(2.0 * results[2.0][metric], rel=1e-4)
