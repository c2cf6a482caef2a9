"""The pathology guard: consistency measures of the virtual Ki-67 on the validation H&E tiles every epoch.

A CycleGAN can drift into an inverted stain (glass brown, nuclei white) or into
hallucinated positivity (every nucleus brown) while its cycle metrics look fine, because
the cycle can hide the source image in the translation. The guard stains the validation
H&E tiles after every epoch, measures them with :mod:`virtual_ihc.histology.consistency`
against the validation Ki-67 tiles (the reference index and colours), adds the measures
to the epoch logs (``history.csv`` and TensorBoard, prefixed ``val_``), and logs a clear
warning whenever a flag is raised. The last summary is kept for the run's final report.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from virtual_ihc.histology.consistency import (ConsistencyOptions, ConsistencySummary, evaluate_consistency,
                                               reference_from_tiles)
from virtual_ihc.pixels import uint8_to_unit, unit_to_uint8

logger = logging.getLogger(__name__)

#: measures added to the epoch logs (as ``val_<name>``)
GUARD_MEASURES = ("nuclei_f1", "nuclei_dice", "glass_kept", "eosin_ratio", "dab_outside_nuclei",
                  "nuclear_correlation", "virtual_index_he_nuclei", "index_difference")
#: flags that mean the run drifted into one of the two failures the guard exists for
SEVERE_FLAGS = ("inverted", "hallucinated_positivity")


class PathologyGuard(keras.callbacks.Callback):
    """Measures the virtual Ki-67 of ``he_tiles`` after each epoch; warns when it stops being consistent.

    Args:
        he_tiles: validation H&E tiles, ``uint8 (N, H, W, 3)``.
        ki67_tiles: real Ki-67 tiles (the positivity and colour reference), ``uint8 (M, H, W, 3)``.
        options: measure settings and flag thresholds.
        batch_size: tiles per generator call.

    Must come before ``CSVLogger`` / ``TensorBoard`` in the callback list.
    """

    def __init__(self, he_tiles: np.ndarray, ki67_tiles: np.ndarray,
                 options: ConsistencyOptions = ConsistencyOptions(), batch_size: int = 8):
        super().__init__()
        self.he_tiles = np.asarray(he_tiles, np.uint8)
        self.options = options
        self.batch_size = batch_size
        self.reference = reference_from_tiles(list(ki67_tiles), options)
        self.summary: ConsistencySummary | None = None
        self.flagged_epochs: dict[int, list[str]] = {}

    def virtual_ki67(self) -> np.ndarray | None:
        """The current generator's virtual Ki-67 of the validation H&E tiles, uint8 (None if not finite)."""
        generator = self.model.generator_he_to_ki67
        outputs = []
        for start in range(0, len(self.he_tiles), self.batch_size):
            batch = uint8_to_unit(self.he_tiles[start:start + self.batch_size])
            output = np.asarray(generator(batch, training=False), np.float32)
            if not np.isfinite(output).all():
                return None
            outputs.append(unit_to_uint8(output).numpy())
        return np.concatenate(outputs)

    def measure(self) -> ConsistencySummary | None:
        """Stain the validation H&E tiles with the current generator and measure them (None: non-finite output)."""
        virtual = self.virtual_ki67()
        if virtual is None:
            return None
        _, self.summary = evaluate_consistency(self.he_tiles, virtual, self.reference, self.options)
        return self.summary

    def on_epoch_end(self, epoch, logs=None):
        summary = self.measure()
        if summary is None:  # diverged weights: the checkpoint callback stops the run and says so
            logger.warning("epoch %d: pathology guard skipped: the generator's output is not finite", epoch + 1)
            return
        if logs is not None:
            for name in GUARD_MEASURES:
                if name in summary.values:
                    logs[f"val_{name}"] = float(summary.values[name])
        if summary.flags:
            self.flagged_epochs[epoch + 1] = list(summary.flags)
            severe = [flag for flag in summary.flags if flag in SEVERE_FLAGS]
            kind = " and ".join(flag.replace("_", " ").upper() for flag in severe) if severe else "inconsistent stain"
            logger.warning("epoch %d: pathology guard: %s. %s", epoch + 1, kind, summary.verdict())
        else:
            logger.info("epoch %d: pathology guard: %s", epoch + 1, summary.verdict())

