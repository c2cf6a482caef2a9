"""MirroredStrategy on two logical CPU devices (configured in conftest.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.training.schedules import current_learning_rate
from virtual_ihc.training.trainer import build_cycle_gan, compile_cycle_gan, run_training

pytestmark = pytest.mark.slow


def _two_cpu_strategy():
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("TensorFlow was initialised before conftest could split the CPU")
    return tf.distribute.MirroredStrategy([device.name for device in cpus[:2]])


def test_one_step_on_two_replicas_equals_one_step_on_one_device(tiny_config):
    """Per-replica losses are scaled by the global batch: with plain SGD (which, unlike Adam,
    would show a wrong gradient scale) two replicas give the single-device update, and every
    logged loss is the single-device value (not divided by the number of replicas)."""
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
        history = model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False).history
        after = [np.asarray(w) for w in model.generator_he_to_ki67.weights]
        return before, after, history

    single_before, single_after, single_history = train_once(tf.distribute.get_strategy())
    mirrored_before, mirrored_after, mirrored_history = train_once(_two_cpu_strategy())
    assert set(single_history) == set(mirrored_history)
    for key in single_history:
        np.testing.assert_allclose(mirrored_history[key], single_history[key], rtol=1e-4, err_msg=key)
    for a, b in zip(single_before, mirrored_before):
        np.testing.assert_array_equal(a, b)
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(single_after, single_before))
    assert moved > 0
    for a, b in zip(single_after, mirrored_after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("precision", ["none", "mixed_float16"])
def test_fit_runs_on_two_replicas(tiny_config, precision):
    _two_cpu_strategy()
    result = run_training(tiny_config(train={"distribute": "mirrored", "epochs": 1, "batch_size": 2,
                                             "export": False, "mixed_precision": precision}))
    assert result.replicas == 2
    assert np.isfinite(result.history["generator_loss"][-1])
    assert np.isfinite(result.history["val_he_cycle_ssim"][-1])


def test_float16_overflow_on_one_replica_skips_the_step_on_every_replica(tiny_config):
    """An inf on replica 1 only: no weight may change, the loss scale halves, and the skipped step
    still counts for the learning-rate schedule (here one decay per 2 steps)."""
    config = tiny_config(train={"pool_size": 0, "batch_size": 4, "mixed_precision": "mixed_float16",
                                "lr_schedule": "exponential", "lr_decay_epochs": 1, "lr_decay_rate": 0.5})
    rng = np.random.default_rng(0)
    real_he, real_ki67 = (rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32") for _ in range(2))
    overflowing = real_he.copy()
    overflowing[2:] = np.inf  # the second replica's half of the batch
    dataset = tf.data.Dataset.from_tensor_slices(([overflowing, real_he], [real_ki67, real_ki67]))
    strategy = _two_cpu_strategy()
    keras.utils.set_random_seed(3)
    with strategy.scope():
        model = build_cycle_gan(config)
        compile_cycle_gan(model, config, steps_per_epoch=2)
    weights = [np.array(w.numpy()) for w in model.generator_he_to_ki67.weights + model.discriminator_he.weights]
    scale = float(model.generator_optimizer.dynamic_scale.numpy())
    model.fit(dataset.take(1), epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    for before, after in zip(weights, model.generator_he_to_ki67.weights + model.discriminator_he.weights):
        np.testing.assert_array_equal(np.asarray(after), before)
    assert float(model.generator_optimizer.dynamic_scale.numpy()) == scale / 2
    assert int(model.skipped_steps.numpy()) == 1 and int(model.generator_optimizer.iterations.numpy()) == 0
    model.fit(dataset.skip(1), epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    assert all(np.isfinite(np.asarray(w)).all() for w in model.generator_he_to_ki67.weights)
    assert int(model.train_step_counter.numpy()) == 2 and int(model.generator_optimizer.iterations.numpy()) == 1
    assert current_learning_rate(model.generator_optimizer) == pytest.approx(config.train.learning_rate * 0.5)
