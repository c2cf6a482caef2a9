"""Register a Ki-67 slide onto its consecutive H&E slide and cut paired test tiles.

Usage::

    python -m data_prep.register_pairs case01_he.svs case01_ki67.svs --out pairs_out --target-mag 20

Writes ``OUT/pairs/he/`` and ``OUT/pairs/ki67/`` (same tile names), checkerboard
and overlay PNGs in ``OUT/qc/``, the transform in ``OUT/transforms/`` and a row
of ``OUT/registration.csv``; see ``docs/data_prep.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep import add_tile_arguments, tiling_options
from virtual_ihc.slides.registered_pairs import register_slide_pair
from virtual_ihc.slides.registration import RegistrationOptions


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = RegistrationOptions()
    parser.add_argument("he_slide", type=Path, help="H&E slide (the fixed image)")
    parser.add_argument("ki67_slide", type=Path, help="consecutive Ki-67 slide (warped onto the H&E grid)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--pair-id", help="prefix of the tile names (default: H&E slide name)")
    add_tile_arguments(parser, overlap=0)
    parser.add_argument("--coarse-size", type=int, default=defaults.coarse_size,
                        help="long side (px) of the view for the affine step")
    parser.add_argument("--flow-size", type=int, default=defaults.flow_size,
                        help="long side (px) of the view for the dense step")
    parser.add_argument("--rotation-step", type=float, default=defaults.rotation_step,
                        help="degrees between initial rotations tried (360 = no search)")


def run(args: argparse.Namespace) -> int:
    tiling = tiling_options(args)
    options = RegistrationOptions(coarse_size=args.coarse_size, flow_size=args.flow_size,
                                  rotation_step=args.rotation_step)
    result = register_slide_pair(args.he_slide, args.ki67_slide, args.out, tiling, options, args.pair_id)
    quality = result.quality
    print(f"{result.pair_id}: NCC {quality['ncc_before']:.3f} before, {quality['ncc_affine']:.3f} affine, "
          f"{quality['ncc_after']:.3f} after dense refinement")
    print(f"{result.tiles} paired tiles -> {args.out / 'pairs'}/{{he,ki67}}/; "
          f"check {args.out / 'qc'}/; quality table {args.out / 'registration.csv'}")
    return 0


if __name__ == "__main__":  # the way in is the dispatcher (imported here: only when run as a command)
    from virtual_ihc.cli import main

    sys.exit(main(["register", *sys.argv[1:]]))
