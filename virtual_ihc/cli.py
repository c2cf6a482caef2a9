"""The ``virtual-ihc`` command: one subcommand per task.

Each subcommand lives in its own module, which provides
``configure_parser(parser)`` and ``run(args) -> int``; modules are imported only
when their subcommand runs, so ``virtual-ihc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import tempfile

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
}


#: subcommands that run TensorFlow (imported quietly before their parser is built)
TENSORFLOW_COMMANDS = ("train", "evaluate", "stain", "nst")
#: lines TensorFlow's C++ runtime writes to stderr while it loads: start-up information, not problems
_STARTUP_LINES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|\] oneDNN custom operations are on|"
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers|cpu_feature_guard\.cc:\d+\] This TensorFlow binary|"
    r"^To enable the following instructions:|cuda_platform\.cc:\d+\] failed call to cuInit")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and probe its devices) without its C++ start-up lines on stderr.

    TensorFlow's runtime logs through absl before any log level can apply, so
    ``TF_CPP_MIN_LOG_LEVEL`` does not hide these lines. They are captured from
    file descriptor 2 during the import and dropped if they match the known
    start-up messages (:data:`_STARTUP_LINES`); any other line is written back.
    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (warnings and errors stay visible) unless
    the user set it. Does nothing if TensorFlow is already imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA probing logs here too
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _STARTUP_LINES.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def configure_logging(level: int = logging.INFO) -> None:
    """Log our messages with timestamps; keep TensorFlow's C++ and absl chatter to warnings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before a subcommand's parser imports TensorFlow
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((arg for arg in argv if not arg.startswith("-")), None)
    selected = selected if selected in SUBCOMMANDS else None
    if selected in TENSORFLOW_COMMANDS:
        import_tensorflow_quietly()
    args = build_parser(selected).parse_args(argv)
    configure_logging()
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
