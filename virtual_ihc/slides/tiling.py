"""Whole-slide tiling: tissue tiles of many slides into train/test folders per stain.

For each slide (:class:`~virtual_ihc.slides.splits.SlideEntry`):

1. choose the pyramid level and resize for the target resolution
   (:func:`~virtual_ihc.io.slides.choose_level`);
2. compute a tissue mask on a low-resolution view (``mask_downsample`` output
   pixels per mask pixel) and keep grid tiles whose masked fraction is at least
   ``min_tissue`` -- background is never read at full resolution;
3. read the kept tiles region by region, optionally stain-normalise H&E tiles,
   and write them as PNGs or TFRecord shards.

Output layout (what the training pipeline reads)::

    OUT/he/train/   OUT/he/test/   OUT/ki67/train/   OUT/ki67/test/
        <slide_id>_x<X>_y<Y>.png         (X, Y: level-0 pixels of the tile corner)
        or <slide_id>-<chunk>.tfrecord   (with --format tfrecord)
    OUT/manifest.csv      one row per tile (MANIFEST_COLUMNS)
    OUT/splits.csv        the slide table with the split of every slide
    OUT/tiling_options.json, OUT/.done/<slide_id>.csv (resume markers)

Work is cut into chunks of ``tiles_per_chunk`` tiles (one TFRecord shard each) and
spread over worker processes. A slide whose marker exists is skipped on a
re-run; a slide that cannot be opened or read is reported and skipped.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import logging
import multiprocessing
import os
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.grid import tile_grid, tile_tissue_fractions
from virtual_ihc.histology.normalization import StainNormalizer, StainStats, fit_stain_stats
from virtual_ihc.histology.tissue import tissue_mask
from virtual_ihc.io.images import encode_png, remove_orphaned_temporaries, write_csv_rows, write_image_rgb
from virtual_ihc.io.slides import (LevelChoice, choose_level, open_slide, output_size, read_downsampled,
                                   read_scaled_region)
from virtual_ihc.io.tfrecords import TileRecord, write_tile_shard
from virtual_ihc.slides.splits import TEST_FRACTION, SlideEntry, assign_splits, read_slide_table, write_slide_table

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("slide", "stain", "split", "pair_id", "patient_id", "level", "downsample",
                    "x", "y", "size", "tissue_fraction", "file")
FORMATS = ("png", "tfrecord")
DONE_FOLDER = ".done"
OPTIONS_FILE = "tiling_options.json"
NORMALIZER_FILE = "stain_normalization.json"


@dataclasses.dataclass(frozen=True)
class TilingOptions:
    """How slides are tiled.

    Attributes:
        tile_size: tile side in output pixels.
        overlap: pixels shared by neighbouring tiles (stride = tile_size - overlap).
        target_mpp: output µm/px (``None``: see ``target_mag``).
        target_mag: output magnification (``None`` with ``target_mpp`` ``None``: native level 0).
        mpp: µm/px of level 0 overriding the slides' metadata.
        objective_power: scan magnification overriding the slides' metadata.
        min_tissue: least tissue fraction (of the low-resolution mask) a tile needs;
            a tile without any tissue is never kept.
        mask_downsample: output pixels per tissue-mask pixel.
        image_format: ``"png"`` or ``"tfrecord"``.
        tiles_per_chunk: tiles per unit of parallel work (and per TFRecord shard).
    """

    tile_size: int = 288
    overlap: int = 144
    target_mpp: float | None = None
    target_mag: float | None = None
    mpp: float | None = None
    objective_power: float | None = None
    min_tissue: float = 0.5
    mask_downsample: int = 16
    image_format: str = "png"
    tiles_per_chunk: int = 256

    def __post_init__(self):
        if self.image_format not in FORMATS:
            raise InputError(f"format must be one of {FORMATS}, got {self.image_format!r}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise InputError(f"min_tissue must be in [0, 1], got {self.min_tissue}")
        if not 0 <= self.overlap < self.tile_size:
            raise InputError(f"overlap must be in [0, tile_size), got {self.overlap} for {self.tile_size}")


@dataclasses.dataclass
class SlidePlan:
    """Tiles to cut from one slide: origins ``(x, y)`` in output pixels and their tissue fractions."""

    entry: SlideEntry
    choice: LevelChoice
    origins: list[tuple[int, int]]
    fractions: list[float]
    stain_stats: StainStats | None = None


@dataclasses.dataclass
class TilingSummary:
    """What a run did: tile counts of the slides tiled now, slides already done, failures."""

    out_dir: Path
    tiled: dict[str, int] = dataclasses.field(default_factory=dict)
    already_done: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    manifest: Path | None = None


def draw_tile_grid(image: np.ndarray, origins: list[tuple[int, int]], tile_size: float, downsample: float = 1.0,
                   colour: tuple[int, int, int] = (20, 60, 220), thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` with the outline of every tile drawn on it.

    Args:
        image: ``uint8 (H, W, 3)``, e.g. a slide overview ``downsample`` times smaller than the
            tiles' pixels (:func:`plan_slide` origins are in output pixels; pass the overview's
            output pixels per overview pixel, e.g. ``TilingOptions.mask_downsample``).
        origins: tile corners ``(x, y)`` in output pixels.
        tile_size: tile side in output pixels.
        downsample: output pixels per ``image`` pixel.
        colour: RGB of the outlines.
        thickness: line width in ``image`` pixels.
    """
    out = np.ascontiguousarray(np.asarray(image, np.uint8)).copy()
    side = tile_size / downsample
    for x, y in origins:
        x0, y0 = int(round(x / downsample)), int(round(y / downsample))
        x1, y1 = int(round(x / downsample + side)) - 1, int(round(y / downsample + side)) - 1
        cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(value) for value in colour), thickness)
    return out


