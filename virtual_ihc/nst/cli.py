"""``virtual-ihc nst``: stylise H&E tiles as Ki-67 IHC with neural style transfer.

Single image::

    virtual-ihc nst --content he.png --style ki67.png --out virtual_ki67.png

Batch (one output per H&E tile, same relative file name, for ``virtual-ihc evaluate``)::

    virtual-ihc nst --content he_tiles/ --style ki67_tiles/ --out nst_tiles/

Sweep of the report's settings into one figure::

    virtual-ihc nst sweep --content he.png --style ki67.png --out sweep/

Every option's default comes from :class:`~virtual_ihc.nst.config.NSTConfig`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import keras
import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.io.images import ImageReadError, list_images, read_image_rgb, write_image_rgb
from virtual_ihc.nst.config import CONTENT_LOSSES, INITIALISATIONS, OPTIMIZERS, NSTConfig
from virtual_ihc.nst.features import build_vgg19
from virtual_ihc.nst.record import RECORD_NAME, settings_record, write_record
from virtual_ihc.nst.sweep import run_sweep
from virtual_ihc.nst.transfer import StyleTransfer
from virtual_ihc.weights import describe_weights, resolve_weights

logger = logging.getLogger(__name__)

MODES = ("transfer", "sweep")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``nst`` options to ``parser`` (defaults from :class:`NSTConfig`)."""
    defaults = NSTConfig()
    parser.add_argument("mode", nargs="?", choices=MODES, default="transfer",
                        help="'transfer' (default) stylises images; 'sweep' runs the report's grid of settings")
    parser.add_argument("--content", required=True, type=Path,
                        help="H&E image, or a folder of H&E tiles (batch mode; sweep: one image)")
    parser.add_argument("--style", required=True, type=Path,
                        help="Ki-67 IHC image, or a folder of them (their Gram matrices are averaged)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output image (single content image) or folder (batch mode, sweep)")
    parser.add_argument("--weights", default=defaults.weights,
                        help="VGG19 weights: 'imagenet' (downloaded once, cached), 'none' (random: "
                             "output not meaningful, for tests) or a local .h5 file (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations,
                        help="optimisation steps (default: %(default)s)")
    parser.add_argument("--content-weight", type=float, default=defaults.content_weight,
                        help="alpha, factor of the content loss (default: %(default)s)")
    parser.add_argument("--style-weight", type=float, default=defaults.style_weight,
                        help="beta, factor of the style loss (default: %(default)s)")
    parser.add_argument("--tv-weight", type=float, default=defaults.tv_weight,
                        help="factor of the total-variation loss, 0 = off (default: %(default)s)")
    parser.add_argument("--content-loss", choices=CONTENT_LOSSES, default=defaults.content_loss,
                        help="distance between content activations (default: %(default)s)")
    parser.add_argument("--content-layers", nargs="+", default=list(defaults.content_layers), metavar="LAYER",
                        help="VGG19 layers of the content loss (default: %(default)s)")
    parser.add_argument("--style-layers", nargs="+", metavar="LAYER[:WEIGHT]",
                        default=[f"{name}:{weight:g}" for name, weight in defaults.style_layers],
                        help="VGG19 layers of the style loss with their weights; a layer without "
                             "a weight gets 1/number of layers (default: %(default)s)")
    parser.add_argument("--init", choices=INITIALISATIONS, default=defaults.init,
                        help="start from the content image or from noise (default: %(default)s)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                        help="Adam or SciPy L-BFGS-B (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="Adam step in pixel levels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the noise start and of random weights (default: %(default)s)")


def parse_style_layers(tokens: list[str]) -> tuple[tuple[str, float], ...]:
    """``["block1_conv1:0.5", "block2_conv1"]`` -> ``(("block1_conv1", 0.5), ("block2_conv1", 0.5))``."""
    layers = []
    for token in tokens:
        name, _, weight = token.partition(":")
        try:
            layers.append((name, float(weight) if weight else 1.0 / len(tokens)))
        except ValueError:
            raise InputError(f"--style-layers: bad weight in {token!r} (expected LAYER:NUMBER)") from None
    return tuple(layers)


def config_from_args(args: argparse.Namespace) -> NSTConfig:
    """The :class:`NSTConfig` described by parsed ``nst`` options."""
    return NSTConfig(
        content_layers=tuple(args.content_layers), style_layers=parse_style_layers(args.style_layers),
        content_loss=args.content_loss, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, init=args.init, optimizer=args.optimizer, iterations=args.iterations,
        learning_rate=args.learning_rate, seed=args.seed, weights=args.weights,
    )


def image_paths(path: Path) -> list[Path]:
    """``[path]`` for a file, the sorted images under a folder; checked before any work starts.

    Raises:
        ImageReadError: the path does not exist, or the folder holds no images.
    """
    if path.is_dir():
        paths = list_images(path)
        if not paths:
            raise ImageReadError(f"{path}: folder contains no images")
        return paths
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file or folder")
    return [path]


def run(args: argparse.Namespace) -> int:
    """Run ``virtual-ihc nst``; bad input raises (the dispatcher reports it, exit status 2)."""
    config = config_from_args(args)
    resolved = resolve_weights(config.weights)
    content_paths = image_paths(args.content)
    style_paths = image_paths(args.style)
    style_images = [read_image_rgb(path) for path in style_paths]
    if args.mode == "sweep" and len(content_paths) != 1:
        raise InputError("sweep: --content must be one image")
    keras.utils.set_random_seed(config.seed)  # makes random ('none') weights reproducible
    vgg = build_vgg19(resolved)
    record = settings_record(config, resolved) | {"style": [str(path) for path in style_paths]}
    if args.mode == "sweep":
        figure = run_sweep(read_image_rgb(content_paths[0]), style_images, vgg, config, args.out, record)
        print(f"sweep figure: {figure}; outputs and {RECORD_NAME} in {args.out}")
    else:
        transfer = StyleTransfer(config, vgg)
        outputs = stylise_all(transfer, transfer.style_targets(style_images), args.content, content_paths,
                              args.out, record)
        print(f"wrote {len(outputs)} NST image(s): {_where(outputs, args.out)}")
    if resolved is None:
        print(f"note: {describe_weights(resolved)}; these NST images are not meaningful")
    return 0


def output_path(content_root: Path, content_path: Path, out: Path) -> Path:
    """Where the stylised ``content_path`` goes: the same relative name under a folder ``out``.

    A single content file goes to ``out`` itself, unless ``out`` is an existing
    folder or has no file extension (then it is a folder).
    """
    if content_root.is_dir():
        return out / content_path.relative_to(content_root)
    return out / content_path.name if out.is_dir() or not out.suffix else out


def stylise_all(transfer: StyleTransfer, style_targets: dict, content_root: Path, content_paths: list[Path], out: Path,
                record: dict) -> list[Path]:
    """Stylise every content image, write the outputs and the JSON record; returns the output paths."""
    record = record | {"content": str(content_root), "tiles": len(content_paths)}
    record_path = (out / RECORD_NAME if content_root.is_dir()
                   else output_path(content_root, content_paths[0], out).with_suffix(".nst_config.json"))
    write_record(record_path, record)  # before the (long) run, so interrupted outputs are documented
    outputs, seconds = [], []
    for index, path in enumerate(content_paths):
        logger.info("NST %d/%d: %s", index + 1, len(content_paths), path)
        result = transfer.run(read_image_rgb(path), style_targets)
        outputs.append(write_image_rgb(output_path(content_root, path, out), result.image))
        seconds.append(result.seconds)
    write_record(record_path, record | {"mean_seconds_per_tile": float(np.mean(seconds))})
    return outputs


def _where(outputs: list[Path], out: Path) -> str:
    return str(outputs[0]) if len(outputs) == 1 else f"{out}/ (same file names as the H&E tiles)"
