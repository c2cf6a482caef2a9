"""A trained generator loaded from its exported SavedModel, as a tile function.

Only the SavedModel's ``serving_default`` signature is used (uint8 in, uint8
out, mirror padding to a multiple of 8 inside), so ``virtual-ihc stain`` runs
exactly what TensorFlow Serving would serve.

Asked for another precision than the export's (``--precision bfloat16`` with a
float32 export), the run's ``.keras`` generator beside the export
(``RUN/export/generator_he_to_ki67.keras``) is loaded and wrapped in the same
serving functions, computing in that precision
(:func:`virtual_ihc.export.serving_module`): the result equals an export made
in that precision.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras
import numpy as np

import virtual_ihc.models  # noqa: F401  (registers the generator's custom layers for .keras files)
from virtual_ihc.errors import InputError
from virtual_ihc.export import PRECISIONS, read_model_metadata, serving_module

logger = logging.getLogger(__name__)

#: the export a run directory holds for H&E -> Ki-67 staining
DEFAULT_DIRECTION = "he_to_ki67"


class ModelNotFoundError(InputError, FileNotFoundError):
    """``--model`` names neither a SavedModel nor a run directory with one."""


def resolve_saved_model(path: str | os.PathLike, direction: str = DEFAULT_DIRECTION) -> Path:
    """The SavedModel folder for ``path``: the folder itself, ``path/direction`` or ``path/export/direction``.

    Raises:
        ModelNotFoundError: none of them holds a ``saved_model.pb``; the message lists where it looked.
    """
    path = Path(path)
    candidates = [path, path / direction, path / "export" / direction]
    for candidate in candidates:
        if (candidate / "saved_model.pb").is_file():
            return candidate
    raise ModelNotFoundError(f"no SavedModel (saved_model.pb) in {', '.join(map(str, candidates))}; "
                             f"pass RUN/export/{direction} of a trained run")


def keras_generator_path(saved_model_dir: str | os.PathLike, direction: str = DEFAULT_DIRECTION) -> Path:
    """Where an export's ``.keras`` generator is: ``generator_<direction>.keras`` beside the SavedModel."""
    return Path(saved_model_dir).parent / f"generator_{direction}.keras"


def resolve_model(path: str | os.PathLike, direction: str = DEFAULT_DIRECTION,
                  precision: str | None = None) -> tuple[Path, str, Path | None]:
    """Where :class:`StainModel` loads ``path`` from, in ``precision``, checked without loading it.

    Returns:
        ``(saved_model_dir, precision, keras_path)``: ``keras_path`` is the
        ``.keras`` generator to rebuild when ``precision`` is not the export's,
        else ``None``.

    Raises:
        ModelNotFoundError: no SavedModel, or no ``.keras`` generator where one is needed.
        ValueError: unknown precision.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    saved_model_dir = resolve_saved_model(path, direction)
    exported = read_model_metadata(saved_model_dir).get("precision", "float32")
    if precision is None or precision == exported:
        return saved_model_dir, exported, None
    keras_path = keras_generator_path(saved_model_dir, direction)
    if not keras_path.is_file():
        raise ModelNotFoundError(f"{saved_model_dir} is a {exported} export and there is no {keras_path} to "
                                 f"rebuild in {precision}: export in {precision} (export_generators(..., "
                                 f"precision={precision!r})) or keep the run's .keras generator beside the export")
    return saved_model_dir, precision, keras_path


class StainModel:
    """Calls an exported generator on batches of ``uint8`` RGB tiles.

    Args:
        path: SavedModel folder or run folder (see :func:`resolve_saved_model`).
        direction: the export to use in a run folder.
        precision: ``"float32"`` or ``"bfloat16"``; ``None`` = the export's own.
            Another precision than the export's rebuilds the ``.keras`` generator
            beside the export in that precision (:func:`resolve_model`).

    Attributes:
        path: the SavedModel folder.
        metadata: the export's metadata (``{}`` for exports that predate it).
        precision: what the generator computes in.
    """

    def __init__(self, path: str | os.PathLike, direction: str = DEFAULT_DIRECTION, precision: str | None = None):
        import tensorflow as tf

        self.path, self.precision, keras_path = resolve_model(path, direction, precision)
        self.metadata = read_model_metadata(self.path)
        self._tf = tf
        if keras_path is None:
            self._serve = tf.saved_model.load(str(self.path)).signatures["serving_default"]
            logger.info("loaded %s (metadata: %s)", self.path, self.metadata or "none")
        else:
            self._module = _rebuilt_serving_module(keras_path, self.precision)  # its functions hold it weakly
            self._serve = self._module.serve

    @property
    def mpp(self) -> float | None:
        """µm/px of the training images if the export recorded it."""
        return self.metadata.get("mpp")

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """``uint8 (N, H, W, 3)`` -> ``uint8 (N, H, W, 3)``; H, W >= 16, any (not only multiples of 8)."""
        return self._serve(images=self._tf.constant(tiles))["images"].numpy()


def _rebuilt_serving_module(keras_path: Path, precision: str):
    """The serving functions of the ``.keras`` generator computing in ``precision``."""
    module = serving_module(keras.saving.load_model(keras_path, compile=False), precision)
    logger.info("loaded %s, computing in %s", keras_path, precision)
    return module
