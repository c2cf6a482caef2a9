"""Tiles as sharded TFRecord files: one ``tf.train.Example`` per tile.

Features of an example (keys are the module constants):

- ``image`` (bytes): the tile as PNG, ``uint8`` RGB;
- ``slide`` (bytes): the slide id (UTF-8);
- ``x``, ``y`` (int64): the tile's top-left corner in level-0 pixels of the slide;
- ``size`` (int64): the tile side in pixels.

A domain folder (e.g. ``tiles/he/train/``) holding ``*.tfrecord`` files is read
with ``tile_record_dataset(list_tfrecords(folder))``. TensorFlow is imported only
by the functions that need it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from virtual_ihc.errors import InputError
from virtual_ihc.io.images import decode_image_rgb

if TYPE_CHECKING:  # TensorFlow is imported only inside the functions that need it
    import tensorflow as tf

IMAGE_KEY = "image"
SLIDE_KEY = "slide"
X_KEY = "x"
Y_KEY = "y"
SIZE_KEY = "size"
TFRECORD_SUFFIX = ".tfrecord"


@dataclasses.dataclass(frozen=True)
class TileRecord:
    """One tile to store: PNG bytes and where it came from."""

    png: bytes
    slide: str
    x: int
    y: int
    size: int


def serialize_tile(record: TileRecord) -> bytes:
    """A serialized ``tf.train.Example`` of one tile."""
    import tensorflow as tf

    def int64(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    def raw(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {IMAGE_KEY: raw(record.png), SLIDE_KEY: raw(record.slide.encode("utf-8")),
                X_KEY: int64(record.x), Y_KEY: int64(record.y), SIZE_KEY: int64(record.size)}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_tile_shard(path: str | os.PathLike, records: Iterable[TileRecord]) -> int:
    """Write one shard atomically (temporary name, then rename); returns the tile count."""
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        with tf.io.TFRecordWriter(str(tmp_path)) as writer:
            for record in records:
                writer.write(serialize_tile(record))
                count += 1
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return count


def list_tfrecords(folder: str | os.PathLike) -> list[Path]:
    """Sorted ``*.tfrecord`` files directly in ``folder`` (empty list if none or no folder)."""
    folder = Path(folder)
    return sorted(folder.glob(f"*{TFRECORD_SUFFIX}")) if folder.is_dir() else []


def tile_feature_spec() -> dict:
    """The ``tf.io.parse_single_example`` feature description of a tile example."""
    import tensorflow as tf

    return {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            SLIDE_KEY: tf.io.FixedLenFeature([], tf.string),
            X_KEY: tf.io.FixedLenFeature([], tf.int64),
            Y_KEY: tf.io.FixedLenFeature([], tf.int64),
            SIZE_KEY: tf.io.FixedLenFeature([], tf.int64)}


def parse_tile_example(serialized):
    """Parse one serialized example into a dict of tensors (``image`` still PNG bytes)."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, tile_feature_spec())


def decode_tile_image(serialized):
    """The tile of a serialized example as ``uint8 [H, W, 3]``."""
    import tensorflow as tf

    return tf.io.decode_png(parse_tile_example(serialized)[IMAGE_KEY], channels=3)


def decode_tile_record(serialized: bytes):
    """A serialized tile example, decoded in Python: ``(uint8 RGB (H, W, 3), slide, x, y)``.

    Raises:
        ValueError: not a tile example, or an undecodable image (message names the slide and tile).
    """
    import tensorflow as tf

    try:
        feature = tf.train.Example.FromString(serialized).features.feature
        slide = feature[SLIDE_KEY].bytes_list.value[0].decode("utf-8", "replace") if SLIDE_KEY in feature else "?"
        x = int(feature[X_KEY].int64_list.value[0]) if X_KEY in feature else -1
        y = int(feature[Y_KEY].int64_list.value[0]) if Y_KEY in feature else -1
        png = feature[IMAGE_KEY].bytes_list.value[0]
    except Exception as error:  # protobuf decode errors, missing features
        raise InputError(f"not a tile record ({error})") from error
    return decode_image_rgb(png, source=f"TFRecord tile of slide {slide} at x={x}, y={y}"), slide, x, y


def tile_record_dataset(files: list[str]) -> tf.data.Dataset:
    """Tiles of TFRecord shards as ``uint8 [H, W, 3]`` tensors, in file order.

    Args:
        files: shard paths (``str`` or ``Path``), e.g. ``list_tfrecords(folder)``.
    """
    import tensorflow as tf

    if not files:
        raise ValueError("no TFRecord files given")
    dataset = tf.data.TFRecordDataset([str(path) for path in files])
    return dataset.map(decode_tile_image, num_parallel_calls=tf.data.AUTOTUNE)
