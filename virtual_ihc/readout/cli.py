"""``virtual-ihc readout``: the Ki-67 readout of a virtual slide, with cells QuPath opens.

::

    virtual-ihc readout slide_ki67.tif --he slide.svs --out readout/
    virtual-ihc readout slide_ki67.tif --he slide.svs --roi tumour.geojson --out readout/

Writes ``cells.geojson``, ``regions.csv``, ``index_map.png``, ``index_layer.png`` /
``index_layer.json`` and ``report.md`` into ``--out`` (see :mod:`virtual_ihc.readout.slide_readout`).
Every default comes from :class:`~virtual_ihc.readout.slide_readout.ReadoutOptions`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from virtual_ihc.readout.slide_readout import ReadoutOptions, read_out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``readout`` options to ``parser``."""
    defaults = ReadoutOptions()
    parser.add_argument("virtual", type=Path, metavar="VIRTUAL",
                        help="the virtual Ki-67 slide (virtual-ihc stain's TIFF)")
    parser.add_argument("--he", type=Path,
                        help="the H&E slide it was stained from: cells are written in its level-0 pixels (default: "
                             "the geometry virtual-ihc stain recorded in the TIFF)")
    parser.add_argument("--roi", type=Path,
                        help="QuPath GeoJSON annotations (e.g. the tumour): only nuclei inside count (default: every "
                             "nucleus counts)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--region-um", type=float, default=defaults.region_um,
                        help="side of the square regions of regions.csv and of the hot spot, µm (default: %(default)s)")
    parser.add_argument("--hotspot-min-nuclei", type=int, default=defaults.hotspot_min_nuclei,
                        help="fewest nuclei a region needs to be the hot spot (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Read the slide out; bad input raises an :class:`~virtual_ihc.errors.InputError` (one line, exit status 2)."""
    options = ReadoutOptions(region_um=args.region_um, hotspot_min_nuclei=args.hotspot_min_nuclei)
    summary = read_out(args.virtual, args.out, args.he, args.roi, options)
    index = f"{summary.index:.3f}" if summary.nuclei else "n/a"
    spot = f", hot spot {summary.hot_spot['index']:.3f}" if summary.hot_spot else ""
    print(f"{summary.slide.name}: {summary.nuclei} nuclei, {summary.positive} positive, index {index}{spot}; "
          f"{summary.cells_written} cells in {args.out / 'cells.geojson'}, report {args.out / 'report.md'}")
    return 0
