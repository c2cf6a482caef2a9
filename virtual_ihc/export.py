"""Export trained generators for serving and for reloading in Keras.

Each direction is written twice under ``RUN/export/``:

- ``he_to_ki67/`` (``ki67_to_he/``): a TensorFlow SavedModel whose
  ``serving_default`` signature maps ``images``: uint8 ``[N, H, W, 3]`` RGB to
  ``{"images": uint8 [N, H, W, 3]}``. Loadable with plain
  ``tf.saved_model.load`` (or TensorFlow Serving) without this package. H and W
  need not be multiples of 8: the signature mirror-pads to the next multiple
  and crops the result back; images smaller than 8 pixels are rejected.
- ``generator_he_to_ki67.keras``: the Keras model, for ``keras.saving.load_model``
  (import ``virtual_ihc`` first so that its custom layers are registered).

Writes go to a temporary name and are renamed when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

#: the generators' required size multiple for the default 3 downsamplings
SIZE_MULTIPLE = 8
DIRECTIONS = ("he_to_ki67", "ki67_to_he")


def uint8_to_unit(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def unit_to_uint8(images: tf.Tensor) -> tf.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded."""
    return tf.cast(tf.round(tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


class GeneratorServingModule(tf.Module):
    """A ``tf.Module`` wrapping a generator with uint8-in, uint8-out serving functions."""

    def __init__(self, generator: keras.Model, size_multiple: int = SIZE_MULTIPLE):
        super().__init__(name="virtual_ihc_generator")
        self.generator = generator
        self.size_multiple = size_multiple

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        """uint8 ``[N, H, W, 3]`` RGB -> ``{"images": uint8 [N, H, W, 3]}``."""
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        tf.debugging.assert_greater_equal(
            tf.minimum(height, width), self.size_multiple,
            message=f"images must be at least {self.size_multiple} pixels high and wide")
        pad_h = (-height) % self.size_multiple
        pad_w = (-width) % self.size_multiple
        padded = tf.pad(uint8_to_unit(images), [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")
        output = self.generator(padded, training=False)[:, :height, :width, :]
        return {"images": unit_to_uint8(output)}


def _atomic_directory(final: Path):
    """A temporary sibling directory to write into; ``_commit`` renames it to ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))


def _commit(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


def export_saved_model(generator: keras.Model, directory: str | Path) -> Path:
    """Write ``generator`` as a SavedModel with the uint8 ``serving_default`` signature."""
    final = Path(directory)
    tmp = _atomic_directory(final)
    try:
        module = GeneratorServingModule(generator)
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        _commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_keras(generator: keras.Model, path: str | Path) -> Path:
    """Write ``generator`` as a ``.keras`` file (atomically)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp.keras")
    try:
        generator.save(str(tmp))
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def export_generators(generators: dict[str, keras.Model], export_dir: str | Path) -> dict[str, Path]:
    """Export ``{"he_to_ki67": model, "ki67_to_he": model}`` under ``export_dir``; returns the paths."""
    export_dir = Path(export_dir)
    paths = {}
    for direction, generator in generators.items():
        paths[direction] = export_saved_model(generator, export_dir / direction)
        paths[f"{direction}_keras"] = export_keras(generator, export_dir / f"generator_{direction}.keras")
        logger.info("exported %s to %s", direction, paths[direction])
    return paths
