"""The paper's figures: metrics vs epoch (Fig. 3), residual maps (Fig. 4), virtual stains side by side (Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from virtual_ihc.evaluation.evaluator import MetricRow, ModelResult  # noqa: E402

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


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
