"""Written results: ``metrics.csv``, ``per_tile.csv`` and ``summary.md`` (a Table-1-style table)."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

from virtual_ihc.evaluation.figures import plot_comparison, plot_index_comparison, plot_metrics_vs_epoch, plot_residuals
from virtual_ihc.evaluation.results import REFERENCE_INDEX, MetricRow, ModelResult, TileValue

#: summary columns: (header, metric, tile sets to look in (first found wins), number format)
SUMMARY_COLUMNS = (
    ("P-hash", "phash", ("pairs", "he"), ".4f"),
    ("SSIM H&E cycle", "cycle_ssim", ("he", "pairs"), ".4f"),
    ("MS-SSIM H&E cycle", "cycle_ms_ssim", ("he", "pairs"), ".4f"),
    ("PSNR H&E cycle (dB)", "cycle_psnr", ("he", "pairs"), ".2f"),
    ("MAE H&E cycle", "cycle_mae", ("he", "pairs"), ".4f"),
    ("SSIM Ki-67 cycle", "cycle_ssim", ("ki67",), ".4f"),
    ("paired SSIM", "paired_ssim", ("pairs", "he"), ".4f"),
    ("FID", "fid", ("he", "pairs"), ".4g"),
    ("KID", "kid", ("he", "pairs"), ".3g"),
    ("Ki-67 index", "ki67_index", ("he", "pairs", "ki67"), ".3f"),
    ("index abs. error", "ki67_index_abs_error", ("pairs", "he"), ".3f"),
    ("index r", "ki67_index_pearson_r", ("pairs", "he"), ".3f"),
    ("nuclei F1", "pooled_nuclei_f1", ("he", "pairs"), ".3f"),
    ("glass kept", "pooled_glass_kept", ("he", "pairs"), ".3f"),
    ("eosin ratio", "pooled_eosin_ratio", ("he", "pairs"), ".3f"),
    ("DAB outside nuclei", "pooled_dab_outside_nuclei", ("he", "pairs"), ".3f"),
    ("virtual index (H&E nuclei)", "pooled_virtual_index_he_nuclei", ("he", "pairs"), ".3f"),
    ("index − reference", "pooled_index_difference", ("he", "pairs"), "+.3f"),
)


def _write_csv(path: Path, rows: list, row_type) -> Path:
    fields = [field.name for field in dataclasses.fields(row_type)]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
    return path


def write_metrics_csv(path: str | Path, rows: list[MetricRow]) -> Path:
    """One row per model x epoch x tile set x metric: mean, std, n, note."""
    return _write_csv(Path(path), rows, MetricRow)


def write_per_tile_csv(path: str | Path, values: list[TileValue]) -> Path:
    """One row per model x epoch x tile set x tile x metric."""
    return _write_csv(Path(path), values, TileValue)


def read_metrics_csv(path: str | Path) -> list[MetricRow]:
    """Rows written by :func:`write_metrics_csv`, typed back."""
    with open(path, newline="") as handle:
        return [MetricRow(model=row["model"], variant=row["variant"],
                          epoch=int(row["epoch"]) if row["epoch"] else None, tile_set=row["tile_set"],
                          metric=row["metric"], mean=float(row["mean"]), std=float(row["std"]), n=int(row["n"]),
                          note=row["note"]) for row in csv.DictReader(handle)]


def final_rows(rows: list[MetricRow]) -> list[MetricRow]:
    """The rows of each model's last evaluated epoch (models without epochs keep all rows)."""
    last: dict[str, int] = {}
    for row in rows:
        if row.epoch is not None:
            last[row.model] = max(last.get(row.model, row.epoch), row.epoch)
    return [row for row in rows if row.epoch is None or row.epoch == last[row.model]]


def _format(row: MetricRow | None, spec: str) -> str:
    if row is None or math.isnan(row.mean):
        return "–"
    if row.metric == "fid" or row.metric.endswith("_pearson_r") or row.metric.startswith("pooled_"):
        return format(row.mean, spec)
    return f"{format(row.mean, spec)} ± {format(row.std, spec)}"


