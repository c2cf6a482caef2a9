"""Pretrained-weight selection shared by every feature extractor (VGG19, ResNet-18, InceptionV3).

A weights option is one of:

- ``"imagenet"``: the published ImageNet weights, downloaded once by Keras and
  cached on disk (``~/.keras/models``; ``KERAS_HOME`` moves it);
- ``"none"``: random initialisation, for offline smoke runs and tests; results
  are then not comparable with published figures, and the callers say so;
- a path to a local weights file (``.h5`` / ``.weights.h5``), for offline machines.
"""

from __future__ import annotations

from pathlib import Path

from virtual_ihc.errors import InputError


class WeightsError(InputError, OSError):
    """Weights the user chose cannot be loaded (download failed, not a weights file); the message says what to pass."""


def resolve_weights(spec: str | None, option: str = "--weights") -> str | None:
    """Turn a weights option into the ``weights=`` argument of a Keras application.

    Returns ``"imagenet"``, ``None`` (random) or the absolute path of a local file.

    Raises:
        FileNotFoundError: a path that does not exist (message names the option).
    """
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec).lower() == "imagenet":
        return "imagenet"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option}: weights file not found: {path} "
                                "(use 'imagenet', 'none' or an existing .h5 file)")
    return str(path.resolve())


def describe_weights(resolved: str | None) -> str:
    """Human-readable provenance of resolved weights, for reports."""
    if resolved is None:
        return "random (untrained) weights: scores are not comparable with published figures"
    return "ImageNet weights" if resolved == "imagenet" else f"weights from {resolved}"
