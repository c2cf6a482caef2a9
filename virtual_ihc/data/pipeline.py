"""The ``tf.data`` training pipeline: two unpaired stain domains, zipped.

Each domain is a folder of tiles or of large images (PNG/JPEG/TIFF). Files are
*indexed* first (headers only for tiles; large images are read once to find the
tissue tiles of a ``tile_size`` grid with ``tile_overlap``), then streamed:

    element k -> (H&E tile index, Ki-67 tile index)   independent permutations per epoch
              -> parallel decode (OpenCV / tifffile; bad files skipped and counted)
              -> random crop, flips, 90-degree rotations   (stateless, seeded by k)
              -> [-1, 1] float32 -> batch (+ k of the batch's last element) -> prefetch

Every random choice is a pure function of ``(seed, k)``: the stream is
reproducible. Each batch carries the element counter ``k`` of its last element;
the model records it, so ``--resume`` restarts the stream right after the last
element trained on, however many tiles the bad-tile filter dropped.
Unpaired: the two domains are permuted independently, so a batch never pairs a
tile with its consecutive section except by chance.

Tiles of a large image are read as regions, never by decoding the whole image
per tile: tiled or stripped TIFFs through OpenSlide / tiffslide, other images
(PNG, JPEG, ...) from a memory-mapped copy of the decoded image written once at
indexing time (``cache_dir``).

A domain folder holding sharded TFRecords (``*.tfrecord``, as written by
``python -m data_prep.tile_slides --format tfrecord``) is streamed instead:
the shard list is shuffled afresh every pass (seeded, each slide's shards
spread evenly over the pass), 16 shards are interleaved record by record, then a seeded shuffle buffer mixes them, so no
slide dominates a stretch of the stream. ``--resume`` replays the serialized
records up to the element where training stopped (without decoding them).
Records that fail to decode are skipped with a warning and counted.

Validation (without validation folders) holds out whole files, whole slides of
TFRecord domains, or, when a domain has too few files for that, a band at the
end of each large image with no tile overlapping a training tile.

Multi-worker training (``--distribute multiworker``) runs one input pipeline per
worker (:func:`make_train_dataset` with the strategy's ``InputContext``). Each
pipeline reads its own share of the files (:func:`shard_domain`: whole image
files or TFRecord shards, balanced by tile count) as a stream of its own, seeded
and resumable like the single stream. Elements are numbered across pipelines
(local element j of pipeline w of W is element ``j * W + w``), so the recorded
position means "elements consumed in total" whatever the worker count. A domain
with fewer files than workers falls back to splitting the single stream by
element: pipeline w takes elements w, w + W, ... (tile folders and large images
decode only their own elements; TFRecord workers read every record and keep
every W-th).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from virtual_ihc.io.images import TIFF_EXTENSIONS, ImageReadError, list_images, read_image_rgb, temporary_path
from virtual_ihc.grid import tile_grid, tile_tissue_fractions
from virtual_ihc.histology.tissue import tissue_signal
from virtual_ihc.pixels import uint8_to_unit

logger = logging.getLogger(__name__)

#: an image with both sides at most this many times the tile size is used whole, as one tile
WHOLE_TILE_FACTOR = 2
#: TFRecord shards read at the same time, record by record (fewer when a domain has fewer shards)
RECORD_CYCLE_LENGTH = 16
#: elements of the TFRecord shuffle buffer (at most the domain's size)
RECORD_SHUFFLE_BUFFER = 2048


class DataError(ValueError):
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


class DecodeFailures:
    """Thread-safe record of files that failed to decode while training (skipped, counted)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.failures: dict[str, str] = {}
        self.count = 0

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            self.count += 1
            if path not in self.failures:
                self.failures[path] = reason
                logger.warning("skipping unreadable tile %s: %s", path, reason)


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
        from virtual_ihc.io.slides import open_slide

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
    from virtual_ihc.io.tfrecords import SLIDE_KEY

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
    from virtual_ihc.io.tfrecords import list_tfrecords

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


def _slide_groups(record_slides: dict[str, tuple[str, ...]]) -> list[list[str]]:
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


