"""``virtual-ihc stain`` (also ``python -m virtual_ihc.stain``): virtual Ki-67 from H&E.

One slide to a pyramidal TIFF that OpenSlide viewers open::

    virtual-ihc stain slide.svs slide_ki67.tif --model runs/NAME/export/he_to_ki67

One image to an image of the same size::

    virtual-ihc stain he.png ki67.png --model runs/NAME

A folder (batch: a progress bar per input, a summary at the end); slides and
TIFFs become ``OUTPUT/<stem>.tif``, other images ``OUTPUT/<stem>.png``::

    virtual-ihc stain slides/ virtual_ki67/ --model runs/NAME --resume

A folder on a Dask cluster, one slide per task (a local cluster of 4 worker
processes, or the workers of an existing scheduler; a table of slides at the end)::

    virtual-ihc stain slides/ virtual_ki67/ --model runs/NAME --resume --workers 4
    virtual-ihc stain slides/ virtual_ki67/ --model runs/NAME --resume --scheduler tcp://host:8786

Every default comes from :class:`~virtual_ihc.inference.stitching.StitchOptions`
and :class:`~virtual_ihc.inference.whole_slide.StainOptions`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from virtual_ihc.errors import InputError
from virtual_ihc.export import PRECISIONS
from virtual_ihc.histology.normalization import METHODS, StainNormalizer
from virtual_ihc.inference.distributed import format_table, run_on_cluster
from virtual_ihc.inference.model import (DEFAULT_DIRECTION, ModelNotFoundError, StainModel,
                                         keras_generator_path, resolve_model)
from virtual_ihc.inference.slide_statistics import METHODS as NORMALIZATIONS
from virtual_ihc.inference.slide_statistics import NormalizationOptions
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.whole_slide import StainOptions, StainResult, stain_file
from virtual_ihc.io.images import IMAGE_EXTENSIONS, TIFF_EXTENSIONS, read_image_rgb, remove_orphaned_temporaries
from virtual_ihc.io.tiff_pyramid import COMPRESSIONS

logger = logging.getLogger(__name__)

#: whole-slide formats OpenSlide reads, besides TIFF
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".dcm")


def glass_colour(text: str) -> tuple[int, int, int] | None:
    """``--glass-colour``: ``R,G,B`` (0-255 each) or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        values = tuple(int(value) for value in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= value <= 255 for value in values):
        raise argparse.ArgumentTypeError(f"expected R,G,B with values 0-255 (e.g. 255,255,255) or none, got {text!r}")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``stain`` options to ``parser``."""
    stitch, stain, normalization = StitchOptions(), StainOptions(), NormalizationOptions()
    parser.add_argument("input", type=Path, help="H&E image, whole-slide image, or a folder of them")
    parser.add_argument("output", type=Path,
                        help="output file (.tif/.tiff: pyramidal tiled TIFF; .png/.jpg: image), "
                             "or a folder when INPUT is a folder")
    parser.add_argument("--model", required=True, type=Path,
                        help="exported SavedModel (RUN/export/he_to_ki67) or a training run folder")
    parser.add_argument("--direction", default=DEFAULT_DIRECTION,
                        help="export to use when --model is a run folder (default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=stitch.tile_size,
                        help="tile side in pixels (default: %(default)s)")
    parser.add_argument("--overlap", type=int, default=stitch.overlap,
                        help="pixels shared by neighbouring tiles, blended with a Hann window "
                             "(default: %(default)s)")
    parser.add_argument("--margin", type=int, default=stitch.margin,
                        help="context margin: pixels next to a tile's overlapping side that are "
                             "discarded, at most overlap/2 (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=stitch.batch_size,
                        help="tiles per generator call (default: %(default)s)")
    parser.add_argument("--whole", action="store_true",
                        help="run the whole image in one pass (no tiling; small images only)")
    parser.add_argument("--min-tissue", type=float, default=stitch.min_tissue,
                        help="tiles with at most this tissue fraction are background, written white "
                             "(default: %(default)s)")
    parser.add_argument("--keep-background", action="store_true",
                        help="run background tiles through the generator too")
    parser.add_argument("--normalization", choices=NORMALIZATIONS,
                        help="instance normalisation over the tiles: kernel = statistics measured on every tissue "
                             "tile in a first pass and smoothed over neighbouring tiles, so the slide is stained "
                             "as one (needs the run's .keras generator beside the export); tile = each tile its "
                             "own statistics (default: kernel when the .keras generator is there, else tile)")
    parser.add_argument("--kernel-tiles", type=float, default=normalization.kernel_tiles,
                        help="width (standard deviation) of the smoothing kernel of --normalization kernel, in "
                             "tiles; inf = one set of statistics for the whole slide (default: %(default)s)")
    parser.add_argument("--glass-colour", type=glass_colour, default=stain.glass_colour, metavar="R,G,B|none",
                        help="colour written where the H&E is glass (its full-resolution tissue mask, feathered) "
                             "and for tiles without tissue; none = the generator's own output on glass "
                             "(default: 255,255,255)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-mpp", type=float, default=stain.target_mpp,
                        help="microns per pixel to stain at (default: the model's, from its export "
                             "metadata; level 0 if unknown)")
    target.add_argument("--target-mag", type=float, default=stain.target_mag,
                        help="magnification to stain at, e.g. 20 (instead of --target-mpp)")
    parser.add_argument("--mpp", type=float, default=stain.mpp,
                        help="microns per level-0 pixel of the input, overrides (or replaces missing) metadata")
    parser.add_argument("--objective-power", type=float, default=stain.objective_power,
                        help="scan magnification of the input, overrides (or replaces missing) metadata")
    parser.add_argument("--compression", choices=sorted(COMPRESSIONS), default=stain.compression,
                        help="TIFF output compression (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted slide runs; skip inputs whose output exists")
    parser.add_argument("--normalize", choices=METHODS,
                        help="stain-normalise the H&E onto --target before staining")
    parser.add_argument("--target", type=Path, help="reference H&E image for --normalize")
    parser.add_argument("--normalizer", type=Path,
                        help="saved normaliser JSON (e.g. the tiler's stain_normalization.json), "
                             "instead of --normalize/--target")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int,
                         help="stain on a local Dask cluster of N worker processes, one slide per task "
                              "(default: in this process, one slide after another)")
    cluster.add_argument("--scheduler",
                         help="stain on the Dask cluster of this scheduler (e.g. tcp://host:8786), one slide per "
                              "task; inputs, outputs and the model must be at the same paths on its workers")
    parser.add_argument("--precision", choices=sorted(PRECISIONS),
                        help="compute in this precision (default: the export's); bfloat16 is faster on CPUs with "
                             "AVX512-BF16/AMX and recent GPUs; with a float32 export it rebuilds the run's .keras "
                             "generator beside the export")


def options_from_args(args: argparse.Namespace) -> StainOptions:
    stitch = StitchOptions(tile_size=args.tile_size, overlap=args.overlap, margin=args.margin,
                           batch_size=args.batch_size, min_tissue=args.min_tissue,
                           keep_background=args.keep_background)
    normalization = None
    if args.normalization is not None or args.kernel_tiles != NormalizationOptions().kernel_tiles:
        normalization = NormalizationOptions(method=args.normalization or "kernel", kernel_tiles=args.kernel_tiles)
    return StainOptions(stitch=stitch, whole=args.whole, target_mpp=args.target_mpp, target_mag=args.target_mag,
                        mpp=args.mpp, objective_power=args.objective_power, compression=args.compression,
                        resume=args.resume, normalization=normalization, glass_colour=args.glass_colour)


def normalizer_from_args(args: argparse.Namespace) -> StainNormalizer | None:
    if args.normalizer is not None:
        if args.normalize or args.target:
            raise InputError("give --normalizer or --normalize with --target, not both")
        return StainNormalizer.load(args.normalizer)
    if (args.normalize is None) != (args.target is None):
        raise InputError("--normalize and --target go together")
    return StainNormalizer.fit(args.normalize, read_image_rgb(args.target)) if args.normalize else None


def is_slide_or_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS + SLIDE_EXTENSIONS


def output_name(input_path: Path) -> str:
    """``<stem>.tif`` for slides and TIFFs, ``<stem>.png`` for other images."""
    suffix = input_path.suffix.lower()
    return input_path.stem + (".tif" if suffix in TIFF_EXTENSIONS + SLIDE_EXTENSIONS else ".png")


def plan_jobs(input_path: Path, output_path: Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs: one for a file, one per slide or image in a folder."""
    if not input_path.is_dir():
        if not input_path.exists():
            raise FileNotFoundError(f"{input_path}: no such file or folder")
        return [(input_path, output_path)]
    inputs = sorted(path for path in input_path.iterdir() if is_slide_or_image(path))
    if not inputs:
        raise FileNotFoundError(f"{input_path}: no images or slides in the folder")
    if output_path.exists() and not output_path.is_dir():
        raise NotADirectoryError(f"{output_path}: INPUT is a folder, so OUTPUT must be a folder")
    output_path.mkdir(parents=True, exist_ok=True)
    return [(path, output_path / output_name(path)) for path in inputs]