def plan_slide(entry: SlideEntry, options: TilingOptions, normalize_method: str | None = None) -> SlidePlan:
    """Choose the level, mask the tissue and list the tiles to cut from one slide.

    With ``normalize_method`` (H&E slides only) the slide's stain statistics are
    estimated on the same low-resolution view, so all its tiles share one mapping.
    """
    with open_slide(entry.path, mpp=options.mpp, objective_power=options.objective_power) as slide:
        choice = choose_level(slide, options.target_mpp, options.target_mag)
        width, height = output_size(slide, choice)
        overview = read_downsampled(slide, choice.downsample * options.mask_downsample)
    mask = tissue_mask(overview)
    corners = tile_grid(height, width, options.tile_size, options.overlap)
    fractions = tile_tissue_fractions(mask, corners, options.tile_size, options.mask_downsample)
    grid = [(x, y) for y, x in corners]  # a plan's origins are (x, y), as slide coordinates are
    keep = [index for index, fraction in enumerate(fractions) if fraction >= options.min_tissue and fraction > 0]
    stats = None
    if normalize_method and entry.stain == "he" and keep:
        stats = fit_stain_stats(normalize_method, overview)
    logger.info("%s: level %d, %d x %d px at output resolution, %d / %d tiles with tissue",
                entry.slide_id, choice.level, width, height, len(keep), len(grid))
    return SlidePlan(entry, choice, [grid[index] for index in keep], [float(fractions[index]) for index in keep],
                     stats)


@dataclasses.dataclass(frozen=True)
class _Chunk:
    """One unit of parallel work: ``plan`` holds only this chunk's tiles of one slide."""

    plan: SlidePlan
    index: int


def _split_plan(plan: SlidePlan, tiles_per_chunk: int) -> list[_Chunk]:
    return [_Chunk(dataclasses.replace(plan, origins=plan.origins[start:start + tiles_per_chunk],
                                       fractions=plan.fractions[start:start + tiles_per_chunk]), index)
            for index, start in enumerate(range(0, len(plan.origins), tiles_per_chunk))]


def _tile_name(entry: SlideEntry, choice: LevelChoice, x: int, y: int) -> tuple[int, int, str]:
    level0_x, level0_y = int(round(x * choice.downsample)), int(round(y * choice.downsample))
    return level0_x, level0_y, f"{entry.slide_id}_x{level0_x}_y{level0_y}"


