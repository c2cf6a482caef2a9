"""Learning-rate schedules, functions of the model's train-step counter (so ``--resume`` restores them).

The counter counts every train step; the optimizer's own ``iterations`` does not
count the steps that mixed_float16 loss scaling skips, so a schedule driven by it
would lag behind the epochs by the number of skipped steps.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from virtual_ihc.config import TrainConfig
from virtual_ihc.errors import InputError


@keras.saving.register_keras_serializable(package="virtual_ihc")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant for ``constant_steps``, then linear to 0 over ``decay_steps`` (the CycleGAN schedule)."""

    def __init__(self, initial_learning_rate: float, constant_steps: int, decay_steps: int):
        self.initial_learning_rate = float(initial_learning_rate)
        self.constant_steps = int(constant_steps)
        self.decay_steps = max(int(decay_steps), 1)

    def __call__(self, step):
        progress = (tf.cast(step, tf.float32) - self.constant_steps) / self.decay_steps
        return self.initial_learning_rate * (1.0 - tf.clip_by_value(progress, 0.0, 1.0))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "constant_steps": self.constant_steps, "decay_steps": self.decay_steps}


def build_learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """The schedule named by ``config.lr_schedule``, in optimizer steps.

    - ``exponential`` (paper): ``lr * decay_rate ** floor(epoch / decay_epochs)``;
    - ``linear``: constant until ``lr_linear_start_epoch``, then linearly to 0 at ``epochs``;
    - ``constant``.
    """
    if config.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, decay_steps=config.lr_decay_epochs * steps_per_epoch,
            decay_rate=config.lr_decay_rate, staircase=True)
    if config.lr_schedule == "linear":
        start = min(config.lr_linear_start_epoch, config.epochs)
        return LinearDecay(config.learning_rate, start * steps_per_epoch,
                           (config.epochs - start) * steps_per_epoch)
    if config.lr_schedule == "constant":
        return config.learning_rate
    raise InputError(f"--lr-schedule: unknown schedule {config.lr_schedule!r}")


def on_step_counter(schedule, counter):
    """The learning rate for an optimizer: ``schedule(counter)`` as a no-argument callable.

    ``counter``: the model's ``train_step_counter`` (every step, skipped or not).
    A constant learning rate is returned as it is.
    """
    if not callable(schedule):
        return schedule
    return lambda: schedule(counter)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate the optimizer applies at its current step."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return float(keras.ops.convert_to_numpy(inner.learning_rate))