def format_result(result: StainResult) -> str:
    if result.skipped:
        return f"{result.input.name}: skipped, {result.output} exists"
    resumed = f", resumed after {result.rows_resumed} tile rows" if result.rows_resumed else ""
    return (f"{result.input.name} -> {result.output}: {result.width}x{result.height} px, "
            f"{result.tiles_run}/{result.tiles_total} tiles run{resumed}, {result.seconds:.1f} s")


def check_keras_generator(model: StainModel | Path, options: StainOptions, direction: str) -> None:
    """``--normalization kernel`` was asked for: the export must have its ``.keras`` generator beside it.

    Raises:
        ModelNotFoundError: it has none (the message names the file and the way out).
    """
    if options.normalization is None or options.normalization.method != "kernel":
        return
    path = model.keras_path if isinstance(model, StainModel) else keras_generator_path(model, direction)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no .keras generator beside the export, which --normalization kernel "
                                 f"needs; use --normalization tile")


def run(args: argparse.Namespace) -> int:
    """Stain every input; bad options or inputs raise before anything is stained (exit status 2).

    A batch goes on past an input that fails to stain (reported; exit status 1 at the end).
    """
    distributed = args.workers is not None or args.scheduler is not None
    options = options_from_args(args)
    normalizer = normalizer_from_args(args)
    jobs = plan_jobs(args.input, args.output)
    for folder in sorted({output.parent for _, output in jobs}):  # left by a killed earlier run
        remove_orphaned_temporaries(folder, recursive=False)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    # on a cluster the workers load the model; here it is only checked that it exists
    model = (resolve_model(args.model, args.direction, args.precision)[0] if distributed
             else StainModel(args.model, args.direction, args.precision))
    check_keras_generator(model, options, args.direction)
    if distributed:
        return run_distributed(args, jobs, model, options, normalizer)
    failures = 0
    for input_path, output_path in jobs:
        with tqdm(desc=input_path.name, unit="row", leave=False, disable=None) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = stain_file(input_path, output_path, model, options, normalizer, progress)
            except KeyboardInterrupt:
                print(f"interrupted: rerun with --resume to continue {input_path.name} where it stopped",
                      file=sys.stderr)
                return 130
            except ValueError as error:  # this input is unusable (an InputError) or cannot be stained
                failures += 1
                print(f"{input_path.name}: FAILED: {error}", file=sys.stderr)
                continue
        print(format_result(result))
    print(f"stained {len(jobs) - failures} of {len(jobs)} input(s)" + (f", {failures} failed" if failures else ""))
    return 1 if failures else 0


def run_distributed(args: argparse.Namespace, jobs: list[tuple[Path, Path]], model_path: Path,
                    options: StainOptions, normalizer: StainNormalizer | None) -> int:
    """``--workers`` / ``--scheduler``: one task per slide on Dask, then the table of slides."""
    logging.getLogger("distributed").setLevel(logging.WARNING)  # Dask's start-up and connection chatter
    started = time.perf_counter()
    try:
        reports = run_on_cluster(jobs, model_path, args.direction, options, normalizer, args.precision,
                                 workers=args.workers, scheduler=args.scheduler)
    except KeyboardInterrupt:
        print("interrupted: rerun with --resume to continue the unfinished slides where they stopped",
              file=sys.stderr)
        return 130
    print(format_table(reports, time.perf_counter() - started))
    return 1 if any(report.failed for report in reports) else 0
