"""The ``virtual-ihc`` command: one subcommand per task, and the one way into every command.

Each subcommand lives in its own module, which provides ``configure_parser(parser)``
and ``run(args) -> int``; modules are imported only when their subcommand runs, so
``virtual-ihc --help`` stays fast. ``python train.py``, ``python evaluate.py`` and
every ``python -m`` entry of the package (``virtual_ihc.stain``, ``virtual_ihc.nst``,
``data_prep.tile_slides``, ``data_prep.register_pairs``,
``virtual_ihc.experiments.ablation``, ``virtual_ihc.evaluation.resnet18``) call
:func:`main` with their subcommand's name, so every command starts, logs and reports
errors the same way (:mod:`virtual_ihc.runtime`): bad input is one line
``virtual-ihc <command>: error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from virtual_ihc import runtime

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("virtual_ihc.training.cli", "train the improved CycleGAN (same as python train.py)"),
    "evaluate": ("virtual_ihc.evaluation.cli", "evaluate trained runs (same as python evaluate.py)"),
    "stain": ("virtual_ihc.inference.cli", "virtually stain an image, slide or folder with a trained generator"),
    "nst": ("virtual_ihc.nst.cli", "neural style transfer baseline (VGG19, Gatys et al.)"),
    "tile": ("data_prep.tile_slides", "cut whole-slide images into train/test tissue tiles "
                                      "(same as python -m data_prep.tile_slides)"),
    "register": ("data_prep.register_pairs", "register consecutive H&E / Ki-67 sections into paired tiles "
                                             "(same as python -m data_prep.register_pairs)"),
    "view": ("virtual_ihc.viewer.cli", "show slides side by side in the browser, pan and zoom in sync"),
    "ablate": ("virtual_ihc.experiments.ablation", "the paper's ablation: train and evaluate CycleGAN, +skip, "
                                                   "+SSIM, +skip+SSIM (same as python -m "
                                                   "virtual_ihc.experiments.ablation)"),
    "resnet18-weights": ("virtual_ihc.evaluation.resnet18", "convert torchvision's ImageNet ResNet-18 to the .npz "
                                                            "the P-hash loads (needs torch, torchvision, internet)"),
    "readout": ("virtual_ihc.readout.cli", "Ki-67 readout of a virtual slide: cells for QuPath, index per region, "
                                           "hot spot, report"),
}

#: subcommands that run TensorFlow (imported quietly before their parser is built)
TENSORFLOW_COMMANDS = ("train", "evaluate", "stain", "nst", "ablate", "resnet18-weights")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``selected`` (if given) gets its full options."""
    parser = argparse.ArgumentParser(prog="virtual-ihc", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``virtual-ihc ARGV``; returns the exit status (bad input: 2, with a one-line error on stderr)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before a subcommand's parser imports TensorFlow
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    selected = selected if selected in SUBCOMMANDS else None
    if selected in TENSORFLOW_COMMANDS:
        runtime.import_tensorflow_quietly()
    args = build_parser(selected).parse_args(argv)
    runtime.configure_logging()
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except Exception as error:  # noqa: BLE001 - only the types of runtime.EXIT_STATUSES are reported
        if runtime.exit_status(error) is None:
            raise
        return runtime.report_error(f"virtual-ihc {args.command}", error)


if __name__ == "__main__":
    sys.exit(main())
