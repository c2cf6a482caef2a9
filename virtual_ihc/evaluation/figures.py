"""The paper's figures: metrics vs epoch (Fig. 3), residual maps (Fig. 4), virtual stains side by side (Fig. 5),
the Ki-67 index of virtual against real tiles, and :func:`image_grid` for any labelled set of images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from virtual_ihc.evaluation.results import REFERENCE_INDEX, MetricRow, ModelResult  # noqa: E402

#: Fig. 3 panels: (metric, axis label)
EPOCH_PANELS = (("cycle_ssim", "SSIM"), ("cycle_ms_ssim", "MS-SSIM"), ("cycle_psnr", "PSNR (dB)"),
                ("cycle_mae", "MAE"))


def residual_map(original: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
    """Per-pixel mean absolute difference over channels: ``uint8 (H, W, 3)`` x2 -> float ``(H, W)`` in [0, 1]."""
    return np.abs(original.astype(np.float32) - reconstructed.astype(np.float32)).mean(axis=-1) / 255.0


def plot_metrics_vs_epoch(rows: list[MetricRow], path: str | Path, tile_set: str) -> Path:
    """Four panels (SSIM, MS-SSIM, PSNR, MAE of the H&E cycle on ``tile_set``), one line per model."""
    figure, axes = plt.subplots(1, len(EPOCH_PANELS), figsize=(4 * len(EPOCH_PANELS), 3.4))
    for axis, (metric, label) in zip(axes, EPOCH_PANELS):
        series: dict[str, list[tuple[int, float, float]]] = {}
        for row in rows:
            if row.metric == metric and row.tile_set == tile_set and row.epoch is not None:
                series.setdefault(f"{row.model} ({row.variant})", []).append((row.epoch, row.mean, row.std))
        for name, points in series.items():
            epochs, means, stds = map(np.array, zip(*sorted(points)))
            axis.plot(epochs, means, marker="o", label=name)
            axis.fill_between(epochs, means - stds, means + stds, alpha=0.15)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(f"{label}, H&E cycle ({tile_set})")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize="small")
    figure.tight_layout(rect=(0, 0.12 if handles else 0, 1, 1))
    return _save(figure, path)


def _final(results: list[ModelResult]) -> list[ModelResult]:
    """One result per model: its last epoch."""
    latest: dict[str, ModelResult] = {}
    for result in results:
        current = latest.get(result.entry.name)
        if current is None or (result.entry.epoch or 0) >= (current.entry.epoch or 0):
            latest[result.entry.name] = result
    return list(latest.values())


def plot_residuals(results: list[ModelResult], path: str | Path) -> Path:
    """One row per cycle model: original H&E, reconstructed H&E, residual map."""
    cycle = [result for result in _final(results) if "reconstructed_he" in result.examples]
    figure, axes = plt.subplots(max(1, len(cycle)), 3, figsize=(9, 3 * max(1, len(cycle))), squeeze=False)
    for row, result in zip(axes, cycle):
        original, reconstructed = result.examples["he"], result.examples["reconstructed_he"]
        residual = residual_map(original, reconstructed)
        row[0].imshow(original)
        row[1].imshow(reconstructed)
        shown = row[2].imshow(residual, cmap="magma", vmin=0, vmax=max(0.05, float(residual.max())))
        figure.colorbar(shown, ax=row[2], fraction=0.046)
        row[0].set_ylabel(f"{result.entry.name}\n{result.entry.variant}")
        for axis, title in zip(row, ("H&E", "reconstructed H&E", f"|residual|, mean {residual.mean():.3f}")):
            axis.set_title(title, fontsize="small")
    if not cycle:
        axes[0][1].text(0.5, 0.5, "no cycle model evaluated", ha="center", va="center")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    return _save(figure, path)


def plot_comparison(results: list[ModelResult], path: str | Path) -> Path:
    """H&E, reference Ki-67 (when paired) and each model's virtual Ki-67 of the same tile."""
    final = _final(results)
    first = final[0].examples
    panels = [("H&E", first["he"])]
    if "reference_ki67" in first:
        panels.append(("reference Ki-67", first["reference_ki67"]))
    panels += [(f"{result.entry.name}\n{result.entry.variant}", result.examples["virtual_ki67"]) for result in final]
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), squeeze=False)
    for axis, (title, image) in zip(axes[0], panels):
        axis.imshow(image)
        axis.set_title(title, fontsize="small")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    return _save(figure, path)