def _cut_chunk(chunk: _Chunk, out_dir: Path, options: TilingOptions,
               normalizer: StainNormalizer | None) -> list[dict]:
    """Read, normalise and write the tiles of one chunk; returns their manifest rows."""
    plan, entry = chunk.plan, chunk.plan.entry
    folder = out_dir / entry.stain / entry.split
    rows, records, written = [], [], []
    shard = folder / f"{entry.slide_id}-{chunk.index:05d}.tfrecord"
    try:
        with open_slide(entry.path, mpp=options.mpp, objective_power=options.objective_power) as slide:
            for (x, y), fraction in zip(plan.origins, plan.fractions):
                tile = read_scaled_region(slide, plan.choice, x, y, options.tile_size, options.tile_size)
                if normalizer is not None and plan.stain_stats is not None:
                    tile = normalizer.transform(tile, plan.stain_stats)
                level0_x, level0_y, name = _tile_name(entry, plan.choice, x, y)
                if options.image_format == "png":
                    target = write_image_rgb(folder / f"{name}.png", tile)
                    written.append(target)
                else:
                    target = shard
                    records.append(TileRecord(encode_png(tile), entry.slide_id, level0_x, level0_y, options.tile_size))
                rows.append(dict(slide=entry.slide_id, stain=entry.stain, split=entry.split, pair_id=entry.pair_id,
                                 patient_id=entry.patient_id, level=plan.choice.level,
                                 downsample=round(plan.choice.downsample, 6), x=level0_x, y=level0_y,
                                 size=options.tile_size, tissue_fraction=round(fraction, 4),
                                 file=target.relative_to(out_dir).as_posix()))
        if records:
            write_tile_shard(shard, records)
    except BaseException:
        for path in written:  # no partial chunk survives a failure
            path.unlink(missing_ok=True)
        raise
    return rows


def _write_csv(path: Path, rows: list[dict], columns=MANIFEST_COLUMNS) -> Path:
    """Write rows atomically (temporary file, then rename)."""
    return write_csv_rows(path, rows, columns)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a manifest CSV as dicts of strings."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_options(out_dir: Path, options: TilingOptions, normalizer: StainNormalizer | None) -> None:
    """Refuse to resume into a folder tiled with other options or normalisation (tiles would be mixed)."""
    recorded = out_dir / OPTIONS_FILE
    current = {**dataclasses.asdict(options),
               "normalize": normalizer.target.to_dict() if normalizer is not None else None}
    if recorded.exists():
        previous = json.loads(recorded.read_text())
        if previous != current:
            changed = sorted(key for key in current if previous.get(key) != current[key])
            raise InputError(f"{out_dir} was tiled with other options ({', '.join(changed)} differ); "
                             f"use a new --out folder or the same options")
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(current, indent=2))


def _keep_previous_splits(entries: list[SlideEntry], out_dir: Path) -> list[SlideEntry]:
    """Entries with the split recorded by an earlier run (so a resumed run never moves a slide)."""
    table = out_dir / "splits.csv"
    if not table.exists():
        return entries
    previous = {entry.slide_id: entry.split for entry in read_slide_table(table)}
    return [dataclasses.replace(entry, split=entry.split or previous.get(entry.slide_id, ""))
            for entry in entries]


