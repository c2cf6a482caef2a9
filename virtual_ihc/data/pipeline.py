"""The ``tf.data`` training pipeline: two unpaired stain domains, zipped.

Each domain is a folder of tiles or of large images (PNG/JPEG/TIFF). Files are
*indexed* first (headers only for tiles; large images are read once to find the
tissue tiles of a ``tile_size`` grid with ``tile_overlap``), then streamed:

    element k -> (H&E tile index, Ki-67 tile index)   independent permutations per epoch
              -> parallel decode (OpenCV / tifffile; bad files skipped and counted)
              -> random crop, flips, 90-degree rotations   (stateless, seeded by k)
              -> [-1, 1] float32 -> batch -> prefetch

Every random choice is a pure function of ``(seed, k)``: the stream is
reproducible, and ``--resume`` restarts it at the element where training stopped.
Unpaired: the two domains are permuted independently, so a batch never pairs a
tile with its consecutive section except by chance.

A domain folder holding sharded TFRecords (``*.tfrecord``, as written by
``python -m data_prep.tile_slides --format tfrecord``) is streamed instead:
shards interleaved, a seeded shuffle buffer, and ``--resume`` replays the stream
up to the element where training stopped. Records that fail to decode are
skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from virtual_ihc.data.io import ImageReadError, list_images, read_image_rgb
from virtual_ihc.data.tiling import tile_grid
from virtual_ihc.histology.tissue import saturation, MIN_SATURATION

logger = logging.getLogger(__name__)

#: an image with both sides at most this many times the tile size is used whole, as one tile
WHOLE_TILE_FACTOR = 2


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
    number of tiles in it) is filled.
    """

    name: str
    sources: list[TileSource]
    skipped: dict[str, str]  # path -> reason
    records: dict[str, int] = dataclasses.field(default_factory=dict)

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