def summary_table(rows: list[MetricRow]) -> str:
    """Markdown table: one line per model (its last epoch), mean ± std per metric; empty columns dropped."""
    rows = final_rows(rows)
    models: dict[str, str] = {}
    for row in rows:
        models.setdefault(row.model, row.variant)
    lookup = {(row.model, row.tile_set, row.metric): row for row in rows}

    def cell(model: str, metric: str, tile_sets: tuple[str, ...]) -> MetricRow | None:
        return next((lookup[(model, s, metric)] for s in tile_sets if (model, s, metric) in lookup), None)

    columns = [column for column in SUMMARY_COLUMNS
               if any(cell(model, column[1], column[2]) for model in models)]
    lines = ["| model | variant | " + " | ".join(header for header, *_ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for model, variant in models.items():
        cells = [_format(cell(model, metric, sets), spec) for _, metric, sets, spec in columns]
        lines.append(f"| {model} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def consistency_lines(results: list[ModelResult]) -> list[str]:
    """One verdict per model and H&E tile set (pass/fail, flags, the positivity caveat)."""
    return [f"**{result.entry.name}**" + (f" (epoch {result.entry.epoch})" if result.entry.epoch is not None else "")
            + f", {set_name}: {summary.verdict()}"
            for result in results for set_name, summary in result.consistency.items()]


def write_summary(path: str | Path, rows: list[MetricRow], notes: list[str], figures: list[Path],
                  consistency: list[str] | None = None) -> Path:
    """``summary.md``: the table, the sample counts, the pathology-consistency verdicts, the notes and the figures."""
    path = Path(path)
    counts: dict[str, int] = {}
    for row in final_rows(rows):
        counts[row.tile_set] = max(counts.get(row.tile_set, 0), row.n)
    text = ["# Evaluation summary", "",
            "Mean ± std over tiles (FID: one value per set; KID: mean ± std over subsets; r: Pearson "
            "correlation over tiles). Last evaluated epoch of each run; every epoch is in metrics.csv.", "",
            summary_table(rows), "",
            "Tiles per set: " + ", ".join(f"{tile_set}: {n}" for tile_set, n in sorted(counts.items())), ""]
    if consistency:
        text += ["## Pathology consistency", "",
                 "Nuclei F1 (nuclei of the H&E found again in the virtual Ki-67), glass kept, eosin ratio, DAB "
                 "outside nuclei and the virtual index counted over the H&E's nuclei, pooled over the tiles; "
                 "flags and thresholds in docs/evaluation.md.", ""] + [f"- {line}" for line in consistency] + [""]
    text += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    if figures:
        text += ["## Figures", ""] + [f"![{figure.stem}]({figure.name})" for figure in figures] + [""]
    path.write_text("\n".join(text))
    return path


def all_rows(results: list[ModelResult], real_rows: list[MetricRow]) -> list[MetricRow]:
    """Every aggregated row, models in order then the real-stain rows."""
    return [row for result in results for row in result.rows] + real_rows


def write_evaluation(results: list[ModelResult], real_rows: list[MetricRow], notes: list[str],
                     out_dir: str | Path) -> dict[str, Path]:
    """Write the CSVs, the three figures and ``summary.md`` under ``out_dir``; returns them by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = all_rows(results, real_rows)
    curve_set = next((s for s in ("he", "pairs") if any(row.tile_set == s for row in rows)), "he")
    outputs = {
        "metrics": write_metrics_csv(out_dir / "metrics.csv", rows),
        "per_tile": write_per_tile_csv(out_dir / "per_tile.csv", [v for r in results for v in r.tiles]),
        "metrics_vs_epoch": plot_metrics_vs_epoch(rows, out_dir / "fig_metrics_vs_epoch.png", curve_set),
        "residuals": plot_residuals(results, out_dir / "fig_residuals.png"),
        "comparison": plot_comparison(results, out_dir / "fig_comparison.png"),
    }
    if any(value.metric == REFERENCE_INDEX for result in results for value in result.tiles):
        outputs["ki67_index"] = plot_index_comparison(results, out_dir / "fig_ki67_index.png")
    figures = [outputs[name] for name in ("metrics_vs_epoch", "residuals", "comparison", "ki67_index")
               if name in outputs]
    last_epoch = {}
    for result in results:
        last_epoch[result.entry.name] = result  # results come in epoch order: keep each model's last
    outputs["summary"] = write_summary(out_dir / "summary.md", rows, notes, figures,
                                       consistency_lines(list(last_epoch.values())))
    return outputs
