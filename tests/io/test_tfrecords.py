"""TFRecord shards of tiles: write, list, read back, and the tiler's --format tfrecord."""

from __future__ import annotations

import numpy as np
import pytest

from virtual_ihc.io.images import encode_png
from virtual_ihc.io.slides import choose_level, open_slide, read_scaled_region
from virtual_ihc.io.tfrecords import (IMAGE_KEY, SIZE_KEY, SLIDE_KEY, X_KEY, Y_KEY, TileRecord, list_tfrecords,
                                      parse_tile_example, tile_record_dataset, write_tile_shard)
from virtual_ihc.slides.splits import entries_from_paths
from virtual_ihc.slides.tiling import TilingOptions, read_manifest, tile_slides

tf = pytest.importorskip("tensorflow")


def test_shard_round_trip_keeps_pixels_and_origin(tmp_path):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    records = [TileRecord(encode_png(tile), "case01", 32 * index, 7, 16) for index, tile in enumerate(tiles)]
    assert write_tile_shard(tmp_path / "he" / "case01-00000.tfrecord", records) == 3
    files = list_tfrecords(tmp_path / "he")
    assert [path.name for path in files] == ["case01-00000.tfrecord"]
    decoded = [image.numpy() for image in tile_record_dataset([str(path) for path in files])]
    np.testing.assert_array_equal(np.stack(decoded), tiles)
    assert decoded[0].dtype == np.uint8
    example = parse_tile_example(next(iter(tf.data.TFRecordDataset([str(files[0])]).skip(2))))
    assert example[SLIDE_KEY].numpy() == b"case01"
    assert (int(example[X_KEY]), int(example[Y_KEY]), int(example[SIZE_KEY])) == (64, 7, 16)
    assert example[IMAGE_KEY].numpy().startswith(b"\x89PNG")


def test_list_tfrecords_of_missing_folder_is_empty(tmp_path):
    assert list_tfrecords(tmp_path / "nothing") == []
    with pytest.raises(ValueError):
        tile_record_dataset([])


def test_tiler_writes_shards_the_dataset_reads(make_slide, rectangle_image, tmp_path):
    path = make_slide("case01.tif", rectangle_image(1024, 1536, (256, 128, 1024, 768)), mpp=0.25)
    options = TilingOptions(tile_size=64, overlap=0, target_mag=20, image_format="tfrecord", tiles_per_chunk=20)
    summary = tile_slides(entries_from_paths([path], "he"), tmp_path / "out", options, test_fraction=0.0,
                          progress=False)
    rows = read_manifest(summary.manifest)
    shards = list_tfrecords(tmp_path / "out" / "he" / "train")
    assert len(shards) == -(-len(rows) // 20)
    assert {row["file"] for row in rows} == {f"he/train/{shard.name}" for shard in shards}
    images = [image.numpy() for image in tile_record_dataset(shards)]
    assert len(images) == len(rows)
    first = min(rows, key=lambda row: (row["file"], int(row["y"]), int(row["x"])))
    with open_slide(path) as slide:
        expected = read_scaled_region(slide, choose_level(slide, target_mag=20),
                                      int(first["x"]) // 2, int(first["y"]) // 2, 64, 64)
    np.testing.assert_array_equal(images[0], expected)
