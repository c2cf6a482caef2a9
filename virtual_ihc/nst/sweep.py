"""The report's NST experiment grid, run on one H&E tile and drawn as one figure.

Each setting changes one thing relative to a base :class:`NSTConfig`: content
weight higher and lower, style weight higher, the other content distance (MAE
vs MSE), content on a deeper layer, style on the deeper layers only.

``python -m virtual_ihc.nst.sweep --content he.png --style ki67.png --out sweep/``
(or ``virtual-ihc nst sweep ...``) writes ``sweep.png``, one image per setting
and ``nst_config.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from matplotlib.figure import Figure

from virtual_ihc.io.images import write_image_rgb
from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.nst.record import RECORD_NAME, write_record
from virtual_ihc.nst.transfer import NSTResult, StyleTransfer

logger = logging.getLogger(__name__)

#: How much "high" and "low" weights differ from the base setting.
WEIGHT_FACTOR = 10.0
DEEPER_CONTENT_LAYER = "block5_conv2"
DEEPER_STYLE_LAYERS = ("block3_conv1", "block4_conv1", "block5_conv1")
FIGURE_NAME = "sweep.png"


def sweep_configs(base: NSTConfig) -> list[tuple[str, NSTConfig]]:
    """``(label, config)`` for the base setting and each one-factor change of it."""
    other_loss = "mae" if base.content_loss == "mse" else "mse"
    deeper_style = tuple((name, 1.0 / len(DEEPER_STYLE_LAYERS)) for name in DEEPER_STYLE_LAYERS)
    changes = [
        ("base setting", {}),
        (f"content weight high (x{WEIGHT_FACTOR:g})", {"content_weight": base.content_weight * WEIGHT_FACTOR}),
        (f"content weight low (/{WEIGHT_FACTOR:g})", {"content_weight": base.content_weight / WEIGHT_FACTOR}),
        (f"style weight high (x{WEIGHT_FACTOR:g})", {"style_weight": base.style_weight * WEIGHT_FACTOR}),
        (f"{other_loss.upper()} content loss", {"content_loss": other_loss}),
        (f"content on {DEEPER_CONTENT_LAYER}", {"content_layers": (DEEPER_CONTENT_LAYER,)}),
        (f"style on {', '.join(DEEPER_STYLE_LAYERS)}", {"style_layers": deeper_style}),
    ]
    return [(label, dataclasses.replace(base, **change)) for label, change in changes]


def file_stem(label: str) -> str:
    """A file-name-safe form of a sweep label (``"content weight high (x10)"`` -> ``"content_weight_high_x10"``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", label).strip("_")


def run_sweep(content: np.ndarray, style_images: Sequence[np.ndarray], vgg: keras.Model, base: NSTConfig,
              out_dir: Path, record: dict) -> Path:
    """Run every setting of :func:`sweep_configs`; write the images, the record and the figure.

    Args:
        content: uint8 RGB ``(H, W, 3)`` H&E tile.
        style_images: uint8 RGB Ki-67 images (Gram matrices averaged).
        vgg: the shared VGG19 (:func:`~virtual_ihc.nst.features.build_vgg19`).
        base: the setting the others vary.
        out_dir: output folder.
        record: settings and weights provenance (:func:`~virtual_ihc.nst.record.settings_record`).

    Returns:
        The path of the figure.
    """
    out_dir = Path(out_dir)
    runs: list[tuple[str, NSTResult]] = []
    settings = {}
    for label, config in sweep_configs(base):
        logger.info("sweep setting: %s", label)
        transfer = StyleTransfer(config, vgg)
        result = transfer.run(content, transfer.style_targets(style_images))
        write_image_rgb(out_dir / f"{file_stem(label)}.png", result.image)
        runs.append((label, result))
        settings[label] = {"config": config.to_json_dict(), "final_losses": result.final_losses,
                           "seconds": result.seconds}
    write_record(out_dir / RECORD_NAME, record | {"sweep": settings})
    figure_path = out_dir / FIGURE_NAME
    plot_sweep(content, style_images[0], runs, figure_path, title=f"NST sweep, {base.iterations} iterations "
                                                                  f"{base.optimizer}; {record['weights']}")
    return figure_path


def plot_sweep(content: np.ndarray, style: np.ndarray, runs: Sequence[tuple[str, NSTResult]], path: Path,
               title: str) -> Path:
    """One labelled figure: the content and style inputs, then each setting's output with its losses."""
    panels = [("content (H&E)", content), ("style (Ki-67)", style)]
    panels += [(f"{label}\ncontent {result.final_losses['content_loss']:.3g}, "
                f"style {result.final_losses['style_loss']:.3g}", result.image) for label, result in runs]
    columns = 3
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows))  # no pyplot: no global backend or state
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (label, image) in zip(axes.ravel(), panels):
        axis.imshow(image)
        axis.set_title(label, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


if __name__ == "__main__":  # the way in is the dispatcher (imported here: only when run as a command)
    from virtual_ihc.cli import main

    sys.exit(main(["nst", "sweep", *sys.argv[1:]]))