def _split_records(index: DomainIndex, fraction: float, seed: int) -> tuple[DomainIndex, DomainIndex]:
    """Hold out whole slides (all their shards), so no slide has tiles on both sides."""
    groups = _slide_groups(index.record_slides)
    if len(groups) < 2:
        slides = ", ".join(sorted(set().union(*index.record_slides.values()))) or "one slide"
        raise DataError(f"{index.name}: every TFRecord tile comes from one slide ({slides}); a validation split "
                        "by slide needs two or more: give validation folders (--he-val-dir/--ki67-val-dir, "
                        "e.g. the test split of data_prep)")
    count = min(len(groups) - 1, max(1, int(round(fraction * len(groups)))))
    order = np.random.default_rng(seed).permutation(len(groups))
    val_shards = {shard for position in order[:count] for shard in groups[position]}
    subset = lambda keep: {shard: index.records[shard] for shard in sorted(index.records) if keep(shard)}  # noqa
    train_records, val_records = subset(lambda shard: shard not in val_shards), subset(val_shards.__contains__)
    slides_of = lambda records: sorted(set().union(*(index.record_slides[s] for s in records)))  # noqa: E731
    logger.info("%s: validation split by slide: %d tiles of %d slide(s) held out (%s), %d tiles of %d "
                "slide(s) for training", index.name, sum(val_records.values()), len(slides_of(val_records)),
                ", ".join(slides_of(val_records)[:5]), sum(train_records.values()), len(slides_of(train_records)))
    return (dataclasses.replace(index, records=train_records,
                                record_slides={s: index.record_slides[s] for s in train_records}),
            DomainIndex(f"{index.name} (val)", [], {}, val_records,
                        {s: index.record_slides[s] for s in val_records}))


def _band_split(sources: list[TileSource], fraction: float) -> tuple[list[TileSource], list[TileSource]]:
    """Split the grid tiles of one large image by a band at its far end along its longer tile axis.

    Validation tiles start at or after the band's start; training tiles end at
    or before it, so no validation tile overlaps a training tile (the tiles
    straddling the boundary are used by neither). The band holds at least
    ``fraction`` of the image's tiles (at least one tile). Returns ``(train, val)``;
    ``val`` is empty when the image is too small to leave training tiles.
    """
    def starts(axis: str) -> list[int]:
        return sorted({getattr(source, axis) for source in sources})

    axis = max(("y", "x"), key=lambda name: (len(starts(name)), starts(name)[-1] - starts(name)[0]))
    wanted = max(1, int(math.ceil(fraction * len(sources))))
    band_start = next((start for start in reversed(starts(axis))
                       if sum(getattr(source, axis) >= start for source in sources) >= wanted), starts(axis)[0])
    val = [source for source in sources if getattr(source, axis) >= band_start]
    train = [source for source in sources if getattr(source, axis) + source.size <= band_start]
    return (train, val) if train else (sources, [])


def split_validation(index: DomainIndex, fraction: float, seed: int) -> tuple[DomainIndex, DomainIndex]:
    """Hold out about ``fraction`` of a domain for validation, never with overlapping tiles on both sides.

    - TFRecord domains hold out whole slides (all their shards);
    - domains with enough files (``fraction * files >= 1``) hold out whole files;
    - domains with fewer files hold out a band at the end of each large image
      (:func:`_band_split`); small whole-tile files then all stay in training.
      Without large images, one file is held out (two files at least).

    The log says how many tiles went where.
    """
    if index.records:
        return _split_records(index, fraction, seed)
    paths = sorted({source.path for source in index.sources})
    large = sorted({source.path for source in index.sources if source.size})
    if fraction * len(paths) < 1 and large:
        train, val = [], []
        for path in paths:
            of_path = [source for source in index.sources if source.path == path]
            train_part, val_part = _band_split(of_path, fraction) if path in large else (of_path, [])
            train.extend(train_part)
            val.extend(val_part)
        if val:
            dropped = len(index.sources) - len(train) - len(val)
            logger.info("%s: %d file(s), too few to hold out %g of them whole: held out a band at the end of "
                        "each large image: %d tiles for training, %d for validation, %d left out between them "
                        "(they would overlap both)", index.name, len(paths), fraction, len(train), len(val),
                        dropped)
            return (dataclasses.replace(index, sources=train),
                    DomainIndex(f"{index.name} (val)", val, {}, regions=index.regions))
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(paths)))) if len(paths) > 1 else 0
    val_paths = set(rng.permutation(paths)[:count].tolist())
    train = [source for source in index.sources if source.path not in val_paths]
    val = [source for source in index.sources if source.path in val_paths]
    if not train or not val:
        raise DataError(f"{index.name}: cannot hold out validation files from {len(paths)} file(s) (and no large "
                        "image to hold out a band of); give a validation folder or more files")
    logger.info("%s: validation split by file: %d file(s) with %d tiles held out, %d file(s) with %d tiles for "
                "training", index.name, len(val_paths), len(val), len(paths) - len(val_paths), len(train))
    return (dataclasses.replace(index, sources=train),
            DomainIndex(f"{index.name} (val)", val, {}, regions=index.regions))


