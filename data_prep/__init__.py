"""Data preparation commands: whole-slide tiling and consecutive-section registration.

- ``python -m data_prep.tile_slides SLIDES... --out DIR``
- ``python -m data_prep.register_pairs HE_SLIDE KI67_SLIDE --out DIR``

The logic lives in :mod:`virtual_ihc.data`; these modules only parse arguments.
This module holds the arguments and the entry point both commands share.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

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


def command_main(prog: str, description: str, configure_parser: Callable[[argparse.ArgumentParser], None],
                 run: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """Parse ``argv``, set up logging, run the command; returns its exit status.

    Bad input (unreadable file, missing metadata, invalid value) ends the command
    with its message and status 2 instead of a traceback.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    configure_parser(parser)
    args = parser.parse_args(argv)
    from virtual_ihc.cli import configure_logging

    configure_logging()
    try:
        return run(args)
    except (OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
