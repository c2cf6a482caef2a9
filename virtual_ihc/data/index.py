"""Indexing a stain domain: which tiles a folder of tiles, large images or TFRecord shards holds.

Tiles are found from file headers; a large image (both sides above
:data:`WHOLE_TILE_FACTOR` tiles) is read once to keep the tiles of a
``tile_size`` grid with ``tile_overlap`` whose tissue fraction is at least
``min_tissue``, and its region source is decided then: region reads from the
file (tiled or stripped TIFFs, through OpenSlide / tiffslide) or a
memory-mapped copy of the decoded image (``cache_dir``). TFRecord shards are
counted once, with the slide ids they hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from virtual_ihc.errors import InputError
from virtual_ihc.grid import tile_grid, tile_tissue_fractions
from virtual_ihc.histology.tissue import tissue_signal
from virtual_ihc.io.images import TIFF_EXTENSIONS, ImageReadError, list_images, read_image_rgb, temporary_path
from virtual_ihc.io.slides import open_slide
from virtual_ihc.io.tfrecords import SLIDE_KEY, list_tfrecords

logger = logging.getLogger(__name__)

#: an image with both sides at most this many times the tile size is used whole, as one tile
WHOLE_TILE_FACTOR = 2


class DataError(InputError):
    """A domain folder cannot be used (missing, empty, no usable tile); the message names it."""


@dataclasses.dataclass(frozen=True)
class TileSource:
    """Where one training tile comes from: a whole file (``size == 0``) or a square region of it."""

    path: str
    y: int = 0
    x: int = 0
    size: int = 0


@dataclasses.dataclass
class DomainIndex:
    """The tiles of one stain domain, and the files that could not be used.

    Either ``sources`` (image files and regions) or ``records`` (TFRecord shard ->
    number of tiles in it, with ``record_slides``: shard -> the slide ids in it)
    is filled. ``regions`` tells how tiles of each large image are read: ``""``
    = region reads from the file itself (OpenSlide / tiffslide), else the
    ``.npy`` copy of the decoded image that is memory-mapped.
    """

    name: str
    sources: list[TileSource]
    skipped: dict[str, str]  # path -> reason
    records: dict[str, int] = dataclasses.field(default_factory=dict)
    record_slides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    regions: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return sum(self.records.values()) if self.records else len(self.sources)


def _image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header (no full decode)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            shape = tif.pages[0].shape
            if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
                return int(shape[1]), int(shape[2])
            return int(shape[0]), int(shape[1])
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    return height, width


def _tissue_tiles(image: np.ndarray, path: Path, tile_size: int, overlap: int,
                  min_tissue: float) -> list[TileSource]:
    """Grid tiles of a large image whose tissue fraction, at full resolution, is at least ``min_tissue``."""
    signal, floor = tissue_signal(image)  # saturation; darkness for a grayscale image
    corners = tile_grid(image.shape[0], image.shape[1], tile_size, overlap)
    fractions = tile_tissue_fractions(signal > floor, corners, tile_size)
    return [TileSource(str(path), y, x, tile_size) for (y, x), fraction in zip(corners, fractions)
            if fraction >= min_tissue]


def _region_source(path: Path, image: np.ndarray, cache_dir: Path) -> str:
    """How tiles of a large image will be read: ``""`` or the path of a memory-mappable copy.

    TIFFs that OpenSlide or tiffslide can read by region (tiled or stripped) are
    read from the file, if a test region equals the decoded image (same colour
    conversion); anything else is decoded once (``image``) into ``cache_dir``.
    """
    if path.suffix.lower() in TIFF_EXTENSIONS:
        try:
            with open_slide(path) as slide:
                side = min(64, *image.shape[:2])
                if slide.backend != "image" and slide.dimensions == (image.shape[1], image.shape[0]) and \
                        np.array_equal(slide.read_region(0, 0, 0, side, side), image[:side, :side]):
                    return ""
        except Exception as error:  # noqa: BLE001 - fall back to the decoded copy
            logger.debug("%s: no region reads (%s)", path, error)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:20]}.npy"
    tmp = temporary_path(cache)
    try:
        np.save(tmp, image, allow_pickle=False)
        os.replace(tmp, cache)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return str(cache)


def default_cache_dir() -> Path:
    """Where decoded large images go when the caller names no cache folder (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    global _DEFAULT_CACHE_DIR
    if _DEFAULT_CACHE_DIR is None:
        _DEFAULT_CACHE_DIR = Path(tempfile.mkdtemp(prefix="virtual_ihc_tiles_"))
        atexit.register(shutil.rmtree, _DEFAULT_CACHE_DIR, True)
    return _DEFAULT_CACHE_DIR


_DEFAULT_CACHE_DIR: Path | None = None


def index_domain(folder: str | Path, name: str, tile_size: int, overlap: int, min_tissue: float,
                 crop_size: int, cache_dir: str | Path | None = None) -> DomainIndex:
    """Index a folder of tiles and/or large images.

    Args:
        cache_dir: where decoded copies of large PNG/JPEG images are kept for
            region reads while training (default: a temporary folder).

    Raises:
        DataError: missing folder, no image file, or no usable tile (message names the folder).
    """
    folder = Path(folder)
    try:
        files = list_images(folder)
    except (FileNotFoundError, NotADirectoryError) as error:
        raise DataError(f"{name}: {error}") from error
    if not files:
        records = index_records(folder, name)
        if records is not None:
            return records
        raise DataError(f"{name}: no image files (png, jpg, tif, ...) in {folder}")
    sources: list[TileSource] = []
    skipped: dict[str, str] = {}
    regions: dict[str, str] = {}
    for path in files:
        try:
            if path.stat().st_size == 0:
                raise ImageReadError(f"{path}: file is empty")
            height, width = _image_size(path)
            if height < crop_size or width < crop_size:
                skipped[str(path)] = f"{height}x{width} is smaller than the {crop_size}-pixel crop"
            elif height <= WHOLE_TILE_FACTOR * tile_size and width <= WHOLE_TILE_FACTOR * tile_size:
                sources.append(TileSource(str(path)))
            else:
                image = read_image_rgb(path)
                tiles = _tissue_tiles(image, path, tile_size, overlap, min_tissue)
                if tiles:
                    regions[str(path)] = _region_source(path, image, Path(cache_dir or default_cache_dir()))
                sources.extend(tiles)
        except Exception as error:  # any unreadable header: skip the file, never the run
            skipped[str(path)] = str(error)
    for path, reason in skipped.items():
        logger.warning("%s: skipping %s: %s", name, path, reason)
    if not sources:
        raise DataError(f"{name}: no usable tiles in {folder} ({len(files)} files, {len(skipped)} skipped)")
    logger.info("%s: %d tiles from %d files in %s (%d files skipped)", name, len(sources), len(files),
                folder, len(skipped))
    return DomainIndex(name=name, sources=sources, skipped=skipped, regions=regions)


def _shard_slides(shard: str) -> tuple[int, tuple[str, ...]]:
    """Number of records in a shard and the slide ids they name (read once, at indexing)."""
    spec = {SLIDE_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
    records = tf.data.TFRecordDataset(shard).ignore_errors()
    count, slides = 0, set()
    for batch in records.batch(1024).as_numpy_iterator():
        count += len(batch)
        try:
            parsed = tf.io.parse_example(batch, spec)[SLIDE_KEY].numpy()
        except tf.errors.InvalidArgumentError:  # a malformed example: counted, no slide id
            continue
        slides.update(slide.decode("utf-8", "replace") for slide in parsed)
    return count, tuple(sorted(slides - {""}))


def index_records(folder: Path, name: str) -> DomainIndex | None:
    """A domain of TFRecord shards, or ``None`` when ``folder`` holds none."""
    shards = [str(path) for path in list_tfrecords(folder)]
    if not shards:
        return None
    # counted once here; validation splits and steps per epoch reuse the counts
    counts, slides = {}, {}
    for shard in shards:
        counts[shard], slides[shard] = _shard_slides(shard)
    if not any(counts.values()):
        raise DataError(f"{name}: the TFRecord shards in {folder} hold no tiles")
    logger.info("%s: %d tiles of %d slides in %d TFRecord shards in %s", name, sum(counts.values()),
                len(set().union(*slides.values())), len(shards), folder)
    return DomainIndex(name=name, sources=[], skipped={}, records=counts, record_slides=slides)


def slide_groups(record_slides: dict[str, tuple[str, ...]]) -> list[list[str]]:
    """Shards grouped so that shards sharing a slide are in one group (a shard without id is its own)."""
    groups: list[tuple[set[str], list[str]]] = []
    for shard in sorted(record_slides):
        slides = set(record_slides[shard]) or {f"shard:{shard}"}
        joined = [group for group in groups if group[0] & slides]
        for group in joined:
            groups.remove(group)
            slides |= group[0]
        groups.append((slides, sorted([shard] + [s for group in joined for s in group[1]])))
    return sorted((shards for _, shards in groups), key=lambda shards: shards[0])
