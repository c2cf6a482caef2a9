import cv2
import numpy as np
import pytest
import tensorflow as tf
import tifffile

from virtual_ihc.data.decode import DecodeFailures, TileDecoder, load_validation_tiles
from virtual_ihc.data.holdout import split_validation
from virtual_ihc.data.index import DataError, index_domain
from virtual_ihc.data.stream import _epoch_position, augment, make_train_dataset
from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.io.images import write_image_rgb

TILE, CROP = 40, 32


def _index(folder, name="he"):
    return index_domain(folder, name, tile_size=TILE, overlap=20, min_tissue=0.5, crop_size=CROP)


def _write_tiles(folder, stain, count, seed=0):
    for i, tile in enumerate(sample_tiles(stain, count, TILE, seed)):
        write_image_rgb(folder / f"{stain}_{i:03d}.png", tile)


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _index(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        _index(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match="no usable tiles"):
        _index(tmp_path / "bad")


def test_corrupt_files_are_skipped_and_counted_without_stopping_training(tmp_path):
    he_dir, ki67_dir = tmp_path / "he", tmp_path / "ki67"
    _write_tiles(he_dir, "he", 4)
    _write_tiles(ki67_dir, "ki67", 4)
    (he_dir / "zero_bytes.png").write_bytes(b"")
    (he_dir / "not_an_image.png").write_text("hello")
    good = (he_dir / "he_000.png").read_bytes()
    (he_dir / "truncated.png").write_bytes(good[: len(good) // 2])  # header fine, data cut
    he = _index(he_dir)
    assert set(map(lambda p: p.split("/")[-1], he.skipped)) == {"zero_bytes.png", "not_an_image.png"}
    failures = DecodeFailures()
    dataset = make_train_dataset(he, _index(ki67_dir, "ki67"), batch_size=2, crop_size=CROP, seed=0,
                                 failures=failures)
    batches = list(dataset.take(6))
    assert len(batches) == 6
    assert failures.count >= 1 and list(failures.failures) == [str(he_dir / "truncated.png")]


def test_grayscale_rgba_and_16_bit_tiles_are_accepted(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tile = sample_tiles("he", 1, TILE, 0)[0]
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(folder / "deep.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    index = _index(folder)
    assert len(index) == 3 and not index.skipped
    failures = DecodeFailures()
    he_tiles, _ = load_validation_tiles(index, index, CROP, max_tiles=3, failures=failures)
    assert he_tiles.shape == (3, CROP, CROP, 3) and failures.count == 0


def test_large_images_are_tiled_on_the_fly_keeping_tissue_only(tmp_path):
    image = np.full((120, 200, 3), 255, np.uint8)
    image[:, :100] = (200, 120, 180)  # eosin-pink tissue on the left, glass on the right
    write_image_rgb(tmp_path / "large" / "slide.png", image)
    index = _index(tmp_path / "large")
    assert all(source.size == TILE for source in index.sources)
    # 40-pixel tiles every 20 pixels; x = 80 is half tissue (kept at min_tissue 0.5), x = 100 is glass
    assert {s.x for s in index.sources} == {0, 20, 40, 60, 80}
    assert {s.y for s in index.sources} == {0, 20, 40, 60, 80}


def test_stream_is_reproducible_and_resumes_at_any_element(tmp_path):
    _write_tiles(tmp_path / "he", "he", 5)
    _write_tiles(tmp_path / "ki67", "ki67", 3)
    he, ki67 = _index(tmp_path / "he"), _index(tmp_path / "ki67", "ki67")
    full = [b for b in make_train_dataset(he, ki67, 2, CROP, seed=7).take(4)]
    again = [b for b in make_train_dataset(he, ki67, 2, CROP, seed=7).take(4)]
    resumed = [b for b in make_train_dataset(he, ki67, 2, CROP, seed=7, start_element=4).take(2)]
    for a, b in zip(full, again):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    other_seed = next(iter(make_train_dataset(he, ki67, 2, CROP, seed=8)))
    assert not np.array_equal(other_seed[0].numpy(), full[0][0].numpy())


def test_each_pass_is_a_permutation_and_domains_are_shuffled_independently():
    size = 7
    first = [int(_epoch_position(tf.constant(k, tf.int64), size, 0, 1)) for k in range(size)]
    second = [int(_epoch_position(tf.constant(k, tf.int64), size, 0, 1)) for k in range(size, 2 * size)]
    other_domain = [int(_epoch_position(tf.constant(k, tf.int64), size, 0, 2)) for k in range(size)]
    assert sorted(first) == sorted(second) == list(range(size))
    assert first != second and first != other_domain


def test_augment_gives_crops_in_unit_range():
    tile = tf.constant(sample_tiles("ki67", 1, TILE, 0)[0])
    out = augment(tile, tf.constant([1, 2], tf.int64), CROP, random=True)
    assert out.shape == (CROP, CROP, 3) and out.dtype == tf.float32
    assert -1.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    centre = augment(tile, None, CROP, random=False).numpy()
    np.testing.assert_allclose(centre, tile.numpy()[4:36, 4:36] / 127.5 - 1.0, atol=1e-6)


def test_validation_split_is_by_file(tmp_path):
    _write_tiles(tmp_path / "he", "he", 10)
    train, val = split_validation(_index(tmp_path / "he"), 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert not {s.path for s in train.sources} & {s.path for s in val.sources}


def test_tfrecord_shards_are_a_domain_like_a_folder_of_tiles(tmp_path):
    from virtual_ihc.io.images import encode_png
    from virtual_ihc.io.tfrecords import TileRecord, write_tile_shard

    tiles = sample_tiles("ki67", 6, TILE, seed=4)
    for shard in range(2):
        write_tile_shard(tmp_path / "ki67" / f"shard-{shard}.tfrecord",
                         [TileRecord(encode_png(tile), f"slide{shard}", 0, i, TILE)
                          for i, tile in enumerate(tiles[shard::2])])
    _write_tiles(tmp_path / "he", "he", 4)
    ki67 = _index(tmp_path / "ki67", "ki67")
    assert len(ki67) == 6 and len(ki67.records) == 2
    he = _index(tmp_path / "he")
    first = [b[1].numpy() for b in make_train_dataset(he, ki67, 2, CROP, seed=1).take(3)]
    resumed = [b[1].numpy() for b in make_train_dataset(he, ki67, 2, CROP, seed=1, start_element=2).take(2)]
    assert first[0].shape == (2, CROP, CROP, 3)
    np.testing.assert_array_equal(first[1], resumed[0])
    train, val = split_validation(ki67, 0.5, seed=0)
    assert len(train) == len(val) == 3 and not set(train.records) & set(val.records)
    he_val, ki67_val = load_validation_tiles(he, val, CROP, max_tiles=2)
    assert ki67_val.shape == (2, CROP, CROP, 3)


def _fake_record_domain(folder, slides, shards_per_slide, per_shard):
    """Shards named ``<slide>-<chunk>`` as data_prep writes them; the tiles are placeholders (never decoded)."""
    from virtual_ihc.data.index import index_records
    from virtual_ihc.io.tfrecords import TileRecord, write_tile_shard

    for slide in range(slides):
        for chunk in range(shards_per_slide):
            write_tile_shard(folder / f"slide{slide}-{chunk:05d}.tfrecord",
                             [TileRecord(b"", f"slide{slide}", chunk, i, 8) for i in range(per_shard)])
    return index_records(folder, "he")


def _record_keys(dataset, count):
    from virtual_ihc.io.tfrecords import SLIDE_KEY, X_KEY, Y_KEY

    spec = {SLIDE_KEY: tf.io.FixedLenFeature([], tf.string), X_KEY: tf.io.FixedLenFeature([], tf.int64),
            Y_KEY: tf.io.FixedLenFeature([], tf.int64)}
    keys = []
    for batch in dataset.take(count).batch(4096).as_numpy_iterator():
        parsed = tf.io.parse_example(batch, spec)
        keys += list(zip(parsed[SLIDE_KEY].numpy().tolist(), parsed[X_KEY].numpy().tolist(),
                         parsed[Y_KEY].numpy().tolist()))
    return keys


@pytest.mark.slow
def test_tfrecord_stream_mixes_slides_and_reshuffles_every_pass(tmp_path):
    """4 slides of 10 shards x 256 tiles (each slide larger than the shuffle buffer): in every window of
    1000 consecutive elements no slide has more than 35 % (its fair share is 25 %)."""
    from virtual_ihc.data.stream import record_stream

    index = _fake_record_domain(tmp_path, slides=4, shards_per_slide=10, per_shard=256)
    total = len(index)
    keys = _record_keys(record_stream(index, seed=3, salt=1), 2 * total)
    slides = [key[0] for key in keys]
    shares = [max(slides[start:start + 1000].count(name) for name in set(slides)) / 1000
              for start in range(0, len(slides) - 1000 + 1, 250)]
    assert max(shares) <= 0.35, max(shares)
    first_pass, second_pass = keys[:total], keys[total:]
    assert len(set(first_pass)) > 0.8 * total  # the shuffle buffer mixes the pass boundaries a little
    assert first_pass != second_pass
    resumed = _record_keys(record_stream(index, seed=3, salt=1, start_element=1234), 500)
    assert resumed == keys[1234:1734]


def _tissue_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.array([200, 110, 170]) + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)


def test_tiles_of_large_images_are_read_by_region_without_decoding_the_image_again(tmp_path, monkeypatch):
    from virtual_ihc.data import decode

    images = {}
    for number in range(3):
        images[f"png{number}"] = _tissue_image(130, 150, number)
        write_image_rgb(tmp_path / "large" / f"png{number}.png", images[f"png{number}"])
    images["tiled"] = _tissue_image(140, 120, 9)
    tifffile.imwrite(tmp_path / "large" / "tiled.tif", images["tiled"], tile=(32, 32), compression="zlib",
                     photometric="rgb")
    index = index_domain(tmp_path / "large", "he", TILE, 20, 0.5, CROP, cache_dir=tmp_path / "cache")
    assert index.regions[str(tmp_path / "large" / "tiled.tif")] == ""  # read from the file by region
    assert all(index.regions[str(tmp_path / "large" / f"png{n}.png")].endswith(".npy") for n in range(3))

    full_decodes = []
    monkeypatch.setattr(decode, "read_image_rgb", lambda path: full_decodes.append(path))
    decoder = TileDecoder(index, DecodeFailures(), CROP)
    for position in np.random.default_rng(0).permutation(len(index.sources)):
        source = index.sources[position]
        tile, ok = decoder(position)
        assert ok
        expected = images[source.path.split("/")[-1].split(".")[0]][source.y:source.y + TILE,
                                                                    source.x:source.x + TILE]
        np.testing.assert_array_equal(tile, expected)
    assert full_decodes == []


@pytest.mark.parametrize("files", [1, 2])
def test_few_large_images_hold_out_a_band_that_no_training_tile_overlaps(tmp_path, files, caplog):
    for number in range(files):
        write_image_rgb(tmp_path / "he" / f"region{number}.png", _tissue_image(200, 130, number))
    index = _index(tmp_path / "he")
    with caplog.at_level("INFO"):
        train, val = split_validation(index, 0.05, seed=0)
    assert {s.path for s in train.sources} == {s.path for s in val.sources} == {s.path for s in index.sources}
    for tile in val.sources:
        for other in train.sources:
            if other.path == tile.path:
                overlap_y = min(tile.y, other.y) + TILE > max(tile.y, other.y)
                overlap_x = min(tile.x, other.x) + TILE > max(tile.x, other.x)
                assert not (overlap_y and overlap_x), (tile, other)
    assert len(val) >= 0.05 * len(index) and len(train) > 0.6 * len(index)
    assert f"{len(train)} tiles for training, {len(val)} for validation" in caplog.text


def test_one_large_image_per_stain_is_enough_to_start_training(tmp_path, tiny_config):
    from virtual_ihc.training.trainer import resolve_domains

    for stain in ("he", "ki67"):
        write_image_rgb(tmp_path / stain / "region.png", _tissue_image(200, 200, len(stain)))
    config = tiny_config(data={"he_dir": str(tmp_path / "he"), "ki67_dir": str(tmp_path / "ki67")})
    he, ki67, he_val, ki67_val = resolve_domains(config, tmp_path / "run")
    assert len(he) and len(ki67) and len(he_val) and len(ki67_val)


def test_tfrecord_validation_holds_out_whole_slides(tmp_path, caplog):
    index = _fake_record_domain(tmp_path, slides=6, shards_per_slide=3, per_shard=4)
    for seed in range(5):
        with caplog.at_level("INFO"):
            train, val = split_validation(index, 0.3, seed=seed)
        train_slides = set().union(*train.record_slides.values())
        val_slides = set().union(*val.record_slides.values())
        assert val_slides and train_slides and not train_slides & val_slides
        assert len(train) + len(val) == len(index)
        assert "validation split by slide" in caplog.text
