"""Shared test setup: quiet TensorFlow, two logical CPU devices, tiny configurations.

(pytest puts this folder on ``sys.path``, so tests import helpers from ``tests_support``.)

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


@pytest.fixture
def tiny_config(tmp_path):
    """Factory: ``tiny_config(out=..., train={...})`` -> resolved ``ExperimentConfig``."""
    from tests_support import tiny_config_for

    return lambda out=None, **sections: tiny_config_for(out or tmp_path / "run", **sections)
