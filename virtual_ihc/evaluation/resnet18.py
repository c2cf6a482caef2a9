"""ResNet-18 (He et al., 2016) in Keras, laid out like torchvision's, for the P-hash.

The P-hash of the paper uses torchvision's ImageNet ResNet-18. Keras ships no
ResNet-18 and keras-hub presets download from Kaggle, so the network is built
here with torchvision's exact padding and layer names (``conv1``, ``bn1``,
``layer2_0_downsample_0`` for torchvision's ``layer2.0.downsample.0``) and its
weights are loaded from a ``.npz`` file holding a torchvision ``state_dict``
(keys such as ``layer2.0.conv1.weight``, arrays in PyTorch layout). Such a file
is written once, on a machine with PyTorch, by::

    virtual-ihc resnet18-weights OUT.npz     # or: python -m virtual_ihc.evaluation.resnet18 OUT.npz

(``torchvision.models.resnet18(weights="IMAGENET1K_V1")``, downloaded by
torchvision). ``--weights imagenet`` looks for it as
``$KERAS_HOME/models/resnet18_imagenet_torchvision.npz`` (default
``~/.keras/models/``).

Input: float32 ``(B, H, W, 3)`` RGB in [0, 255]; :func:`preprocess` applies
torchvision's ImageNet normalisation inside the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # as a command: the dispatcher, before the imports below load TensorFlow unquietly
    from virtual_ihc.cli import main

    sys.exit(main(["resnet18-weights", *sys.argv[1:]]))

import keras
import numpy as np
from keras import layers

from virtual_ihc.evaluation.tiles import EvaluationInputError
from virtual_ihc.weights import describe_weights

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: residual stages and their widths; each has two basic blocks, the first of stages 2-4 strides by 2
STAGES = (("layer1", 64, 1), ("layer2", 128, 2), ("layer3", 256, 2), ("layer4", 512, 2))
CACHE_NAME = "resnet18_imagenet_torchvision.npz"
BN_EPSILON = 1e-5


def imagenet_weights_path() -> Path:
    """Where ``--weights imagenet`` expects the converted torchvision weights."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    return home / "models" / CACHE_NAME


def _conv_bn(x, filters: int, kernel_size: int, strides: int, name: str, bn_name: str):
    """Zero-pad like PyTorch (``kernel // 2``), convolve without bias, batch-normalise."""
    pad = kernel_size // 2
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = layers.Conv2D(filters, kernel_size, strides=strides, use_bias=False, name=name)(x)
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=bn_name)(x)


def apply_basic_block(x, filters: int, strides: int, name: str):
    """torchvision's ``BasicBlock``: two 3x3 conv-BN, identity or 1x1 conv-BN shortcut, ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, f"{name}_downsample_0", f"{name}_downsample_1")
    y = _conv_bn(x, filters, 3, strides, f"{name}_conv1", f"{name}_bn1")
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv_bn(y, filters, 3, 1, f"{name}_conv2", f"{name}_bn2")
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def preprocess(rgb):
    """RGB in [0, 255] -> torchvision's ImageNet normalisation ``(x / 255 - mean) / std``."""
    return (rgb / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)


