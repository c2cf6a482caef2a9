"""Virtual staining of one image or whole slide: read, tile, run, stitch, write.

:func:`stain_file` reads the input at the model's resolution (the export's
µm/px, or ``target_mpp``; level 0 when neither is known), masks the tissue on a
low-resolution overview, stitches the generator's outputs over overlapping
tiles (:mod:`virtual_ihc.inference.stitching`) and writes

- a plain image of the same size when OUTPUT is a PNG/JPEG/BMP, or
- a pyramidal tiled TIFF when OUTPUT is ``.tif``/``.tiff``
  (:mod:`virtual_ihc.io.tiff_pyramid`), with the µm/px of the input times
  the processing downsample (the input's own when read at level 0).

Instance normalisation is slide-consistent by default
(:mod:`virtual_ihc.inference.slide_statistics`: a first pass measures every tissue
tile's statistics, the second stains with statistics smoothed over neighbouring tiles)
when the model offers its ``.keras`` generator; ``NormalizationOptions(method="tile")``
is the generator's own per-tile normalisation. Where the H&E is glass (its
full-resolution tissue mask, feathered), the output is ``glass_colour``.

Slide runs write the TIFF inside ``.OUTPUT.partial/`` next to OUTPUT, every
level streamed as the tile rows are finished, and keep their state there:
``state.json`` (what the run is, how many tile rows the first pass measured and
how many the second finished), ``statistics_NNNNN.npy`` (the first pass's
statistics, one file per tile row) and ``state_NNNNN.npz`` (the blending carry of
the last finished row, the pyramid's rows waiting for their TIFF tile row, and the
TIFF's length and tile tables). ``resume=True`` continues from there without
redoing finished rows of either pass; the TIFF is renamed to OUTPUT only when complete.
The TIFF's ImageDescription records the processing geometry (:func:`geometry_description`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.grid import tile_tissue_fractions
from virtual_ihc.histology.normalization import StainNormalizer, fit_stain_stats
from virtual_ihc.histology.tissue import is_colourless, tissue_mask
from virtual_ihc.inference.glass import GlassRule
from virtual_ihc.inference.slide_statistics import NormalizationOptions, StatisticsStore
from virtual_ihc.inference.stitching import WHITE, StitchOptions, TileLayout, TileModel, TileReader
from virtual_ihc.inference.tile_staining import TileStaining, effective_normalization
from virtual_ihc.io.images import TIFF_EXTENSIONS, write_image_rgb
from virtual_ihc.io.slides import (LevelChoice, Slide, SlideMetadataError, choose_level, open_slide, output_size,
                                   read_downsampled, read_scaled_region)
from virtual_ihc.io.tiff_pyramid import StreamedPyramid, TiffPyramidWriter, level_shapes

logger = logging.getLogger(__name__)

#: long side (pixels) of the overview on which tissue is masked and stain statistics are
#: fitted (smaller images are used as they are); small enough to come from a coarse level
OVERVIEW_SIDE = 1024
STATE_FILE = "state.json"
#: version of the partial folder's layout, in the fingerprint: other layouts are not resumed
PARTIAL_FORMAT = 3
#: the key of the output TIFF's ImageDescription JSON (:func:`geometry_description`)
DESCRIPTION_KEY = "virtual_ihc"
#: progress(tile_rows_done, tile_rows_total)
Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class StainOptions:
    """Everything about a staining run except the files and the model.

    Attributes:
        stitch: tiling and blending.
        whole: run the whole image through the model in one pass (small images only).
        target_mpp, target_mag: µm/px or magnification to process at (at most one;
            neither: the model's µm/px from its export metadata, else level 0).
        mpp, objective_power: the input's level-0 µm/px or scan magnification,
            overriding (or replacing missing) metadata.
        compression: TIFF output compression, ``"jpeg"`` or ``"deflate"``.
        resume: continue an interrupted slide run; skip inputs whose output exists.
        normalization: instance normalisation over the tiles; ``None`` = slide-consistent
            (``NormalizationOptions()``) when the model has a ``.keras`` generator, else per tile.
        glass_colour: RGB written where the H&E is glass (and for tiles not run);
            ``None`` = the generator's output everywhere (tiles not run are white).
    """

    stitch: StitchOptions = StitchOptions()
    whole: bool = False
    target_mpp: float | None = None
    target_mag: float | None = None
    mpp: float | None = None
    objective_power: float | None = None
    compression: str = "jpeg"
    resume: bool = False
    normalization: NormalizationOptions | None = None
    glass_colour: tuple[int, int, int] | None = WHITE

    def __post_init__(self):
        if self.glass_colour is not None and (len(self.glass_colour) != 3
                                              or not all(0 <= value <= 255 for value in self.glass_colour)):
            raise InputError(f"glass colour must be three values in [0, 255], got {self.glass_colour}")


@dataclasses.dataclass
class StainResult:
    """What one run did.

    Attributes:
        width, height: output size (processing-resolution pixels).
        downsample: level-0 input pixels per output pixel.
        mpp: µm/px written to the output (``None`` = unknown).
        tiles_total, tiles_run: tiles in the grid / run through the model in this call.
        tiles_measured: tiles whose statistics the first pass measured in this call.
        normalization: ``"kernel"`` or ``"tile"``: how the tiles were normalised.
        rows_resumed: tile rows found done by an earlier run.
        seconds: wall time of this call.
        skipped: the output already existed and ``resume`` was set.
    """

    input: Path
    output: Path
    width: int = 0
    height: int = 0
    downsample: float = 1.0
    mpp: float | None = None
    tiles_total: int = 0
    tiles_run: int = 0
    tiles_measured: int = 0
    normalization: str = "tile"
    rows_resumed: int = 0
    seconds: float = 0.0
    skipped: bool = False


def is_tiff_output(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in TIFF_EXTENSIONS


def already_stained(output: str | os.PathLike, options: StainOptions) -> bool:
    """``resume`` is set and ``output`` exists: the input is skipped."""
    return options.resume and Path(output).exists()


def partial_dir(output: str | os.PathLike) -> Path:
    """Where an unfinished slide run keeps its state."""
    output = Path(output)
    return output.with_name(f".{output.name}.partial")


def overview_downsample(width: int, height: int) -> float:
    """Processing pixels per overview pixel for an image of ``width x height`` (see :data:`OVERVIEW_SIDE`)."""
    return max(1.0, max(width, height) / OVERVIEW_SIDE)


def tissue_tiles(overview: np.ndarray, layout: TileLayout, overview_downsample: float,
                 min_tissue: float) -> np.ndarray:
    """bool ``(rows, cols)``: tiles whose tissue fraction on the overview exceeds ``min_tissue``.

    The mask is dilated by one overview pixel so that tissue edges thinner than
    an overview pixel still count.
    """
    mask = cv2.dilate(tissue_mask(overview).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    corners = [(y, x) for x, y in layout.origins()]
    fractions = tile_tissue_fractions(mask, corners, max(layout.tile_height, layout.tile_width), overview_downsample)
    return (fractions > min_tissue).reshape(layout.num_rows, len(layout.col_starts))


def processing_level(slide: Slide, options: StainOptions, model_mpp: float | None) -> LevelChoice:
    """Where to read ``slide``: the asked resolution, else the model's, else level 0.

    Raises:
        SlideMetadataError: a target was asked for and the slide has no resolution metadata.
    """
    if options.target_mpp is not None or options.target_mag is not None:
        return choose_level(slide, options.target_mpp, options.target_mag)
    if model_mpp is None:
        return choose_level(slide)
    try:
        return choose_level(slide, target_mpp=model_mpp)
    except SlideMetadataError:
        logger.warning("%s has no resolution metadata: stained at its own resolution, not at the model's "
                       "%.3g µm/px (set --mpp to rescale)", slide.path.name, model_mpp)
        return choose_level(slide)


def read_tile_region(slide, choice, y: int, x: int, height: int, width: int) -> np.ndarray:
    """``uint8`` RGB ``(height, width, 3)`` at ``(y, x)`` in processing-resolution pixels."""
    return read_scaled_region(slide, choice, x, y, width, height)


def _normalized(read_region: TileReader, normalizer: StainNormalizer | None, overview: np.ndarray) -> TileReader:
    """``read_region`` followed by stain normalisation with statistics fitted once on the overview."""
    if normalizer is None:
        return read_region
    stats = fit_stain_stats(normalizer.method, overview)

    def read_tile(y: int, x: int, height: int, width: int) -> np.ndarray:
        return normalizer.transform(read_region(y, x, height, width), stats)

    return read_tile


def _fingerprint(input_path: Path, model_name: str, options: StainOptions, layout: TileLayout,
                 downsample: float, normalizer: StainNormalizer | None,
                 normalization: NormalizationOptions | None) -> dict:
    """What must match for a partial run to be resumed."""
    status = input_path.stat()
    return {"input": str(input_path.resolve()), "input_bytes": status.st_size, "input_mtime_ns": status.st_mtime_ns,
            "model": model_name, "stitch": dataclasses.asdict(options.stitch), "whole": options.whole,
            "downsample": downsample, "size": [layout.height, layout.width],
            "normalizer": normalizer.target.to_dict() if normalizer is not None else None,
            "normalization": dataclasses.asdict(normalization) if normalization is not None else "tile",
            "glass_colour": list(options.glass_colour) if options.glass_colour is not None else None,
            "compression": options.compression, "partial_format": PARTIAL_FORMAT}


def _load_state(folder: Path, fingerprint: dict) -> dict | None:
    """The saved state if it belongs to this run, else ``None`` (a different run is discarded)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint:
        logger.warning("%s belongs to a different run (input, model or options changed): starting over", folder)
        return None
    return state


def _arrays_file(folder: Path, rows_done: int) -> Path:
    return folder / f"state_{rows_done:05d}.npz"


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` (``np.load`` reads it) deflated at level 1: glass and white rows shrink to almost nothing, fast."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def _write_state(folder: Path, fingerprint: dict, rows_done: int, statistics_rows: int) -> None:
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "statistics_rows": statistics_rows,
                               "rows_done": rows_done}))
    os.replace(tmp, folder / STATE_FILE)


def _save_state(folder: Path, fingerprint: dict, rows_done: int, arrays: dict[str, np.ndarray]) -> None:
    """Record ``rows_done`` finished tile rows; the arrays are written before the state points to them."""
    _save_arrays(_arrays_file(folder, rows_done), arrays)
    _write_state(folder, fingerprint, rows_done, statistics_rows=-1)
    _arrays_file(folder, rows_done - 1).unlink(missing_ok=True)


def _model_name(model: TileModel) -> str:
    name = str(getattr(model, "path", type(model).__name__))
    precision = getattr(model, "precision", "float32")  # a bfloat16 run must not resume a float32 one
    return name if precision == "float32" else f"{name} ({precision})"


def geometry_description(input_path: Path, slide: Slide, choice: LevelChoice) -> str:
    """The output TIFF's ImageDescription: JSON of where its pixels lie on the input slide.

    ``{"virtual_ihc": {"source": file name, "source_size": [width, height] of the input's
    level 0, "downsample": input level-0 pixels per output pixel}}``; ``virtual-ihc readout``
    maps its cells back to the H&E's level 0 with it.
    """
    return json.dumps({DESCRIPTION_KEY: {"source": input_path.name, "source_size": list(slide.dimensions),
                                         "downsample": choice.downsample}}, ensure_ascii=True)


def stain_file(input_path: str | os.PathLike, output_path: str | os.PathLike, model: TileModel,
               options: StainOptions = StainOptions(), normalizer: StainNormalizer | None = None,
               progress: Progress | None = None) -> StainResult:
    """Virtually stain one image or slide.

    Args:
        input_path: image (PNG/JPEG/TIFF) or whole-slide image (anything
            :func:`~virtual_ihc.io.slides.open_slide` reads).
        output_path: ``.tif``/``.tiff`` for a pyramidal TIFF, else a plain image.
        model: tile function; a :class:`~virtual_ihc.inference.model.StainModel`
            also supplies the training µm/px and the statistics of slide-consistent normalisation.
        options: see :class:`StainOptions`.
        normalizer: stain normaliser applied to every tile, with statistics
            fitted once on the slide's overview (``None`` = none).
        progress: called after every tile row of each pass (``total`` counts the rows of both).

    Raises:
        SlideReadError: the input cannot be read.
        SlideMetadataError: a target µm/px was asked for and the input has no resolution metadata.
        ModelNotFoundError: slide-consistent normalisation was asked for and the model has no ``.keras`` generator.
    """
    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    result = StainResult(input_path, output_path)
    if already_stained(output_path, options):
        logger.info("%s exists: skipped (resume)", output_path)
        result.skipped = True
        return result
    normalization = effective_normalization(model, options.normalization, options.whole)
    with contextlib.ExitStack() as stack:
        slide = stack.enter_context(open_slide(input_path, mpp=options.mpp, objective_power=options.objective_power))
        choice = processing_level(slide, options, getattr(model, "mpp", None))
        width, height = output_size(slide, choice)
        layout = (TileLayout.whole(height, width) if options.whole
                  else TileLayout.plan(height, width, options.stitch))
        overview_scale = overview_downsample(width, height)
        overview = read_downsampled(slide, choice.downsample * overview_scale)
        if is_colourless(overview):
            logger.warning("%s has no colour (grayscale?): tissue is found by darkness, and the virtual stain of a "
                           "grey image is unreliable (the model learnt colour H&E)", input_path.name)
        if options.whole or options.stitch.keep_background:
            is_tissue = np.ones((layout.num_rows, len(layout.col_starts)), bool)
        else:
            is_tissue = tissue_tiles(overview, layout, overview_scale, options.stitch.min_tissue)
        if normalization is not None and not is_tissue.any():
            normalization = None  # nothing to measure: every tile is glass
        read_tile = _normalized(functools.partial(read_tile_region, slide, choice), normalizer, overview)
        result.width, result.height, result.downsample = width, height, choice.downsample
        result.mpp = slide.mpp * choice.downsample if slide.mpp is not None else None
        result.tiles_total = layout.num_tiles
        result.normalization = "kernel" if normalization is not None else "tile"
        logger.info("%s: %dx%d px at downsample %.3g (level %d), %d tiles, %d with tissue, %s normalisation",
                    input_path.name, width, height, choice.downsample, choice.level, layout.num_tiles,
                    int(is_tissue.sum()), "slide-consistent" if normalization is not None else "per-tile")
        glass = (GlassRule.for_slide(overview, options.glass_colour) if options.glass_colour is not None else None)
        staining = TileStaining(layout, read_tile, model, is_tissue, options.stitch.batch_size, normalization, glass)
        if is_tiff_output(output_path):
            fingerprint = _fingerprint(input_path, _model_name(model), options, layout, choice.downsample,
                                       normalizer, normalization)
            _stain_to_tiff(staining, output_path, fingerprint, options, result, progress,
                           geometry_description(input_path, slide, choice))
        else:
            _stain_to_image(staining, output_path, result, progress)
    result.seconds = time.perf_counter() - started
    return result


def _progress_rows(staining: TileStaining, progress: Progress | None) -> Callable[[int, bool], None]:
    """``report(rows done in this pass, second pass?)`` for ``progress``, which counts the rows of both passes."""
    rows = staining.layout.num_rows
    two_passes = staining.normalization is not None

    def report(done: int, second_pass: bool) -> None:
        if progress:
            progress(done + (rows if second_pass and two_passes else 0), 2 * rows if two_passes else rows)

    return report


def _stain_to_image(staining: TileStaining, output_path: Path, result: StainResult,
                    progress: Progress | None) -> None:
    """Stitch in memory and write an image (inputs that are images are in memory anyway)."""
    layout = staining.layout
    report = _progress_rows(staining, progress)
    store = None
    if staining.normalization is not None:
        store = StatisticsStore()
        result.tiles_measured = staining.measure(store, 0, lambda done: report(done, False))
    image = np.empty((layout.height, layout.width, 3), np.uint8)
    with contextlib.closing(staining.stitch(store)) as bands:
        for band in bands:
            image[band.y:band.y + len(band.pixels)] = band.pixels
            result.tiles_run += band.tiles_run
            report(band.row + 1, True)
    write_image_rgb(output_path, image)


def _stain_to_tiff(staining: TileStaining, output_path: Path, fingerprint: dict, options: StainOptions,
                   result: StainResult, progress: Progress | None, description: str) -> None:
    """Measure (slide-consistent normalisation), then stitch and stream every level into the partial folder's
    TIFF (both passes resumable), then rename it."""
    layout = staining.layout
    folder = partial_dir(output_path)
    tiff_path = folder / f"output{output_path.suffix}"
    shapes = level_shapes(layout.height, layout.width)
    report = _progress_rows(staining, progress)
    state = _load_state(folder, fingerprint) if options.resume else None
    if state is None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        state = {"rows_done": 0, "statistics_rows": 0}
    rows_done, statistics_rows = state["rows_done"], state.get("statistics_rows", -1)
    store = StatisticsStore(folder) if staining.normalization is not None else None
    if store is not None and 0 <= statistics_rows < layout.num_rows:
        if statistics_rows:
            logger.info("%s: resuming the statistics pass after %d of %d tile rows", output_path.name,
                        statistics_rows, layout.num_rows)

        def row_measured(done: int) -> None:
            _write_state(folder, fingerprint, 0, statistics_rows=done)
            report(done, False)

        result.tiles_measured = staining.measure(store, statistics_rows, row_measured)
    carry, saved = None, None
    if rows_done:
        with np.load(_arrays_file(folder, rows_done)) as arrays:
            saved = dict(arrays)
        carry = saved["carry"]
        logger.info("%s: resuming after %d of %d tile rows", output_path.name, rows_done, layout.num_rows)
    pyramid = StreamedPyramid(TiffPyramidWriter(tiff_path, shapes, options.compression, result.mpp, saved,
                                                description), saved)
    result.rows_resumed = rows_done
    try:
        with contextlib.closing(staining.stitch(store, first_row=rows_done, carry=carry)) as bands:
            for band in bands:
                pyramid.add_rows(band.pixels)
                _save_state(folder, fingerprint, band.row + 1, {"carry": band.carry, **pyramid.state()})
                result.tiles_run += band.tiles_run
                report(band.row + 1, True)
        pyramid.finish()
    except BaseException:
        pyramid.writer.close()  # the file stays as the last saved state knows it, for --resume
        raise
    os.replace(tiff_path, output_path)
    shutil.rmtree(folder)
