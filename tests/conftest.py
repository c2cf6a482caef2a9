"""Shared test setup: quiet TensorFlow, two logical CPU devices, tiny configurations.

Two logical CPU devices are configured before TensorFlow initialises its
devices, so that a MirroredStrategy test has two real replicas. Single-device
code still runs on ``/cpu:0`` as usual.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
except RuntimeError:  # devices already initialised by an earlier import
    pass


def tiny_overrides(out, **sections) -> dict:
    """Command-line-style overrides for a tiny, fast run writing to ``out``."""
    values = {
        "out": str(out),
        "generator": {"base_filters": 4, "num_residual_blocks": 1},
        "discriminator": {"base_filters": 8, "num_layers": 1},
        "data": {"sample_train_tiles": 12, "sample_val_tiles": 4, "sample_tile_size": 40, "tile_size": 40,
                 "tile_overlap": 20, "crop_size": 32, "max_val_tiles": 4},
        "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "pool_size": 4, "verbose": "0",
                  "sample_images": 1},
    }
    for section, options in sections.items():
        if isinstance(options, dict):
            values.setdefault(section, {}).update(options)
        else:
            values[section] = options
    return values


@pytest.fixture
def tiny_config(tmp_path):
    """Factory: ``tiny_config(out=..., train={...})`` -> resolved ``ExperimentConfig``."""
    from virtual_ihc.config import resolve_config

    def make(out=None, **sections):
        return resolve_config(cli_values=tiny_overrides(out or tmp_path / "run", **sections))

    return make
