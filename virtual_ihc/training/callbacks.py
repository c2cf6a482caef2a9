"""Keras callbacks of a training run: checkpoints, learning rate, sample images, skipped files."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from virtual_ihc.io.images import write_image_rgb
from virtual_ihc.pixels import unit_to_uint8
from virtual_ihc.training.checkpoints import CheckpointManager
from virtual_ihc.training.schedules import current_learning_rate

logger = logging.getLogger(__name__)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state at the end of every epoch (atomically), if it is finite.

    Non-finite weights, or non-finite training losses without loss scaling (which
    would have applied them), stop training instead: nothing is saved or pruned,
    so the last checkpoint stays the last finite one, and ``manager.refused``
    says why (the trainer turns it into an error before exporting anything).
    With mixed_float16 loss scaling a non-finite loss means a skipped step, not
    a broken model, so only the weights are checked.
    """

    def __init__(self, manager: CheckpointManager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        problems = []
        if not isinstance(self.model.generator_optimizer, keras.optimizers.LossScaleOptimizer):
            problems += [f"{key} = {value}" for key, value in logs.items()
                         if not key.startswith("val_") and not np.isfinite(np.asarray(value, np.float64)).all()]
        bad_weights = self.manager.non_finite_state()
        if bad_weights:
            problems.append(f"{len(bad_weights)} weight tensors hold NaN or infinity (e.g. {bad_weights[0]})")
        if problems:
            latest = self.manager.latest()
            self.manager.refused = (
                f"training diverged in epoch {epoch + 1}: {'; '.join(problems[:4])}. Nothing was saved for it; "
                + (f"the last finite checkpoint is {latest[1].parent} (epoch {latest[0]})" if latest
                   else "there is no checkpoint") + ". Lower --learning-rate and --resume.")
            logger.error(self.manager.refused)
            self.model.stop_training = True
            return
        self.manager.save(epoch + 1, logs)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the rate the next step will use) to the epoch logs, and under
    mixed_float16 loss scaling ``skipped_steps`` (steps skipped for a non-finite gradient, so far).

    Must come before ``CSVLogger`` / ``TensorBoard`` in the callback list.
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer):
        super().__init__()
        self.optimizer = optimizer

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.optimizer)
            if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                logs["skipped_steps"] = int(self.model.skipped_steps.numpy())


def sample_grid(model, real_he: np.ndarray, real_ki67: np.ndarray) -> np.ndarray:
    """uint8 image: one row per example, ``real_he | fake_ki67 | cycled_he`` then
    ``real_ki67 | fake_he | cycled_ki67``, for float [-1, 1] batches."""
    fake_ki67 = model.generator_he_to_ki67(real_he, training=False)
    cycled_he = model.generator_ki67_to_he(fake_ki67, training=False)
    fake_he = model.generator_ki67_to_he(real_ki67, training=False)
    cycled_ki67 = model.generator_he_to_ki67(fake_he, training=False)
    rows = [tf.concat([real, fake, cycled], axis=2)  # (B, H, 3W, 3)
            for real, fake, cycled in ((real_he, fake_ki67, cycled_he), (real_ki67, fake_he, cycled_ki67))]
    grid = tf.concat([tf.reshape(row, [-1, row.shape[2], 3]) for row in rows], axis=0)
    return unit_to_uint8(grid).numpy()


class SampleImages(keras.callbacks.Callback):
    """Writes ``samples/epoch_NNN.png`` and the same grid to TensorBoard after every epoch."""

    def __init__(self, real_he: np.ndarray, real_ki67: np.ndarray, samples_dir: Path, log_dir: Path):
        super().__init__()
        self.real_he = real_he
        self.real_ki67 = real_ki67
        self.samples_dir = Path(samples_dir)
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "images"))

    def on_epoch_end(self, epoch, logs=None):
        grid = sample_grid(self.model, self.real_he, self.real_ki67)
        write_image_rgb(self.samples_dir / f"epoch_{epoch + 1:03d}.png", grid)
        with self.writer.as_default():
            tf.summary.image("he_to_ki67_to_he__ki67_to_he_to_ki67", grid[None], step=epoch + 1)
        self.writer.flush()


#: metrics on the progress display (all of them go to history.csv and TensorBoard)
PROGRESS_METRICS = ("generator_loss", "cycle_ssim_loss", "discriminator_ki67_loss")
#: added to the one-line-per-epoch display
PROGRESS_EPOCH_METRICS = ("discriminator_he_loss", "val_he_cycle_ssim", "val_ki67_cycle_ssim")


def progress_mode(verbose: str) -> str | None:
    """``--verbose`` as a display: ``"bar"`` (1), ``"line"`` (2), ``None`` (0); ``auto`` is a bar on a
    terminal and one line per epoch otherwise (log files, pipes)."""
    if verbose == "auto":
        return "bar" if sys.stdout.isatty() else "line"
    return {"0": None, "1": "bar", "2": "line"}[str(verbose)]


class ProgressDisplay(keras.callbacks.Callback):
    """Training progress on stdout with a few metrics, 4 significant digits.

    ``mode="bar"``: Keras' progress bar over each epoch's steps with
    :data:`PROGRESS_METRICS` (about 130 characters); ``mode="line"``: one line per
    epoch, with :data:`PROGRESS_EPOCH_METRICS` too. Use with ``fit(verbose=0)``.
    """

    def __init__(self, mode: str, epochs: int, steps_per_epoch: int):
        super().__init__()
        self.mode, self.epochs, self.steps = mode, epochs, steps_per_epoch
        self.bar = None
        self.started = 0.0

    @staticmethod
    def _shown(logs, keys) -> list[tuple[str, float]]:
        return [(key, float(f"{float(logs[key]):.4g}")) for key in keys if logs and key in logs]

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        if self.mode == "bar":
            print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
            self.bar = keras.utils.Progbar(self.steps, stateful_metrics=PROGRESS_METRICS)

    def on_train_batch_end(self, batch, logs=None):
        if self.mode == "bar":
            self.bar.update(batch + 1, values=self._shown(logs, PROGRESS_METRICS))

    def on_epoch_end(self, epoch, logs=None):
        if self.mode == "bar":
            self.bar.update(self.steps, values=self._shown(logs, PROGRESS_METRICS), finalize=True)
        else:
            values = " - ".join(f"{key} {value:.4g}"
                                for key, value in self._shown(logs, PROGRESS_METRICS + PROGRESS_EPOCH_METRICS))
            print(f"epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self.started:.0f} s - {values}",
                  flush=True)


class DecodeFailureReport(keras.callbacks.Callback):
    """Logs at the end of training how many tiles were skipped because they failed to decode."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    def on_train_end(self, logs=None):
        if self.failures.count:
            logger.warning("%d tile reads failed during training (%d distinct files), all skipped: %s",
                           self.failures.count, len(self.failures.failures),
                           ", ".join(sorted(self.failures.failures)[:5]))
