"""Shared test setup: quiet TensorFlow, two logical CPU devices, tiny configurations.

(pytest puts this folder on ``sys.path``, so tests import helpers from ``tests_support``.)

Two logical CPU devices are configured before TensorFlow initialises its
devices, so that a MirroredStrategy test has two real replicas. Single-device
code still runs on ``/cpu:0`` as usual.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
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


# small synthetic slides written as pyramidal TIFFs (slides, data_prep and stain tests)

GLASS = 245
TISSUE = (200, 110, 160)


def rectangle_slide_image(height: int, width: int, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """``uint8`` RGB glass with one textured pink tissue rectangle ``box = (x0, y0, x1, y1)``."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), GLASS, np.uint8)
    x0, y0, x1, y1 = box
    noise = rng.integers(-12, 13, (y1 - y0, x1 - x0, 1))
    image[y0:y1, x0:x1] = np.clip(np.array(TISSUE) + noise, 0, 255).astype(np.uint8)
    return image


@pytest.fixture
def rectangle_image():
    """:func:`rectangle_slide_image` (a fixture, so test modules need not import this conftest)."""
    return rectangle_slide_image


@pytest.fixture
def make_slide(tmp_path):
    """``make_slide(name, image, mpp=0.25)`` writes a pyramidal tiled TIFF under ``tmp_path``."""

    def make(name: str, image: np.ndarray, mpp: float | None = 0.25, **kwargs):
        from virtual_ihc.slides.synthetic_slides import write_image_as_slide

        return write_image_as_slide(tmp_path / name, image, mpp=mpp, **kwargs)

    return make
