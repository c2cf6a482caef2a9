"""What every command does around its work: quiet start-up, logging, and one error format and exit status.

The dispatcher (:func:`virtual_ihc.cli.main`) calls these for every command:
:func:`import_tensorflow_quietly` before a TensorFlow command builds its parser,
:func:`configure_logging` after parsing, and :func:`report_error` for an exception
the command raised: a type listed in :data:`EXIT_STATUSES` becomes one line
``virtual-ihc <command>: error: <message>`` on stderr and that exit status.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from typing import TextIO

from virtual_ihc.errors import InputError, RunFailure

#: the command finished
EXIT_OK = 0
#: the run failed (and said why)
EXIT_FAILURE = 1
#: the input was wrong (argparse uses 2 for bad command lines too)
EXIT_INPUT = 2

#: exception type -> exit status, first match wins (list a subclass before its base). To give a new
#: kind of failure a one-line report, add a row here (e.g. ``(DiskFullError, EXIT_FAILURE)``) or derive
#: it from a listed type; an exception of any other type propagates with its traceback.
EXIT_STATUSES: list[tuple[type[BaseException], int]] = [
    (InputError, EXIT_INPUT),
    (FileNotFoundError, EXIT_INPUT),  # a missing input file or folder, wherever it is noticed
    (NotADirectoryError, EXIT_INPUT),  # a file where a folder is expected
    (RunFailure, EXIT_FAILURE),
]

#: lines TensorFlow's C++ runtime writes to stderr while it loads: start-up information, not problems
_STARTUP_LINES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|\] oneDNN custom operations are on|"
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers|cpu_feature_guard\.cc:\d+\] This TensorFlow binary|"
    r"^To enable the following instructions:|cuda_platform\.cc:\d+\] failed call to cuInit")


def exit_status(error: BaseException) -> int | None:
    """The exit status :data:`EXIT_STATUSES` gives ``error``, or ``None`` (not a reported failure)."""
    return next((status for error_type, status in EXIT_STATUSES if isinstance(error, error_type)), None)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (its lines joined by spaces; the type name if it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines) or type(error).__name__


def report_error(prog: str, error: BaseException, stream: TextIO | None = None) -> int:
    """Write ``<prog>: error: <message>`` to stderr and return the exit status of ``error``.

    Raises:
        ValueError: ``error`` is not of a type in :data:`EXIT_STATUSES`.
    """
    status = exit_status(error)
    if status is None:
        raise ValueError(f"{type(error).__name__} is not a reported failure (see EXIT_STATUSES)")
    print(f"{prog}: error: {one_line(error)}", file=stream or sys.stderr)
    return status


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
