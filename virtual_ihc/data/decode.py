"""Decoding training tiles inside ``tf.data``: one tile or record at a time, bad ones skipped and counted.

A tile of a large image is read as a region (from the file through OpenSlide /
tiffslide, or from the memory-mapped decoded copy), never by decoding the whole
image per tile. :func:`load_validation_tiles` decodes the (small) validation
set once into memory.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from virtual_ihc.data.index import DataError, DomainIndex, TileSource
from virtual_ihc.io.images import ImageReadError, read_image_rgb
from virtual_ihc.io.slides import open_slide
from virtual_ihc.io.tfrecords import decode_tile_record, tile_record_dataset

logger = logging.getLogger(__name__)


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