def _memory_map(cache: str) -> np.ndarray:
    """The decoded copy of a large image, memory-mapped read-only (pages load as tiles need them)."""
    return _memory_map_version(cache, os.stat(cache).st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _memory_map_version(cache: str, mtime_ns: int) -> np.ndarray:
    return np.load(cache, mmap_mode="r")  # keyed by mtime: a rewritten cache file is mapped afresh


def remove_tile_cache(cache_dir: str | Path) -> None:
    """Delete the decoded copies of large images under ``cache_dir`` (and unmap them)."""
    import shutil

    _memory_map_version.cache_clear()
    shutil.rmtree(cache_dir, ignore_errors=True)


_slides = threading.local()
#: open slide handles kept per decoding thread (closed when evicted)
SLIDE_HANDLES_PER_THREAD = 64


def _open_slide(path: str):
    """A slide handle of this thread, opened once (OpenSlide / tiffslide region reads)."""
    from virtual_ihc.io.slides import open_slide

    handles = getattr(_slides, "handles", None)
    if handles is None:
        handles = _slides.handles = {}
    if path not in handles:
        if len(handles) >= SLIDE_HANDLES_PER_THREAD:
            handles.pop(next(iter(handles))).close()
        handles[path] = open_slide(path)
    return handles[path]


def load_tile(source: TileSource, region: str | None = None) -> np.ndarray:
    """Decode one tile as ``uint8 (H, W, 3)``; raises ``ImageReadError`` for bad files.

    ``region``: for a tile of a large image, its :attr:`DomainIndex.regions` entry
    (``""`` = read the region from the file; a ``.npy`` path = from the decoded copy;
    ``None`` = decode the whole image, for callers without an index).
    """
    if source.size == 0:
        return read_image_rgb(source.path)
    window = (slice(source.y, source.y + source.size), slice(source.x, source.x + source.size))
    if region is None:
        return read_image_rgb(source.path)[window]
    if region:
        return np.array(_memory_map(region)[window])
    return _open_slide(source.path).read_region(source.x, source.y, 0, source.size, source.size)


def _decode_in_graph(decoder, value: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``decoder(value) -> (uint8 tile, ok)`` run inside ``tf.data`` through ``tf.numpy_function``."""
    tile, ok = tf.numpy_function(decoder, [value], [tf.uint8, tf.bool], stateful=False)
    tile.set_shape([None, None, 3])
    ok.set_shape([])
    return tile, ok


class TileDecoder:
    """Decodes tiles of one domain inside ``tf.data`` (via ``tf.numpy_function``).

    A file that fails to decode yields an empty placeholder and ``ok = False``;
    the pipeline filters it out, and ``failures`` counts it. Large images are
    read by region (their grid tile); whole-file tiles keep their size (the
    random crop makes them uniform).
    """

    def __init__(self, index: DomainIndex, failures: DecodeFailures, crop_size: int):
        self.index = index
        self.failures = failures
        self.crop_size = crop_size

    def __call__(self, position: np.ndarray) -> tuple[np.ndarray, bool]:
        source = self.index.sources[int(position)]
        try:
            tile = load_tile(source, self.index.regions.get(source.path))
            if tile.shape[0] < self.crop_size or tile.shape[1] < self.crop_size:
                raise ImageReadError(f"{source.path}: {tile.shape[:2]} is smaller than the crop")
            return tile, True
        except Exception as error:  # noqa: BLE001 - one bad tile never kills a run
            self.failures.add(source.path, str(error))
            return np.zeros((self.crop_size, self.crop_size, 3), np.uint8), False

    def decode(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _decode_in_graph(self, position)


class RecordDecoder:
    """Decodes serialized TFRecord tiles inside ``tf.data``; a bad record gives ``ok = False`` and is counted."""

    def __init__(self, name: str, failures: DecodeFailures, crop_size: int):
        self.name = name
        self.failures = failures
        self.crop_size = crop_size

    def __call__(self, serialized: bytes) -> tuple[np.ndarray, bool]:
        from virtual_ihc.io.tfrecords import decode_tile_record

        try:
            tile, slide, x, y = decode_tile_record(serialized)
            if min(tile.shape[:2]) < self.crop_size:
                raise ImageReadError(f"TFRecord tile of slide {slide} at x={x}, y={y}: {tile.shape[:2]} is "
                                     "smaller than the crop")
            return tile, True
        except Exception as error:  # noqa: BLE001 - one bad record never kills a run
            self.failures.add(f"{self.name}: TFRecord", str(error))
            return np.zeros((self.crop_size, self.crop_size, 3), np.uint8), False

    def decode(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _decode_in_graph(self, serialized)


def augment(tile: tf.Tensor, seed: tf.Tensor, crop_size: int, random: bool) -> tf.Tensor:
    """uint8 tile -> float32 ``(crop, crop, 3)`` in [-1, 1]; random crop, flips, rot90 when ``random``.

    Without ``random`` the crop is central (validation).
    """
    if random:
        seeds = tf.random.experimental.stateless_split(seed, 4)
        tile = tf.image.stateless_random_crop(tile, [crop_size, crop_size, 3], seed=seeds[0])
        tile = tf.image.stateless_random_flip_left_right(tile, seed=seeds[1])
        tile = tf.image.stateless_random_flip_up_down(tile, seed=seeds[2])
        quarter_turns = tf.random.stateless_uniform([], seed=seeds[3], minval=0, maxval=4, dtype=tf.int32)
        # rotated as float: oneDNN logs an error line for every uint8 transpose on some CPUs
        tile = tf.image.rot90(tf.cast(tile, tf.float32), quarter_turns)
    else:
        height, width = tf.shape(tile)[0], tf.shape(tile)[1]
        top, left = (height - crop_size) // 2, (width - crop_size) // 2
        tile = tile[top:top + crop_size, left:left + crop_size]
    tile = tf.ensure_shape(tile, [crop_size, crop_size, 3])
    return uint8_to_unit(tile)


def _epoch_position(element: tf.Tensor, size: int, seed: int, salt: int) -> tf.Tensor:
    """Position in ``[0, size)`` of element k: a fresh permutation of the domain every pass."""
    size64 = tf.constant(size, tf.int64)
    epoch, offset = element // size64, element % size64
    seed_pair = tf.stack([tf.constant(seed, tf.int64) * 4 + salt, epoch])
    return tf.random.experimental.index_shuffle(offset, seed=seed_pair, max_index=size64 - 1)


def shard_order(slide_of_shard: list[str], seed: int, salt: int, pass_number: int) -> np.ndarray:
    """Positions of the shards in one pass: random, with each slide's shards spread evenly over the pass.

    Shard ``i`` of a slide with ``n`` shards (in a random order) gets the key
    ``(i + u) / n`` (``u`` uniform, one per slide), and shards are sorted by key:
    every stretch of the pass holds the slides in proportion to their shards, so
    interleaving neighbouring shards mixes slides. A pure function of its arguments.
    """
    rng = np.random.default_rng([seed, salt, pass_number])
    keys = np.empty(len(slide_of_shard))
    for slide in sorted(set(slide_of_shard)):
        members = rng.permutation([i for i, name in enumerate(slide_of_shard) if name == slide])
        keys[members] = (np.arange(len(members)) + rng.uniform()) / len(members)
    return np.argsort(keys, kind="stable").astype(np.int64)


def shuffled_shards(index: DomainIndex, seed: int, salt: int) -> tf.data.Dataset:
    """Shard paths, every shard once per pass, in a fresh seeded :func:`shard_order` every pass (endless)."""
    shards = sorted(index.records)
    names = tf.constant(shards)
    group_of = {shard: number for number, group in enumerate(_slide_groups(index.record_slides)) for shard in group}
    slide_of_shard = [str(group_of.get(shard, shard)) for shard in shards]

    def one_pass(pass_number):
        order = tf.numpy_function(lambda number: shard_order(slide_of_shard, seed, salt, int(number)),
                                  [pass_number], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.gather(names, tf.ensure_shape(order, [len(shards)])))

    return tf.data.Dataset.counter().flat_map(one_pass)


def record_stream(index: DomainIndex, seed: int, salt: int, start_element: int = 0) -> tf.data.Dataset:
    """Serialized tile records of a TFRecord domain, endless, from element ``start_element`` on.

    Shards in a fresh seeded order every pass (slides spread evenly), :data:`RECORD_CYCLE_LENGTH` of them
    interleaved record by record (deterministically), then a seeded shuffle
    buffer; the same ``(seed, salt)`` gives the same stream, so resuming skips
    the records already trained on (read, not decoded).
    """
    shards = shuffled_shards(index, seed, salt)
    cycle = min(RECORD_CYCLE_LENGTH, len(index.records))
    records = shards.interleave(lambda shard: tf.data.TFRecordDataset(shard).ignore_errors(log_warning=True),
                                cycle_length=cycle, block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    buffer = min(len(index), RECORD_SHUFFLE_BUFFER)
    records = records.shuffle(buffer, seed=seed * 4 + salt, reshuffle_each_iteration=False)
    return records.skip(start_element)


def _file_stream(index: DomainIndex, decoder: "TileDecoder", seed: int, salt: int,
                 elements: tf.data.Dataset) -> tf.data.Dataset:
    """``(tile, ok)`` for each element number k of ``elements``: a fresh permutation of the files every pass."""
    positions = elements.map(lambda element: _epoch_position(element, len(index), seed, salt))
    return positions.map(decoder.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shard_domain(index: DomainIndex, pipeline: int, pipelines: int) -> DomainIndex | None:
    """The files that input pipeline ``pipeline`` of ``pipelines`` reads (multi-worker training).

    Whole files go to one pipeline (all tiles of an image file, all records of a
    TFRecord shard), largest first to the pipeline with the fewest tiles so far,
    so the pipelines' shares differ by at most one file's tiles; a pure function
    of the index. Returns ``index`` itself for one pipeline, and ``None`` when
    the domain has fewer non-empty files than pipelines (the caller then splits
    the single stream by element).
    """
    if pipelines == 1:
        return index
    if index.records:
        tiles_per_file = {shard: count for shard, count in index.records.items() if count}
    else:
        tiles_per_file = {}
        for source in index.sources:
            tiles_per_file[source.path] = tiles_per_file.get(source.path, 0) + 1
    if len(tiles_per_file) < pipelines:
        return None
    loads = [0] * pipelines
    mine = set()
    for path in sorted(tiles_per_file, key=lambda name: (-tiles_per_file[name], name)):
        owner = min(range(pipelines), key=lambda number: (loads[number], number))
        loads[owner] += tiles_per_file[path]
        if owner == pipeline:
            mine.add(path)
    name = f"{index.name} (worker {pipeline + 1}/{pipelines})"
    if index.records:
        return dataclasses.replace(index, name=name, records={s: n for s, n in index.records.items() if s in mine},
                                   record_slides={s: v for s, v in index.record_slides.items() if s in mine})
    return dataclasses.replace(index, name=name, sources=[source for source in index.sources if source.path in mine])


def make_train_dataset(he: DomainIndex, ki67: DomainIndex, batch_size: int, crop_size: int, seed: int,
                       augment_tiles: bool = True, start_element: int = 0,
                       failures: DecodeFailures | None = None,
                       input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Infinite dataset of ``(real_he, real_ki67, element)`` batches.

    ``real_he``, ``real_ki67``: float32 ``(B, crop, crop, 3)`` in [-1, 1];
    ``element``: int64 ``(B,)``, every row the stream position of the last element
    of the step (the model records it; training resumes at ``element + 1``).

    Args:
        batch_size: the global batch size.
        start_element: index of the first element (the recorded position when resuming).
        failures: collects files that fail to decode (skipped; the run goes on).
        input_context: one input pipeline of a multi-worker run (from
            ``strategy.distribute_datasets_from_function``): it reads its share of
            the files (:func:`shard_domain`, or every W-th element of a domain with
            fewer files than workers) and yields per-replica batches
            (``batch_size / replicas``); every replica of the worker gets one per
            step, all marked with the step's last element. Elements are numbered
            across pipelines (see the module docstring); ``start_element`` too.
    """
    failures = failures if failures is not None else DecodeFailures()
    pipelines, pipeline = 1, 0
    replica_batch = worker_batch = batch_size
    if input_context is not None:
        pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
        replica_batch = input_context.get_per_replica_batch_size(batch_size)
        worker_batch = replica_batch * (input_context.num_replicas_in_sync // pipelines)
    first = -(-start_element // pipelines)  # this pipeline's first local element (ceil)
    local = tf.data.Dataset.counter(start=first)
    stride = lambda element: element * pipelines + pipeline  # noqa: E731 - local element -> global element
    streams = []
    for salt, index in ((1, he), (2, ki67)):
        shard = shard_domain(index, pipeline, pipelines)
        if shard is None:
            logger.info("%s: fewer files than the %d workers: worker %d takes every %d-th element of the stream",
                        index.name, pipelines, pipeline + 1, pipelines)
        if index.records:
            decoder = RecordDecoder(index.name, failures, crop_size)
            records = (record_stream(shard, seed, salt, first) if shard is not None
                       else record_stream(index, seed, salt, first * pipelines).shard(pipelines, pipeline))
            streams.append(records.map(decoder.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
        else:
            source = shard if shard is not None else index
            streams.append(_file_stream(source, TileDecoder(source, failures, crop_size), seed, salt,
                                        local if shard is not None else local.map(stride)))

    def prepare(element, he_item, ki67_item):
        base = tf.stack([tf.constant(seed, tf.int64), element])
        return (augment(he_item[0], tf.random.experimental.stateless_fold_in(base, 1), crop_size, augment_tiles),
                augment(ki67_item[0], tf.random.experimental.stateless_fold_in(base, 2), crop_size,
                        augment_tiles), element)

    def mark_last(real_he, real_ki67, elements):
        return real_he, real_ki67, tf.fill(tf.shape(elements), elements[-1])

    dataset = tf.data.Dataset.zip((local.map(stride), *streams))
    dataset = dataset.filter(lambda element, he_item, ki67_item: tf.logical_and(he_item[1], ki67_item[1]))
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(worker_batch, drop_remainder=True).map(mark_last)
    if replica_batch != worker_batch:  # the worker's replicas take consecutive per-replica batches
        dataset = dataset.rebatch(replica_batch, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def centre_crop(tile: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an ``(H, W, C)`` array."""
    top, left = (tile.shape[0] - size) // 2, (tile.shape[1] - size) // 2
    return tile[top:top + size, left:left + size]


def load_validation_tiles(he: DomainIndex, ki67: DomainIndex, crop_size: int, max_tiles: int,
                          failures: DecodeFailures | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centre crops of up to ``max_tiles`` validation tiles per stain, uint8 ``(N, crop, crop, 3)``.

    Tile ``i`` of one stain is matched with tile ``i mod n`` of the other. Loaded
    once, in memory: the validation set is small and identical at every epoch.
    Tiles that fail to decode are skipped and counted.

    Raises:
        DataError: no validation tile of a stain could be decoded.
    """
    failures = failures if failures is not None else DecodeFailures()
    count = max(len(he), len(ki67))
    count = min(max_tiles, count) if max_tiles > 0 else count
    stacks = []
    for index in (he, ki67):
        if index.records:
            from virtual_ihc.io.tfrecords import tile_record_dataset

            records = tile_record_dataset(list(index.records)).ignore_errors(log_warning=True)
            tiles = [tile for tile in records.repeat().take(count).as_numpy_iterator()
                     if min(tile.shape[:2]) >= crop_size]
        else:
            decoder = TileDecoder(index, failures, crop_size)
            tiles = [tile for tile, ok in (decoder(position % len(index)) for position in range(count)) if ok]
        if not tiles:
            raise DataError(f"{index.name}: none of the validation tiles could be read")
        stacks.append(np.stack([centre_crop(tile, crop_size) for tile in tiles]))
    size = min(len(stacks[0]), len(stacks[1]))
    return stacks[0][:size], stacks[1][:size]


def make_validation_dataset(he_tiles: np.ndarray, ki67_tiles: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Finite dataset of ``(real_he, real_ki67)`` batches, float32 in [-1, 1], from uint8 arrays."""
    dataset = tf.data.Dataset.from_tensor_slices((he_tiles, ki67_tiles))
    dataset = dataset.map(lambda he_tile, ki67_tile: (uint8_to_unit(he_tile), uint8_to_unit(ki67_tile)))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def default_steps_per_epoch(he: DomainIndex, ki67: DomainIndex, batch_size: int) -> int:
    """One pass over the larger domain."""
    return max(1, math.ceil(max(len(he), len(ki67)) / batch_size))