def _tissue_tiles(path: Path, tile_size: int, overlap: int, min_tissue: float) -> list[TileSource]:
    """Grid tiles of a large image whose tissue fraction is at least ``min_tissue``."""
    image = read_image_rgb(path)
    tissue = (saturation(image) > MIN_SATURATION).astype(np.float64)
    integral = np.pad(tissue, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sources = []
    for y, x in tile_grid(image.shape[0], image.shape[1], tile_size, overlap):
        area = (integral[y + tile_size, x + tile_size] - integral[y, x + tile_size]
                - integral[y + tile_size, x] + integral[y, x])
        if area / tile_size ** 2 >= min_tissue:
            sources.append(TileSource(str(path), y, x, tile_size))
    return sources


def index_domain(folder: str | Path, name: str, tile_size: int, overlap: int, min_tissue: float,
                 crop_size: int) -> DomainIndex:
    """Index a folder of tiles and/or large images.

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
                sources.extend(_tissue_tiles(path, tile_size, overlap, min_tissue))
        except Exception as error:  # any unreadable header: skip the file, never the run
            skipped[str(path)] = str(error)
    for path, reason in skipped.items():
        logger.warning("%s: skipping %s: %s", name, path, reason)
    if not sources:
        raise DataError(f"{name}: no usable tiles in {folder} ({len(files)} files, {len(skipped)} skipped)")
    logger.info("%s: %d tiles from %d files in %s (%d files skipped)", name, len(sources), len(files),
                folder, len(skipped))
    return DomainIndex(name=name, sources=sources, skipped=skipped)


def index_records(folder: Path, name: str) -> DomainIndex | None:
    """A domain of TFRecord shards, or ``None`` when ``folder`` holds none."""
    from virtual_ihc.data.tfrecords import list_tfrecords

    shards = [str(path) for path in list_tfrecords(folder)]
    if not shards:
        return None
    # counted once here; validation splits and steps per epoch reuse the counts
    counts = {shard: sum(1 for _ in tf.data.TFRecordDataset(shard).ignore_errors()) for shard in shards}
    if not any(counts.values()):
        raise DataError(f"{name}: the TFRecord shards in {folder} hold no tiles")
    logger.info("%s: %d tiles in %d TFRecord shards in %s", name, sum(counts.values()), len(shards), folder)
    return DomainIndex(name=name, sources=[], skipped={}, records=counts)


def split_validation(index: DomainIndex, fraction: float, seed: int) -> tuple[DomainIndex, DomainIndex]:
    """Hold out ``fraction`` of the *files* (never tiles of one file in both) for validation.

    TFRecord domains hold out whole shards.
    """
    if index.records:
        shards = sorted(index.records)
        count = max(1, int(round(fraction * len(shards))))
        if len(shards) < 2:
            raise DataError(f"{index.name}: cannot hold out a validation shard from one TFRecord shard; "
                            "give a validation folder")
        val_shards = set(np.random.default_rng(seed).permutation(shards)[:count].tolist())
        train_shards = [shard for shard in shards if shard not in val_shards]
        subset = lambda shards: {shard: index.records[shard] for shard in shards}  # noqa: E731
        return (DomainIndex(index.name, [], index.skipped, subset(train_shards)),
                DomainIndex(f"{index.name} (val)", [], {}, subset(sorted(val_shards))))
    paths = sorted({source.path for source in index.sources})
    rng = np.random.default_rng(seed)
    count = max(1, int(round(fraction * len(paths)))) if len(paths) > 1 else 0
    val_paths = set(rng.permutation(paths)[:count].tolist())
    train = [source for source in index.sources if source.path not in val_paths]
    val = [source for source in index.sources if source.path in val_paths]
    if not train or not val:
        raise DataError(f"{index.name}: cannot hold out validation files from {len(paths)} file(s); "
                        "give a validation folder or more files")
    return (DomainIndex(index.name, train, index.skipped), DomainIndex(f"{index.name} (val)", val, {}))


@functools.lru_cache(maxsize=8)
def _read_large_image(path: str) -> np.ndarray:
    """Large images are decoded once and kept (a few at a time) while their tiles stream."""
    return read_image_rgb(path)


def load_tile(source: TileSource) -> np.ndarray:
    """Decode one tile as ``uint8 (H, W, 3)``; raises ``ImageReadError`` for bad files."""
    if source.size == 0:
        return read_image_rgb(source.path)
    image = _read_large_image(source.path)
    return image[source.y:source.y + source.size, source.x:source.x + source.size]


class TileDecoder:
    """Decodes tiles of one domain inside ``tf.data`` (via ``tf.numpy_function``).

    A file that fails to decode yields an empty placeholder and ``ok = False``;
    the pipeline filters it out, and ``failures`` counts it. Large images are
    cropped to their grid tile; whole-file tiles keep their size (the random
    crop makes them uniform).
    """

    def __init__(self, index: DomainIndex, failures: DecodeFailures, crop_size: int):
        self.index = index
        self.failures = failures
        self.crop_size = crop_size

    def __call__(self, position: np.ndarray) -> tuple[np.ndarray, bool]:
        source = self.index.sources[int(position)]
        try:
            tile = load_tile(source)
            if tile.shape[0] < self.crop_size or tile.shape[1] < self.crop_size:
                raise ImageReadError(f"{source.path}: {tile.shape[:2]} is smaller than the crop")
            return tile, True
        except Exception as error:  # noqa: BLE001 - one bad tile never kills a run
            self.failures.add(source.path, str(error))
            return np.zeros((self.crop_size, self.crop_size, 3), np.uint8), False

    def decode(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        tile, ok = tf.numpy_function(self, [position], [tf.uint8, tf.bool], stateful=False)
        tile.set_shape([None, None, 3])
        ok.set_shape([])
        return tile, ok


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
        tile = tf.image.rot90(tile, quarter_turns)
    else:
        height, width = tf.shape(tile)[0], tf.shape(tile)[1]
        top, left = (height - crop_size) // 2, (width - crop_size) // 2
        tile = tile[top:top + crop_size, left:left + crop_size]
    tile = tf.ensure_shape(tile, [crop_size, crop_size, 3])
    return tf.cast(tile, tf.float32) / 127.5 - 1.0


def _epoch_position(element: tf.Tensor, size: int, seed: int, salt: int) -> tf.Tensor:
    """Position in ``[0, size)`` of element k: a fresh permutation of the domain every pass."""
    size64 = tf.constant(size, tf.int64)
    epoch, offset = element // size64, element % size64
    seed_pair = tf.stack([tf.constant(seed, tf.int64) * 4 + salt, epoch])
    return tf.random.experimental.index_shuffle(offset, seed=seed_pair, max_index=size64 - 1)


def _record_stream(index: DomainIndex, seed: int, salt: int, start_element: int,
                   crop_size: int) -> tf.data.Dataset:
    """``(tile, ok)`` from TFRecord shards: interleaved, shuffled per pass, replayed up to ``start_element``."""
    from virtual_ihc.data.tfrecords import tile_record_dataset

    buffer = min(len(index), 2048)
    stream = tile_record_dataset(list(index.records)).ignore_errors(log_warning=True)
    stream = stream.shuffle(buffer, seed=seed * 4 + salt, reshuffle_each_iteration=True).repeat()
    large_enough = lambda tile: tf.reduce_min(tf.shape(tile)[:2]) >= crop_size  # noqa: E731
    return stream.skip(start_element).map(lambda tile: (tile, large_enough(tile)))


def _file_stream(index: DomainIndex, decoder: "TileDecoder", seed: int, salt: int,
                 start_element: int) -> tf.data.Dataset:
    """``(tile, ok)`` for element k = start_element, ...: a fresh permutation of the files every pass."""
    positions = tf.data.Dataset.counter(start=start_element).map(
        lambda element: _epoch_position(element, len(index), seed, salt))
    return positions.map(decoder.decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_train_dataset(he: DomainIndex, ki67: DomainIndex, batch_size: int, crop_size: int, seed: int,
                       augment_tiles: bool = True, start_element: int = 0,
                       failures: DecodeFailures | None = None) -> tf.data.Dataset:
    """Infinite dataset of ``(real_he, real_ki67)`` batches, float32 ``(B, crop, crop, 3)`` in [-1, 1].

    Args:
        start_element: index of the first element (``step * batch_size`` when resuming).
        failures: collects files that fail to decode (skipped; the run goes on).
    """
    failures = failures if failures is not None else DecodeFailures()
    streams = []
    for salt, index in ((1, he), (2, ki67)):
        if index.records:
            streams.append(_record_stream(index, seed, salt, start_element, crop_size))
        else:
            streams.append(_file_stream(index, TileDecoder(index, failures, crop_size), seed, salt, start_element))

    def prepare(element, he_item, ki67_item):
        base = tf.stack([tf.constant(seed, tf.int64), element])
        return (augment(he_item[0], tf.random.experimental.stateless_fold_in(base, 1), crop_size, augment_tiles),
                augment(ki67_item[0], tf.random.experimental.stateless_fold_in(base, 2), crop_size,
                        augment_tiles))

    dataset = tf.data.Dataset.zip((tf.data.Dataset.counter(start=start_element), *streams))
    dataset = dataset.filter(lambda element, he_item, ki67_item: tf.logical_and(he_item[1], ki67_item[1]))
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


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
            from virtual_ihc.data.tfrecords import tile_record_dataset

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
    dataset = dataset.map(lambda he_tile, ki67_tile: (tf.cast(he_tile, tf.float32) / 127.5 - 1.0,
                                                      tf.cast(ki67_tile, tf.float32) / 127.5 - 1.0))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def default_steps_per_epoch(he: DomainIndex, ki67: DomainIndex, batch_size: int) -> int:
    """One pass over the larger domain."""
    return max(1, math.ceil(max(len(he), len(ki67)) / batch_size))
