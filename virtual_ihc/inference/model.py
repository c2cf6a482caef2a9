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

Slide-consistent normalisation (:mod:`virtual_ihc.inference.slide_statistics`) needs the
generator's instance-norm statistics, which the SavedModel signature does not expose:
:meth:`StainModel.statistics_module` loads the ``.keras`` generator beside the export and
wraps it in :class:`StatisticsServingModule` (measure the statistics of uint8 tiles; stain
uint8 tiles with given statistics), with the same padding and precision as the signature.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import virtual_ihc.models  # noqa: F401  (registers the generator's custom layers for .keras files)
from virtual_ihc.errors import InputError
from virtual_ihc.export import (PRECISIONS, GeneratorServingModule, generator_in_precision, read_model_metadata,
                                serving_module)
from virtual_ihc.models.instance_statistics import given_statistics_model, statistics_model

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
        self.direction = direction
        self.metadata = read_model_metadata(self.path)
        self._tf = tf
        self._statistics: StatisticsServingModule | None = None
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

    @property
    def keras_path(self) -> Path:
        """Where the export's ``.keras`` generator is (it may be missing: older exports)."""
        return keras_generator_path(self.path, self.direction)

    def statistics_module(self) -> "StatisticsServingModule":
        """The ``.keras`` generator's :class:`StatisticsServingModule`, in this model's precision (loaded once).

        Raises:
            ModelNotFoundError: there is no ``.keras`` generator beside the export.
        """
        if self._statistics is None:
            if not self.keras_path.is_file():
                raise ModelNotFoundError(f"{self.keras_path}: no .keras generator beside the export {self.path}, "
                                         f"which slide-consistent normalisation needs (use --normalization tile)")
            generator = keras.saving.load_model(self.keras_path, compile=False)
            self._statistics = StatisticsServingModule(generator_in_precision(generator, self.precision))
            logger.info("loaded %s for slide-consistent normalisation, computing in %s", self.keras_path,
                        self.precision)
        return self._statistics


class StatisticsServingModule(GeneratorServingModule):
    """A generator's serving functions plus its two uses for slide-consistent normalisation.

    - :meth:`measure`: uint8 ``[N, H, W, 3]`` -> ``{"means", "variances"}``, float32 ``[N, C]``:
      what each instance norm measured (:func:`~virtual_ihc.models.instance_statistics.statistics_model`);
    - :meth:`stain_given`: uint8 tiles and float32 ``[N, C]`` statistics -> ``{"images": uint8}``.

    Both pad and crop as the serving signature does.
    """

    def __init__(self, generator):
        super().__init__(generator)
        self.measuring = statistics_model(generator)
        self.given = given_statistics_model(generator)

    @property
    def statistics_size(self) -> int:
        """``C``: channels of all instance-norm layers together."""
        return int(self.given.inputs[1].shape[-1])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def measure(self, images):
        """uint8 ``[N, H, W, 3]`` -> ``{"means": float32 [N, C], "variances": float32 [N, C]}``."""
        means, variances = self.measuring(self.padded_input(images), training=False)
        return {"means": means, "variances": variances}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"),
                                  tf.TensorSpec([None, None], tf.float32, name="means"),
                                  tf.TensorSpec([None, None], tf.float32, name="variances")])
    def stain_given(self, images, means, variances):
        """uint8 ``[N, H, W, 3]`` and float32 ``[N, C]`` statistics -> ``{"images": uint8 [N, H, W, 3]}``."""
        output = self.given([self.padded_input(images), means, variances], training=False)
        return {"images": self.cropped_output(output, images)}

    def measure_tiles(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(N, C)`` means and variances of uint8 ``(N, H, W, 3)`` tiles."""
        result = self.measure(tf.constant(tiles))
        return result["means"].numpy(), result["variances"].numpy()

    def stain_tiles(self, tiles: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` tiles stained with the given float32 ``(N, C)`` statistics."""
        return self.stain_given(tf.constant(tiles), tf.constant(means, tf.float32),
                                tf.constant(variances, tf.float32))["images"].numpy()


def _rebuilt_serving_module(keras_path: Path, precision: str):
    """The serving functions of the ``.keras`` generator computing in ``precision``."""
    module = serving_module(keras.saving.load_model(keras_path, compile=False), precision)
    logger.info("loaded %s, computing in %s", keras_path, precision)
    return module
