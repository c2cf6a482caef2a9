"""Run directories written before the package restructure (issue 19) still load.

``fixtures/run_before_issue19.tar.gz`` is a tiny run (2 base filters, 2 downsamplings, one epoch of
one step) written by the code as it was before the restructure: ``config.json``, ``history.csv``,
the checkpoint of epoch 1, the H&E -> Ki-67 SavedModel and its ``.keras`` generator.
"""

import tarfile
from pathlib import Path

import numpy as np
import pytest

from virtual_ihc.evaluation.models import run_entries
from virtual_ihc.inference.model import StainModel
from virtual_ihc.pixels import uint8_to_unit, unit_to_uint8
from virtual_ihc.training.checkpoints import load_generators

ARCHIVE = Path(__file__).parent / "fixtures" / "run_before_issue19.tar.gz"


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("old_run")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(run_dir, filter="data")
    return run_dir


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)


def test_the_generators_of_an_old_checkpoint_equal_its_export(old_run, tiles):
    generators = load_generators(old_run)
    assert set(generators) == {"he_to_ki67", "ki67_to_he"}
    from_checkpoint = unit_to_uint8(generators["he_to_ki67"](uint8_to_unit(tiles), training=False)).numpy()
    from_export = StainModel(old_run)(tiles)
    assert from_export.shape == tiles.shape and from_export.dtype == np.uint8
    # eager Keras and the traced signature round a few pixels differently (at most 1 grey level)
    assert np.abs(from_checkpoint.astype(int) - from_export).max() <= 1


def test_an_old_export_records_its_metadata_and_rebuilds_from_its_keras_file(old_run, tiles):
    model = StainModel(old_run)
    assert model.precision == "float32" and model.metadata["size_multiple"] == 4
    rebuilt = StainModel(old_run, precision="bfloat16")
    assert rebuilt.precision == "bfloat16" and rebuilt(tiles).shape == tiles.shape


def test_evaluation_reads_an_old_run_from_its_checkpoint(old_run, tiles):
    (checkpoint,) = run_entries(f"old={old_run}", "checkpoint")
    assert (checkpoint.name, checkpoint.variant, checkpoint.epoch) == ("old", "+skip+SSIM", 1)
    stained = checkpoint.load().he_to_ki67([], tiles)
    assert np.abs(stained.astype(int) - StainModel(old_run)(tiles)).max() <= 1

