"""MirroredStrategy on two logical CPU devices (configured in conftest.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.training.trainer import build_cycle_gan, run_training

pytestmark = pytest.mark.slow


def _two_cpu_strategy():
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("TensorFlow was initialised before conftest could split the CPU")
    return tf.distribute.MirroredStrategy([device.name for device in cpus[:2]])


def test_one_step_on_two_replicas_equals_one_step_on_one_device(tiny_config):
    """Per-replica losses are scaled by the global batch: with plain SGD (which, unlike Adam,
    would show a wrong gradient scale) two replicas give the single-device update."""
    config = tiny_config(train={"pool_size": 0, "batch_size": 4})
    rng = np.random.default_rng(0)
    batch = tuple(rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32") for _ in range(2))
    dataset = tf.data.Dataset.from_tensors(batch).repeat()

    def train_once(strategy):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            model = build_cycle_gan(config)
            model.compile(generator_optimizer=keras.optimizers.SGD(0.1),
                          discriminator_optimizer=keras.optimizers.SGD(0.1))
        before = [np.asarray(w).copy() for w in model.generator_he_to_ki67.weights]
        model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        after = [np.asarray(w) for w in model.generator_he_to_ki67.weights]
        return before, after

    single_before, single_after = train_once(tf.distribute.get_strategy())
    mirrored_before, mirrored_after = train_once(_two_cpu_strategy())
    for a, b in zip(single_before, mirrored_before):
        np.testing.assert_array_equal(a, b)
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(single_after, single_before))
    assert moved > 0
    for a, b in zip(single_after, mirrored_after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fit_runs_on_two_replicas(tiny_config):
    _two_cpu_strategy()
    result = run_training(tiny_config(train={"distribute": "mirrored", "epochs": 1, "batch_size": 2,
                                             "export": False}))
    assert result.replicas == 2
    assert np.isfinite(result.history["generator_loss"][-1])
    assert np.isfinite(result.history["val_he_cycle_ssim"][-1])
