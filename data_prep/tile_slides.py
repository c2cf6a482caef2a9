"""Cut whole-slide images into tissue tiles for training and testing.

Usage::

    python -m data_prep.tile_slides slides/he/ --stain he --out tiles --target-mag 20
    python -m data_prep.tile_slides --slides-csv slides.csv --out tiles --target-mpp 0.5

Slides are given either as files / folders of one stain (``--stain``) or as a
CSV table (``--slides-csv``: path, stain, optional pair_id, patient_id, split).
Tiles go to ``OUT/{he,ki67}/{train,test}/``; see ``docs/data_prep.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep import add_tile_arguments, tiling_options
from virtual_ihc.errors import InputError
from virtual_ihc.histology.normalization import METHODS, StainNormalizer
from virtual_ihc.io.images import read_image_rgb
from virtual_ihc.slides.splits import STAINS, TEST_FRACTION, entries_from_paths, read_slide_table
from virtual_ihc.slides.tiling import FORMATS, TilingOptions, format_summary, tile_slides


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders replaced by their (non-hidden) files, sorted."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(child for child in path.iterdir()
                                if child.is_file() and not child.name.startswith(".")))
        else:
            paths.append(path)
    return paths


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = TilingOptions()
    parser.add_argument("slides", nargs="*", help="slide files or folders of slides (all of --stain)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--stain", choices=STAINS, help="stain of the SLIDES given on the command line")
    parser.add_argument("--slides-csv", type=Path, help="CSV table: path,stain[,slide_id,pair_id,patient_id,split]")
    add_tile_arguments(parser, overlap=defaults.overlap)
    parser.add_argument("--format", choices=FORMATS, default=defaults.image_format, dest="image_format")
    parser.add_argument("--tiles-per-chunk", type=int, default=defaults.tiles_per_chunk,
                        help="tiles per unit of parallel work and per TFRecord shard")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                        help="share of slide groups held out for test")
    parser.add_argument("--test-ids", nargs="*", default=[], help="slide, pair or patient ids to hold out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test draw")
    parser.add_argument("--normalize", choices=METHODS, help="stain-normalise H&E tiles to --target")
    parser.add_argument("--target", type=Path, help="reference H&E image for --normalize")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Tile the slides; bad options or a missing input raise (exit status 2), all slides unreadable returns 1."""
    if bool(args.slides) == bool(args.slides_csv):
        raise InputError("give SLIDES (with --stain) or --slides-csv, not both or neither")
    if args.slides and not args.stain:
        raise InputError("--stain he|ki67 is required with SLIDES (or list slides in --slides-csv)")
    if bool(args.normalize) != bool(args.target):
        raise InputError("--normalize and --target go together")
    missing = [path for path in args.slides if not Path(path).exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    entries = (read_slide_table(args.slides_csv) if args.slides_csv
               else entries_from_paths(expand_inputs(args.slides), args.stain))
    options = tiling_options(args, image_format=args.image_format, tiles_per_chunk=args.tiles_per_chunk)
    normalizer = StainNormalizer.fit(args.normalize, read_image_rgb(args.target)) if args.normalize else None
    summary = tile_slides(entries, args.out, options, test_fraction=args.test_fraction, seed=args.seed,
                          test_ids=tuple(args.test_ids), normalizer=normalizer, workers=args.workers,
                          progress=not args.no_progress)
    print(format_summary(summary))
    return 1 if summary.failed and not (summary.tiled or summary.already_done) else 0


if __name__ == "__main__":  # the way in is the dispatcher (imported here: only when run as a command)
    from virtual_ihc.cli import main

    sys.exit(main(["tile", *sys.argv[1:]]))
