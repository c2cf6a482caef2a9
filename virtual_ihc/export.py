"""Export trained generators for serving and for reloading in Keras.

Each direction is written twice under ``RUN/export/``:

- ``he_to_ki67/`` (``ki67_to_he/``): a TensorFlow SavedModel whose
  ``serving_default`` signature maps ``images``: uint8 ``[N, H, W, 3]`` RGB to
  ``{"images": uint8 [N, H, W, 3]}``. Loadable with plain
  ``tf.saved_model.load`` (or TensorFlow Serving) without this package. H and W
  need not be multiples of the generator's size multiple (``2 ** num_downsamplings``,
  8 for the paper's generator): the signature mirror-pads to the next multiple
  and crops the result back; images smaller than twice the multiple are
  rejected; a batch of 0 images returns an empty batch.
  A second signature, ``serve_encoded``, maps ``image_bytes``: string ``[N]``
  (encoded PNG, JPEG, BMP or GIF, any sizes) to ``{"png_bytes": string [N]}``
  (the stained images as PNG); the ``_bytes`` suffix makes TensorFlow Serving's
  REST API exchange them as ``{"b64": ...}``. See :data:`SERVING_ERRORS` for
  what each kind of bad input does.
- ``he_to_ki67/assets.extra/virtual_ihc.json``: :func:`model_metadata` (size
  multiple, minimum size, signatures, training tile size and, when known, µm/px) and the
  export's ``precision``, read by ``virtual-ihc stain``; TensorFlow Serving
  ignores ``assets.extra``.
- ``generator_he_to_ki67.keras``: the Keras model, for ``keras.saving.load_model``
  (import ``virtual_ihc`` first so that its custom layers are registered).

The SavedModel computes in float32, or with ``precision="bfloat16"`` under
Keras' ``mixed_bfloat16`` policy (:func:`generator_in_precision`: float32
weights, bfloat16 convolutions for CPUs with AVX512-BF16/AMX and recent GPUs,
instance norm statistics and the output layer in float32); the signatures are
the same uint8 in, uint8 out either way.

Writes go to a temporary name and are renamed when complete.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from virtual_ihc.pixels import padding_to_multiple, uint8_to_unit, unit_to_uint8

logger = logging.getLogger(__name__)

DIRECTIONS = ("he_to_ki67", "ki67_to_he")
#: compute precision of an export -> Keras dtype policy of its layers (output layers stay float32)
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
#: where the SavedModel keeps :func:`model_metadata` (``assets.extra`` is ignored by TensorFlow Serving)
METADATA_PATH = Path("assets.extra") / "virtual_ihc.json"
METADATA_VERSION = 1

#: what the serving signatures do with bad inputs (documented in docs/stain.md; tested in tests/test_serving.py)
SERVING_ERRORS = {
    "dtype other than uint8 (serving_default)":
        "InvalidArgumentError '... was expected to be a uint8 tensor ...' before running",
    "rank other than 4 or channels other than 3 (serving_default)":
        "InvalidArgumentError 'Shape of tensor images [...] is not compatible with expected shape [?,?,?,3]'",
    "height or width not a multiple of 8 (2 ** num_downsamplings)":
        "accepted: mirror-padded to the next multiple and cropped back",
    "height or width below 16 pixels (twice the multiple)":
        "InvalidArgumentError 'images must be at least 16 pixels high and wide'",
    "a batch of 0 images (serving_default)": "accepted: an empty uint8 batch of the same shape",
    "undecodable bytes (serve_encoded)": "InvalidArgumentError from the image decoder",
    "grey or RGBA encoded images (serve_encoded)": "accepted: grey is repeated to RGB, alpha is dropped",
}


def size_multiple_of(generator: keras.Model) -> int:
    """The size multiple a generator needs: the product of its strided (downsampling) conv strides.

    ``2 ** num_downsamplings`` for :func:`~virtual_ihc.models.build_resnet_generator`.
    """
    multiple = 1
    for layer in generator.layers:
        if hasattr(layer, "layers"):  # a nested model
            multiple *= size_multiple_of(layer)
        elif isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.Conv2DTranspose):
            multiple *= int(layer.strides[0])
    return multiple


class GeneratorServingModule(tf.Module):
    """A ``tf.Module`` wrapping a generator with uint8-in, uint8-out serving functions.

    ``size_multiple`` defaults to the generator's own (:func:`size_multiple_of`); ``min_size``, the
    smallest side served, is twice it (a bottleneck of at least 2 pixels for reflection padding).
    """

    def __init__(self, generator: keras.Model, size_multiple: int | None = None):
        super().__init__(name="virtual_ihc_generator")
        self.generator = generator
        self.size_multiple = size_multiple or size_multiple_of(generator)
        self.min_size = 2 * self.size_multiple

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        """uint8 ``[N, H, W, 3]`` RGB -> ``{"images": uint8 [N, H, W, 3]}``."""
        # a loaded signature does not check the rank or channels of its input at run time
        images = tf.ensure_shape(images, [None, None, None, 3])
        return {"images": tf.cond(tf.shape(images)[0] > 0, lambda: self._stain(images),
                                  lambda: tf.zeros_like(images))}

    def _stain(self, images):
        padded = self.padded_input(images)
        return self.cropped_output(self.generator(padded, training=False), images)

    def padded_input(self, images):
        """uint8 ``[N, H, W, 3]`` -> float ``[N, H', W', 3]`` in [-1, 1], mirror-padded to the size multiple."""
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        # the bottleneck must be at least 2 pixels for the residual blocks' reflection padding
        tf.debugging.assert_greater_equal(
            tf.minimum(height, width), self.min_size,
            message=f"images must be at least {self.min_size} pixels high and wide")
        pad_h, pad_w = padding_to_multiple(height, width, self.size_multiple)
        return tf.pad(uint8_to_unit(images), [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="REFLECT")

    @staticmethod
    def cropped_output(output, images):
        """The generator's float output for :meth:`padded_input` of ``images``, cropped back, as uint8."""
        return unit_to_uint8(output[:, :tf.shape(images)[1], :tf.shape(images)[2], :])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_encoded(self, image_bytes):
        """string ``[N]`` encoded PNG/JPEG/BMP/GIF -> ``{"png_bytes": string [N]}`` PNG RGB.

        Images are processed one at a time, so they may differ in size.
        """

        def stain_one(encoded):
            image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
            stained = self.serve(image[tf.newaxis])["images"][0]
            return tf.io.encode_png(stained)

        return {"png_bytes": tf.map_fn(stain_one, image_bytes, fn_output_signature=tf.string)}


