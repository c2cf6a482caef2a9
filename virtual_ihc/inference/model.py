"""A trained generator loaded from its exported SavedModel, as a tile function.

Only the SavedModel's ``serving_default`` signature is used (uint8 in, uint8
out, mirror padding to a multiple of 8 inside), so ``virtual-ihc stain`` runs
exactly what TensorFlow Serving would serve.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from virtual_ihc.export import read_model_metadata

logger = logging.getLogger(__name__)

#: the export a run directory holds for H&E -> Ki-67 staining
DEFAULT_DIRECTION = "he_to_ki67"


class ModelNotFoundError(FileNotFoundError):
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


class StainModel:
    """Calls an exported generator on batches of ``uint8`` RGB tiles.

    Attributes:
        path: the SavedModel folder.
        metadata: the export's metadata (``{}`` for exports that predate it).
    """

    def __init__(self, path: str | os.PathLike, direction: str = DEFAULT_DIRECTION):
        import tensorflow as tf

        self.path = resolve_saved_model(path, direction)
        self.metadata = read_model_metadata(self.path)
        self._tf = tf
        self._serve = tf.saved_model.load(str(self.path)).signatures["serving_default"]
        logger.info("loaded %s (metadata: %s)", self.path, self.metadata or "none")

    @property
    def mpp(self) -> float | None:
        """µm/px of the training images if the export recorded it."""
        return self.metadata.get("mpp")

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """``uint8 (N, H, W, 3)`` -> ``uint8 (N, H, W, 3)``; H, W >= 16, any (not only multiples of 8)."""
        return self._serve(images=self._tf.constant(tiles))["images"].numpy()
