"""Data preparation commands: whole-slide tiling and consecutive-section registration.

- ``python -m data_prep.tile_slides SLIDES... --out DIR``
- ``python -m data_prep.register_pairs HE_SLIDE KI67_SLIDE --out DIR``

(also ``virtual-ihc tile`` and ``virtual-ihc register``: every entry goes through
:func:`virtual_ihc.cli.main`). The logic lives in :mod:`virtual_ihc.slides`; these
modules only parse arguments. This module holds the arguments both commands share.
"""

from __future__ import annotations

import argparse

from virtual_ihc.slides.tiling import TilingOptions


def add_tile_arguments(parser: argparse.ArgumentParser, overlap: int) -> None:
    """Tile geometry, target resolution and metadata overrides (defaults from :class:`TilingOptions`)."""
    defaults = TilingOptions()
    parser.add_argument("--tile-size", type=int, default=defaults.tile_size, help="tile side in output pixels")
    parser.add_argument("--overlap", type=int, default=overlap, help="pixels shared by neighbouring tiles")
    parser.add_argument("--min-tissue", type=float, default=defaults.min_tissue, help="least tissue fraction per tile")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-mag", type=float, help="output magnification, e.g. 20 (default: native level 0)")
    target.add_argument("--target-mpp", type=float, help="output microns per pixel, e.g. 0.5")
    parser.add_argument("--mpp", type=float, help="microns per level-0 pixel, overrides (or replaces missing) metadata")
    parser.add_argument("--objective-power", type=float,
                        help="scan magnification, overrides (or replaces missing) metadata")


def tiling_options(args: argparse.Namespace, **extra) -> TilingOptions:
    """:class:`TilingOptions` from the arguments of :func:`add_tile_arguments` (plus ``extra`` fields)."""
    return TilingOptions(tile_size=args.tile_size, overlap=args.overlap, min_tissue=args.min_tissue,
                         target_mpp=args.target_mpp, target_mag=args.target_mag, mpp=args.mpp,
                         objective_power=args.objective_power, **extra)