def build_resnet18(last_stage: str = "layer4", weights: str | None = None) -> keras.Model:
    """ResNet-18 up to ``last_stage`` (``"layer1"`` .. ``"layer4"``), frozen, any input size >= 32.

    Args:
        last_stage: the output stage; the P-hash uses ``"layer2"``, shape ``(B, H/8, W/8, 128)``.
        weights: resolved weights (:func:`virtual_ihc.weights.resolve_weights`): ``None``
            (random, He-normal; for tests), ``"imagenet"`` (the converted torchvision
            file at :func:`imagenet_weights_path`) or a ``.npz`` path.

    Returns:
        a ``keras.Model`` mapping float32 ``(B, H, W, 3)`` RGB in [0, 255] to the
        post-ReLU activations of ``last_stage``.
    """
    names = [stage for stage, _, _ in STAGES]
    if last_stage not in names:
        raise ValueError(f"ResNet-18 stage must be one of {names}, got {last_stage!r}")
    inputs = keras.Input((None, None, 3), name="rgb")
    x = layers.Lambda(preprocess, name="imagenet_normalise")(inputs)
    x = layers.ReLU(name="relu")(_conv_bn(x, 64, 7, 2, "conv1", "bn1"))
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(layers.ZeroPadding2D(1, name="maxpool_pad")(x))
    for stage, filters, strides in STAGES[:names.index(last_stage) + 1]:
        x = apply_basic_block(x, filters, strides, f"{stage}_0")
        x = apply_basic_block(x, filters, 1, f"{stage}_1")
    model = keras.Model(inputs, x, name=f"resnet18_{last_stage}")
    model.trainable = False
    if weights is not None:
        path = imagenet_weights_path() if weights == "imagenet" else Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"ResNet-18 ImageNet weights not found at {path}: convert torchvision's weights on a machine "
                f"with PyTorch (python -m virtual_ihc.evaluation.resnet18 {path}) and copy the file here, "
                "or pass --weights none for an offline smoke run")
        load_torchvision_weights(model, path)
    logger.info("ResNet-18 (%s) with %s", last_stage, describe_weights(weights))
    return model


def load_torchvision_weights(model: keras.Model, path: str | Path) -> int:
    """Copy a torchvision ResNet-18 ``state_dict`` saved as ``.npz`` into ``model``; returns layers set.

    Conv kernels go from PyTorch ``(out, in, kh, kw)`` to Keras ``(kh, kw, in, out)``;
    batch norms take ``weight, bias, running_mean, running_var``. Entries of
    stages the model does not have (and ``fc``) are ignored; a layer of the
    model missing from the file raises :class:`EvaluationInputError`.
    """
    with np.load(path) as data:
        state = {key: data[key] for key in data.files}
    loaded = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kernel = _require(state, _torch_key(layer.name, "weight"), path)
            layer.set_weights([np.transpose(kernel, (2, 3, 1, 0))])
        elif isinstance(layer, layers.BatchNormalization):
            layer.set_weights([_require(state, _torch_key(layer.name, part), path)
                               for part in ("weight", "bias", "running_mean", "running_var")])
        else:
            continue
        loaded += 1
    return loaded


def _torch_key(keras_name: str, parameter: str) -> str:
    """``layer2_0_downsample_0`` + ``weight`` -> ``layer2.0.downsample.0.weight``."""
    return f"{keras_name.replace('_', '.')}.{parameter}"


def _require(state: dict[str, np.ndarray], key: str, path) -> np.ndarray:
    if key not in state:
        raise EvaluationInputError(f"{path}: no entry {key!r}; is this a torchvision ResNet-18 state_dict?")
    return state[key]


def save_torchvision_weights(path: str | Path) -> Path:
    """Download torchvision's ImageNet ResNet-18 (needs ``torch`` and ``torchvision``) and save it as ``.npz``.

    Raises:
        EvaluationInputError: torchvision is not installed.
    """
    try:
        import torchvision
    except ImportError as error:
        raise EvaluationInputError(f"converting the weights needs torch and torchvision ({error}): "
                                   "pip install torch torchvision, or copy a converted .npz here") from error

    model = torchvision.models.resnet18(weights="IMAGENET1K_V1")
    state = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()
             if not key.endswith("num_batches_tracked")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **state)
    return path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``virtual-ihc resnet18-weights``."""
    parser.add_argument("out", nargs="?", default=str(imagenet_weights_path()),
                        help="output .npz (default: %(default)s, where --weights imagenet looks)")


def run(args: argparse.Namespace) -> int:
    print(f"wrote {save_torchvision_weights(args.out)}")
    return 0