def plot_index_comparison(results: list[ModelResult], path: str | Path) -> Path:
    """Ki-67 index of each virtual tile against its registered real Ki-67 tile, one panel per model.

    Reads the per-tile ``ki67_index`` and ``reference_ki67_index`` of the first paired H&E set of each
    model's last epoch; the title gives the Pearson r and the mean absolute error over the tiles.
    """
    panels = []
    for result in _final(results):
        by_set: dict[str, dict[str, dict[str, float]]] = {}
        for value in result.tiles:
            if value.metric in ("ki67_index", REFERENCE_INDEX):
                by_set.setdefault(value.tile_set, {}).setdefault(value.metric, {})[value.tile] = value.value
        paired = next((metrics for metrics in by_set.values() if REFERENCE_INDEX in metrics), None)
        if paired is not None:
            tiles = sorted(paired[REFERENCE_INDEX])
            panels.append((result, np.array([paired[REFERENCE_INDEX][tile] for tile in tiles]),
                           np.array([paired["ki67_index"].get(tile, np.nan) for tile in tiles])))
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.2 * max(1, len(panels)), 3.4), squeeze=False)
    for axis, (result, real, virtual) in zip(axes[0], panels):
        keep = np.isfinite(real) & np.isfinite(virtual)
        axis.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        axis.scatter(real[keep], virtual[keep], s=14, alpha=0.8)
        r = np.corrcoef(real[keep], virtual[keep])[0, 1] if keep.sum() > 1 and real[keep].std() and \
            virtual[keep].std() else float("nan")
        error = float(np.abs(real[keep] - virtual[keep]).mean()) if keep.any() else float("nan")
        axis.set_title(f"{result.entry.name}\nr = {r:.2f}, mean |error| = {error:.3f}", fontsize="small")
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("real Ki-67 index (registered tile)")
        axis.set_ylabel("virtual Ki-67 index")
        axis.grid(alpha=0.3)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no paired tiles evaluated", ha="center", va="center")
    figure.tight_layout()
    return _save(figure, path)


def image_grid(rows: Mapping[str, Sequence[np.ndarray]], column_titles: Sequence[str] | None = None,
               size: float = 2.4, path: str | Path | None = None, title: str | None = None) -> Figure:
    """A labelled grid of images: one row per entry of ``rows``, its images left to right.

    Args:
        rows: row label -> images (``uint8 (H, W, 3)`` RGB, or ``(H, W)`` grey/float maps shown with
            a colour map); rows may hold different numbers of images.
        column_titles: titles over the first row's columns.
        size: inches per panel side.
        path: also save the figure there as PNG.
        title: figure title.

    Returns:
        A :class:`matplotlib.figure.Figure` (made without pyplot, so it never touches the global
        backend; a notebook shows it as the cell's value).
    """
    labels = list(rows)
    if not labels:
        raise ValueError("image_grid: no rows")
    columns = max(len(rows[label]) for label in labels)
    figure = Figure(figsize=(size * columns, size * len(labels) + (0.4 if title else 0.0)))
    axes = figure.subplots(len(labels), columns, squeeze=False)
    for row_index, (row, label) in enumerate(zip(axes, labels)):
        for axis in row:
            axis.set_axis_off()
        for column, (axis, image) in enumerate(zip(row, rows[label])):
            image = np.asarray(image)
            axis.imshow(image, cmap=None if image.ndim == 3 else "magma", interpolation="nearest")
            axis.set_axis_on()
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label, fontsize="small")
            if column_titles is not None and row_index == 0 and column < len(column_titles):
                axis.set_title(column_titles[column], fontsize="small")
    if title:
        figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    return figure


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