def _run_tasks(function, tasks: list, workers: int):
    """Yield ``(task, result or exception)`` in completion order, in processes when ``workers > 1``."""
    if workers <= 1:
        for task in tasks:
            try:
                yield task, function(task)
            except Exception as error:  # reported per slide by the caller
                yield task, error
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads or slide handles
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(function, task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            yield futures[future], error if error is not None else future.result()


@dataclasses.dataclass(frozen=True)
class _Planner:
    """Picklable ``plan_slide`` with fixed options (for worker processes)."""

    options: TilingOptions
    normalize_method: str | None

    def __call__(self, entry: SlideEntry) -> SlidePlan:
        return plan_slide(entry, self.options, self.normalize_method)


@dataclasses.dataclass(frozen=True)
class _Cutter:
    """Picklable ``_cut_chunk`` with fixed output folder, options and normaliser."""

    out_dir: Path
    options: TilingOptions
    normalizer: StainNormalizer | None

    def __call__(self, chunk: _Chunk) -> list[dict]:
        return _cut_chunk(chunk, self.out_dir, self.options, self.normalizer)


def _describe(error: BaseException) -> str:
    """The message of an expected failure (bad file, metadata, value); type and message otherwise."""
    return str(error) if isinstance(error, (OSError, ValueError)) else f"{type(error).__name__}: {error}"


def tile_slides(entries: list[SlideEntry], out_dir: str | os.PathLike, options: TilingOptions = TilingOptions(),
                test_fraction: float = TEST_FRACTION, seed: int = 0, test_ids: tuple[str, ...] = (),
                normalizer: StainNormalizer | None = None, workers: int = 1,
                progress: bool = True) -> TilingSummary:
    """Tile slides into ``out_dir`` (layout in the module docstring); resumable.

    Args:
        entries: slides; their ``split`` is assigned here when empty (by slide / pair / patient).
        out_dir: output folder.
        options: tile size, overlap, resolution, tissue threshold, format.
        test_fraction, seed, test_ids: see :func:`~virtual_ihc.slides.splits.assign_splits`.
        normalizer: stain normaliser applied to H&E tiles (``None`` = none).
        workers: processes (1 = in this process).
        progress: show a progress bar over tiles.

    Returns:
        A :class:`TilingSummary`; unreadable slides are in ``failed`` with the reason.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    remove_orphaned_temporaries(out_dir)  # tiles of a killed earlier run
    normalize_method = normalizer.method if normalizer is not None else None
    _check_options(out_dir, options, normalizer)
    if normalizer is not None:
        normalizer.save(out_dir / NORMALIZER_FILE)
    entries = _keep_previous_splits(entries, out_dir)
    summary = TilingSummary(out_dir)
    done_dir = out_dir / DONE_FOLDER
    todo = []
    for entry in entries:
        if (done_dir / f"{entry.slide_id}.csv").exists():
            summary.already_done.append(entry.slide_id)
        else:
            todo.append(entry)
    plans = []
    for entry, result in _run_tasks(_Planner(options, normalize_method), todo, workers):
        if isinstance(result, Exception):
            summary.failed[str(entry.path)] = _describe(result)
            logger.warning("skipping %s: %s", entry.path, _describe(result))
        else:
            plans.append(result)
    # splits are drawn among readable slides only, so an unreadable slide never takes a test place
    readable = {plan.entry.slide_id for plan in plans} | set(summary.already_done)
    entries = assign_splits([entry for entry in entries if entry.slide_id in readable], test_fraction, seed, test_ids)
    write_slide_table(out_dir / "splits.csv", entries)
    split_of = {entry.slide_id: entry.split for entry in entries}
    plans = [dataclasses.replace(plan, entry=dataclasses.replace(plan.entry, split=split_of[plan.entry.slide_id]))
             for plan in plans]
    chunks = [chunk for plan in plans for chunk in _split_plan(plan, options.tiles_per_chunk)]
    rows_of = {plan.entry.slide_id: [] for plan in plans}
    bar = tqdm(total=sum(len(plan.origins) for plan in plans), unit="tile", disable=not progress or None)
    for chunk, result in _run_tasks(_Cutter(out_dir, options, normalizer), chunks, workers):
        entry = chunk.plan.entry
        bar.update(len(chunk.plan.origins))
        if isinstance(result, Exception):
            summary.failed.setdefault(str(entry.path), _describe(result))
            logger.warning("skipping %s: %s", entry.path, _describe(result))
        else:
            rows_of[entry.slide_id].extend(result)
    bar.close()
    for plan in plans:
        entry = plan.entry
        if str(entry.path) in summary.failed:
            _remove_tiles(out_dir, rows_of[entry.slide_id])
            continue
        rows = sorted(rows_of[entry.slide_id], key=lambda row: (row["y"], row["x"]))
        _write_csv(done_dir / f"{entry.slide_id}.csv", rows)
        summary.tiled[entry.slide_id] = len(rows)
    summary.manifest = _merge_manifest(out_dir)
    return summary


def _remove_tiles(out_dir: Path, rows: list[dict]) -> None:
    """Delete the files of a slide that failed part-way (its other chunks may have succeeded)."""
    for file in {row["file"] for row in rows}:
        (out_dir / file).unlink(missing_ok=True)


def _merge_manifest(out_dir: Path) -> Path:
    """``manifest.csv`` from the per-slide records of every finished slide, this run's and earlier ones."""
    rows = []
    for part in sorted((out_dir / DONE_FOLDER).glob("*.csv")):
        rows.extend(read_manifest(part))
    return _write_csv(out_dir / "manifest.csv", rows)


def format_summary(summary: TilingSummary) -> str:
    """A short human-readable report of a run."""
    lines = [f"tiled {len(summary.tiled)} slide(s), {sum(summary.tiled.values())} tiles -> {summary.out_dir}"]
    if summary.already_done:
        lines.append(f"already done (skipped): {len(summary.already_done)} slide(s)")
    if summary.manifest is not None:
        lines.append(f"manifest: {summary.manifest}")
    if summary.failed:
        lines.append(f"skipped {len(summary.failed)} unreadable slide(s):")
        lines.extend(f"  {path}: {reason}" for path, reason in sorted(summary.failed.items()))
    return "\n".join(lines)