def rest_request_body(images, signature_name: str = "serve_encoded") -> dict:
    """The JSON body of a TensorFlow Serving REST ``:predict`` request for one of the signatures.

    Args:
        images: for ``"serve_encoded"``, a sequence of encoded images (PNG/JPEG bytes), sent
            as ``{"b64": ...}`` (TensorFlow Serving's form for binary inputs); for
            ``"serving_default"``, ``uint8 (N, H, W, 3)`` RGB, sent as nested lists
            (one ``[H, W, 3]`` list per instance; large: prefer ``serve_encoded`` over REST).
        signature_name: ``"serve_encoded"`` or ``"serving_default"``.

    Returns:
        ``{"signature_name": ..., "instances": [...]}``, ready for ``json.dumps`` and a POST to
        ``http://HOST:8501/v1/models/NAME:predict``.
    """
    if signature_name == "serve_encoded":
        instances = [{"b64": base64.b64encode(bytes(data)).decode("ascii")} for data in images]
    elif signature_name == "serving_default":
        import numpy as np

        array = np.asarray(images)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"serving_default takes uint8 [N, H, W, 3] images, got {array.dtype} {array.shape}")
        instances = array.tolist()
    else:
        raise ValueError(f"signature_name must be 'serve_encoded' or 'serving_default', got {signature_name!r}")
    return {"signature_name": signature_name, "instances": instances}


