"""The pathology guard: measures after each epoch, warnings on inversion or hallucination, history columns."""

import csv
import logging

import keras
import numpy as np
import pytest

from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.training.guard import GUARD_MEASURES, PathologyGuard


class _Holder:
    """Stands in for the CycleGAN: the guard only reads ``generator_he_to_ki67``."""

    def __init__(self, generator):
        self.generator_he_to_ki67 = generator


def _generator(function) -> keras.Model:
    images = keras.Input((None, None, 3))
    return keras.Model(images, keras.layers.Lambda(function)(images))


@pytest.fixture(scope="module")
def tiles():
    return (sample_tiles("he", 4, 96, seed=1, nucleus_radius=5.0),
            sample_tiles("ki67", 4, 96, seed=2, nucleus_radius=5.0))


def _guard_after_one_epoch(tiles, function, caplog):
    he, ki67 = tiles
    guard = PathologyGuard(he, ki67)
    guard.set_model(_Holder(_generator(function)))
    logs = {}
    with caplog.at_level(logging.INFO, logger="virtual_ihc.training.guard"):
        guard.on_epoch_end(0, logs)
    return guard, logs


def test_an_inverting_generator_is_flagged_with_a_warning(tiles, caplog):
    guard, logs = _guard_after_one_epoch(tiles, lambda x: -x, caplog)
    assert "inverted" in guard.summary.flags
    assert guard.flagged_epochs[1] == guard.summary.flags
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings and "INVERTED" in warnings[0].getMessage()
    assert logs["val_nuclear_correlation"] < 0


def test_measures_go_into_the_epoch_logs(tiles, caplog):
    guard, logs = _guard_after_one_epoch(tiles, lambda x: x, caplog)
    for name in GUARD_MEASURES:
        assert f"val_{name}" in logs, name
    assert logs["val_nuclei_f1"] == pytest.approx(1.0)  # the identity keeps every nucleus ...
    assert "eosin_left" in guard.summary.flags  # ... but is no Ki-67
    assert "inverted" not in guard.summary.flags


def test_training_run_records_the_guard_in_history_and_result(tiny_config):
    from virtual_ihc.training.trainer import run_training

    result = run_training(tiny_config(train={"epochs": 1, "steps_per_epoch": 2}))
    with open(result.run_dir / "history.csv") as handle:
        header = next(csv.reader(handle))
    assert {f"val_{name}" for name in ("nuclei_f1", "glass_kept", "virtual_index_he_nuclei")} <= set(header)
    assert result.consistency is not None and "nuclei_f1" in result.consistency.values
    assert set(result.flagged_epochs) <= {1}


def test_the_guard_can_be_switched_off(tiny_config):
    from virtual_ihc.training.trainer import run_training

    result = run_training(tiny_config(train={"epochs": 1, "steps_per_epoch": 1, "pathology_guard": False}))
    with open(result.run_dir / "history.csv") as handle:
        header = next(csv.reader(handle))
    assert not any(column.startswith("val_nuclei") for column in header)
    assert result.consistency is None and result.flagged_epochs == {}


def test_reference_index_comes_from_the_real_ki67_tiles(tiles):
    he, ki67 = tiles
    guard = PathologyGuard(he, ki67)
    assert 0.1 < guard.reference.index < 0.5  # the sample data's positive fraction is 0.3
    assert np.isfinite(guard.reference.stains.mean).all()


def test_non_finite_generator_output_is_skipped_with_a_warning(tiles, caplog):
    guard, logs = _guard_after_one_epoch(tiles, lambda x: x * float("nan"), caplog)
    assert guard.summary is None and not any(key.startswith("val_nuclei") for key in logs)
    assert any("not finite" in record.getMessage() for record in caplog.records)
