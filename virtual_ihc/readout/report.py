"""``report.md`` of a readout: the global and hot-spot Ki-67 index, what was counted, and what it is not."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

#: what a virtual index is not (in every report)
CAVEAT = ("**This is a virtual index, not a diagnosis.** The nuclei were counted on a *virtual* Ki-67 stain "
          "predicted from H&E. A model trained on unpaired slides copies how common Ki-67 positivity was in its "
          "training set; it does not see which nucleus is dividing. A model trained on paired (registered) "
          "sections is only as good as its pairs. Check against a real Ki-67 stain before any clinical use.")


@dataclasses.dataclass
class ReadoutSummary:
    """The figures of a readout.

    Attributes:
        slide: the virtual slide.
        nuclei, positive: counted nuclei and positive ones.
        index: global labelling index (NaN without nuclei).
        hot_spot: the hot spot's region: ``{"row", "col", "x_um", "y_um", "nuclei", "positive", "index"}``, or ``None``.
        regions: regions with at least one nucleus.
        region_um, hotspot_min_nuclei: the options.
        roi: the region-of-interest file, or ``None`` (every nucleus counted).
        downsample, geometry_source: where the cells lie on the H&E (see ``slide_readout.Geometry``).
        cells_written: features in ``cells.geojson``.
    """

    slide: Path
    nuclei: int
    positive: int
    index: float
    hot_spot: dict | None
    regions: int
    region_um: float
    hotspot_min_nuclei: int
    roi: Path | None
    downsample: float
    geometry_source: str
    cells_written: int

    @classmethod
    def of(cls, slide, geometry, counts, hot_spot, options, roi, cells_written) -> "ReadoutSummary":
        nuclei, positive = int(counts.nuclei.sum()), int(counts.positive.sum())
        spot = None
        if hot_spot is not None:
            row, col = hot_spot
            spot = {"row": row, "col": col, "x_um": col * options.region_um, "y_um": row * options.region_um,
                    "nuclei": int(counts.nuclei[row, col]), "positive": int(counts.positive[row, col]),
                    "index": float(counts.positive[row, col] / counts.nuclei[row, col])}
        return cls(Path(slide), nuclei, positive, positive / nuclei if nuclei else float("nan"), spot,
                   int((counts.nuclei > 0).sum()), options.region_um, options.hotspot_min_nuclei,
                   Path(roi) if roi is not None else None, geometry.downsample, geometry.source, cells_written)


def report_text(summary: ReadoutSummary) -> str:
    """The Markdown of ``report.md``."""
    lines = [f"# Ki-67 readout of {summary.slide.name}", "", CAVEAT, ""]
    if summary.roi is None:
        lines += ["**What was counted: every nucleus of the slide** (tumour, stroma, lymphocytes, everything the "
                  "nucleus detector found). A Ki-67 labelling index counts tumour nuclei only: draw the tumour "
                  "in QuPath, export the annotations as GeoJSON and pass them with `--roi` to count inside them.", ""]
    else:
        lines += [f"What was counted: the nuclei whose centre lies inside the annotations of `{summary.roi.name}` "
                  "(the region of interest); nuclei outside were not counted and are not in `cells.geojson`.", ""]
    index = f"{summary.index:.3f}" if summary.nuclei else "n/a (no nucleus found)"
    lines += ["| figure | value |", "|---|---|",
              f"| nuclei counted | {summary.nuclei} |",
              f"| Ki-67 positive nuclei | {summary.positive} |",
              f"| **global labelling index** (positive / counted) | **{index}** |"]
    if summary.hot_spot is not None:
        spot = summary.hot_spot
        lines.append(f"| **hot-spot index** (the {summary.region_um:g} µm region with the highest index among "
                     f"those with at least {summary.hotspot_min_nuclei} nuclei) | **{spot['index']:.3f}** "
                     f"({spot['positive']} of {spot['nuclei']} nuclei; region at x {spot['x_um']:.0f} µm, "
                     f"y {spot['y_um']:.0f} µm, row {spot['row']}, column {spot['col']} of `regions.csv`) |")
    else:
        lines.append(f"| hot-spot index | n/a: no {summary.region_um:g} µm region has {summary.hotspot_min_nuclei} "
                     f"nuclei (the minimum for a hot-spot score; `--hotspot-min-nuclei`) |")
    lines += [f"| regions with nuclei ({summary.region_um:g} µm squares) | {summary.regions} |", "",
              "Files: `cells.geojson` (one detection per nucleus, classified Positive or Negative, in the H&E "
              "slide's level-0 pixels: File > Import objects in QuPath, on the H&E slide), `regions.csv` (counts "
              "and index per region), `index_map.png` (the index of each region over a thumbnail; the hot spot "
              "outlined), `index_layer.png` / `index_layer.json` (the same as an overlay for "
              "`virtual-ihc view --readout`).", "",
              f"Cell coordinates: virtual-slide pixels x {summary.downsample:.4g} (from {summary.geometry_source}). "
              "A nucleus is positive when its mean DAB (colour deconvolution) exceeds the nucleus instrument's "
              "threshold."]
    return "\n".join(lines) + "\n"


def write_report(path: str | os.PathLike, summary: ReadoutSummary) -> None:
    """Write :func:`report_text` under a temporary name and rename it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(report_text(summary), encoding="utf-8")
    os.replace(tmp, path)