def generator_in_precision(generator: keras.Model, precision: str) -> keras.Model:
    """``generator`` computing in ``precision`` (a key of :data:`PRECISIONS`), with the same weights.

    Every layer but the model's output layers gets the precision's dtype policy;
    output layers keep theirs (the generator's ``tanh`` head is float32 under
    any policy). Returns ``generator`` itself when its layers already have those
    policies, else a functional copy (``keras.models.clone_model``) with the
    weights copied.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    policy = PRECISIONS[precision]
    outputs = {layer.name for layer in generator.layers if any(layer.output is tensor for tensor in generator.outputs)}
    if all(layer.dtype_policy.name == policy for layer in generator.layers
           if layer.name not in outputs and not isinstance(layer, keras.layers.InputLayer)):
        return generator

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name not in outputs:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    converted = keras.models.clone_model(generator, clone_function=clone_layer)
    converted.set_weights(generator.get_weights())
    return converted


def serving_module(generator: keras.Model, precision: str = "float32") -> GeneratorServingModule:
    """The serving functions of ``generator`` computing in ``precision`` (what a SavedModel export holds)."""
    return GeneratorServingModule(generator_in_precision(generator, precision))


def _atomic_directory(final: Path):
    """A temporary sibling directory to write into; ``_commit`` renames it to ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp", dir=final.parent))


def _commit(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    os.replace(tmp, final)


def model_metadata(direction: str | None = None, tile_size: int | None = None,
                   mpp: float | None = None) -> dict:
    """What ``virtual-ihc stain`` needs to know about an exported generator.

    Args:
        direction: ``"he_to_ki67"`` or ``"ki67_to_he"``.
        tile_size: side of the tiles the generator was trained on (pixels).
        mpp: µm per pixel of the training images, so that slides are read at the
            model's magnification (``None`` = unknown: slides are read at level 0).
    """
    return {"format_version": METADATA_VERSION, "direction": direction,
            "signatures": {"serving_default": "images: uint8 [N, H, W, 3] -> images: uint8 [N, H, W, 3]",
                           "serve_encoded": "image_bytes: string [N] -> png_bytes: string [N]"},
            "tile_size": tile_size, "mpp": mpp}


def read_model_metadata(saved_model_dir: str | Path) -> dict:
    """The export's :func:`model_metadata`, or ``{}`` for exports written before it existed."""
    path = Path(saved_model_dir) / METADATA_PATH
    return json.loads(path.read_text()) if path.is_file() else {}


def export_saved_model(generator: keras.Model, directory: str | Path, metadata: dict | None = None,
                       precision: str = "float32") -> Path:
    """Write ``generator`` as a SavedModel with the ``serving_default`` and ``serve_encoded`` signatures.

    ``metadata`` (default: :func:`model_metadata` with nothing known) goes to
    ``assets.extra/virtual_ihc.json``, with ``"precision": precision`` and the generator's size
    multiple and minimum size added.

    Args:
        precision: ``"float32"``, or ``"bfloat16"`` for signatures that compute
            under ``mixed_bfloat16`` (:func:`generator_in_precision`).
    """
    module = serving_module(generator, precision)
    final = Path(directory)
    tmp = _atomic_directory(final)
    try:
        metadata = {**(metadata or model_metadata()), "precision": precision,
                    "size_multiple": module.size_multiple, "min_size": module.min_size}
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve,
                                                          "serve_encoded": module.serve_encoded})
        (tmp / METADATA_PATH).parent.mkdir(parents=True, exist_ok=True)
        (tmp / METADATA_PATH).write_text(json.dumps(metadata, indent=2))
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


def export_generators(generators: dict[str, keras.Model], export_dir: str | Path,
                      tile_size: int | None = None, mpp: float | None = None,
                      precision: str = "float32") -> dict[str, Path]:
    """Export ``{"he_to_ki67": model, "ki67_to_he": model}`` under ``export_dir``; returns the paths.

    ``tile_size`` and ``mpp`` go to each SavedModel's :func:`model_metadata`; the
    SavedModels compute in ``precision`` (:func:`export_saved_model`), the
    ``.keras`` files hold the generators as they are.
    """
    export_dir = Path(export_dir)
    paths = {}
    for direction, generator in generators.items():
        metadata = model_metadata(direction, tile_size=tile_size, mpp=mpp)
        paths[direction] = export_saved_model(generator, export_dir / direction, metadata, precision)
        paths[f"{direction}_keras"] = export_keras(generator, export_dir / f"generator_{direction}.keras")
        logger.info("exported %s to %s", direction, paths[direction])
    return paths
