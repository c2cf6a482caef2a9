"""Atomic, resumable checkpoints of the whole training state.

A checkpoint holds the four networks, both optimizers (Adam moments, step
counters, loss scale), both image pools, the epoch counter and the model's
progress counters (train steps, steps skipped by loss scaling, and the input
element to resume from). It is written to
``checkpoints/.tmp_epoch_NNN/`` and renamed to ``checkpoints/epoch_NNN/`` only
when complete, so a crash mid-save never leaves a checkpoint that breaks
``--resume``: an incomplete one keeps its temporary name and is ignored.
Each checkpoint folder also keeps its epoch's logs (``logs.json``: the
``history.csv`` row), so a row lost to a crash between the checkpoint and the
CSV write is rebuilt on ``--resume``.

:func:`load_generators` rebuilds a run's two generators from its ``config.json``
and one of its checkpoints (evaluation reads runs this way).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from virtual_ihc.config import ExperimentConfig
from virtual_ihc.models import build_resnet_generator

logger = logging.getLogger(__name__)

_EPOCH_DIR = re.compile(r"^epoch_(\d{3,})$")
CHECKPOINT_PREFIX = "ckpt"
#: the epoch's logs (losses, validation metrics, learning rate) next to its checkpoint
LOGS_FILE = "logs.json"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as ``(epoch, prefix)``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _EPOCH_DIR.match(entry.name)
        if match and (entry / f"{CHECKPOINT_PREFIX}.index").is_file():
            found.append((int(match.group(1)), entry / CHECKPOINT_PREFIX))
    return sorted(found)


class CheckpointManager:
    """Saves and restores the training state of a ``CycleGAN`` under ``directory``.

    ``save_directory`` (default: ``directory``) is where :meth:`save` writes: the
    non-chief workers of a multi-worker run restore the chief's checkpoints from
    ``directory`` but write their own share of each save (every worker must take
    part) to a throwaway folder.
    """

    def __init__(self, directory: str | Path, model, keep: int = 0, save_directory: str | Path | None = None):
        self.directory = Path(directory)
        self.save_directory = Path(save_directory) if save_directory is not None else self.directory
        self.keep = keep
        self.model = model
        #: why the last epoch was not saved (non-finite state), or None
        self.refused: str | None = None
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        state = dict(
            generator_he_to_ki67=model.generator_he_to_ki67,
            generator_ki67_to_he=model.generator_ki67_to_he,
            discriminator_he=model.discriminator_he,
            discriminator_ki67=model.discriminator_ki67,
            generator_optimizer=model.generator_optimizer,
            discriminator_optimizer=model.discriminator_optimizer,
            pool_he=model.pool_he,
            pool_ki67=model.pool_ki67,
            epoch=self.epoch,
        )
        # checkpoints written before the progress counters existed hold only ``state``
        self.legacy_checkpoint = tf.train.Checkpoint(**state)
        self.checkpoint = tf.train.Checkpoint(**state, train_step_counter=model.train_step_counter,
                                              skipped_steps=model.skipped_steps, next_element=model.next_element)

    def save(self, epoch: int, logs: dict | None = None) -> Path:
        """Write the state after ``epoch`` completed epochs (and its ``logs``); returns the checkpoint prefix."""
        self.save_directory.mkdir(parents=True, exist_ok=True)
        final = self.save_directory / f"epoch_{epoch:03d}"
        tmp = self.save_directory / f".tmp_epoch_{epoch:03d}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.epoch.assign(epoch)
        self.checkpoint.write(str(tmp / CHECKPOINT_PREFIX))
        if logs is not None:
            (tmp / LOGS_FILE).write_text(json.dumps({key: _number(value) for key, value in logs.items()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        logger.info("checkpoint saved: %s", final)
        return final / CHECKPOINT_PREFIX

    def _prune(self) -> None:
        keep = self.keep if self.save_directory == self.directory else 1  # a throwaway folder keeps the last
        if keep > 0:
            for _, prefix in list_checkpoints(self.save_directory)[:-keep]:
                shutil.rmtree(prefix.parent, ignore_errors=True)

    def non_finite_state(self) -> list[str]:
        """Paths of the networks' weights that hold NaN or infinity (empty when all are finite)."""
        networks = (self.model.generator_he_to_ki67, self.model.generator_ki67_to_he,
                    self.model.discriminator_he, self.model.discriminator_ki67)
        return [weight.path for network in networks for weight in network.weights
                if not tf.reduce_all(tf.math.is_finite(weight)).numpy()]

    def latest(self) -> tuple[int, Path] | None:
        checkpoints = list_checkpoints(self.directory)
        return checkpoints[-1] if checkpoints else None

    def restore(self, prefix: str | Path | None = None) -> int:
        """Restore a checkpoint (default: the latest); returns its epoch.

        Raises:
            FileNotFoundError: no complete checkpoint (message names the folder).
        """
        if prefix is None:
            latest = self.latest()
            if latest is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.directory}")
            prefix = latest[1]
        if any(name.startswith("train_step_counter/") for name, _ in tf.train.list_variables(str(prefix))):
            self.checkpoint.read(str(prefix)).assert_existing_objects_matched()
        else:  # an older checkpoint: every step was applied; the caller derives the input position
            self.legacy_checkpoint.read(str(prefix)).assert_existing_objects_matched()
            self.model.train_step_counter.assign(self.model.generator_optimizer.iterations)
        logger.info("restored %s (epoch %d)", prefix, int(self.epoch.numpy()))
        return int(self.epoch.numpy())


def _number(value) -> float | int | str:
    """A log value as JSON: numbers as float (NaN and infinity as strings), the rest as text."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else str(number)


def read_checkpoint_logs(prefix: str | Path) -> dict | None:
    """The logs saved with a checkpoint (``prefix`` from :func:`list_checkpoints`), or ``None``."""
    path = Path(prefix).parent / LOGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def load_generators(run_dir: str | Path, epoch: int | None = None) -> dict[str, keras.Model]:
    """Rebuild both generators of a run from ``config.json`` and a checkpoint (default: the latest).

    Returns ``{"he_to_ki67": model, "ki67_to_he": model}``.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    config = ExperimentConfig.load(config_path)
    generators = {"he_to_ki67": build_resnet_generator(config.generator, "generator_he_to_ki67"),
                  "ki67_to_he": build_resnet_generator(config.generator, "generator_ki67_to_he")}
    checkpoints = dict(list_checkpoints(run_dir / "checkpoints"))
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
    if epoch is None:
        epoch = max(checkpoints)
    if epoch not in checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoint for epoch {epoch} (have {sorted(checkpoints)})")
    checkpoint = tf.train.Checkpoint(generator_he_to_ki67=generators["he_to_ki67"],
                                     generator_ki67_to_he=generators["ki67_to_he"])
    checkpoint.read(str(checkpoints[epoch])).expect_partial()
    return generators
