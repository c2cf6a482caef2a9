"""Input pipelines of a multi-worker run: each worker reads its own files, the global batch is split,
elements are numbered across workers, and the stream stays seeded and resumable."""

import numpy as np
import pytest
import tensorflow as tf

from virtual_ihc.data.index import index_domain
from virtual_ihc.data.stream import make_train_dataset, shard_domain
from virtual_ihc.io.images import encode_png, write_image_rgb
from virtual_ihc.io.tfrecords import TileRecord, write_tile_shard

TILE, CROP = 40, 32


def _index(folder, name="he"):
    return index_domain(folder, name, tile_size=TILE, overlap=20, min_tissue=0.5, crop_size=CROP,
                        cache_dir=folder.parent / "cache")


def _flat_tiles(folder, values):
    """One uniform tile per value (its red channel), so a crop tells which file it came from."""
    for value in values:
        tile = np.full((TILE, TILE, 3), (value, 120, 160), np.uint8)
        write_image_rgb(folder / f"tile_{value:03d}.png", tile)


def _tissue_image(height, width, seed):
    rng = np.random.default_rng(seed)
    return np.clip(np.array([200, 110, 170]) + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)


def _context(pipeline, pipelines, replicas=None):
    return tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline,
                                      num_replicas_in_sync=replicas or pipelines)


def _red(batch):
    """The red value of each uniform tile of a ``[-1, 1]`` batch (no augmentation)."""
    return [int(round((float(tile[0, 0, 0]) + 1.0) * 127.5)) for tile in batch.numpy()]


def test_each_file_goes_whole_to_one_worker_and_the_shares_are_balanced(tmp_path):
    sizes = [(200, 130), (130, 130), (90, 90), (260, 200)]  # large images with different tile counts
    for number, (height, width) in enumerate(sizes):
        write_image_rgb(tmp_path / "he" / f"large{number}.png", _tissue_image(height, width, number))
    _flat_tiles(tmp_path / "he", range(10, 70, 10))
    index = _index(tmp_path / "he")
    shards = [shard_domain(index, worker, 3) for worker in range(3)]
    owners = {}
    for worker, shard in enumerate(shards):
        for source in shard.sources:
            assert owners.setdefault(source.path, worker) == worker  # a file is never split
    assert sum(len(shard) for shard in shards) == len(index)
    assert set().union(*(shard.sources for shard in shards)) == set(index.sources)
    per_file = {path: sum(s.path == path for s in index.sources) for path in owners}
    loads = [len(shard) for shard in shards]
    assert max(loads) - min(loads) <= max(per_file.values())
    assert shard_domain(index, 0, 1) is index
    assert shard_domain(index, 0, len(per_file) + 1) is None  # fewer files than workers


def test_workers_read_disjoint_files_each_a_permutation_per_pass_and_split_the_global_batch(tmp_path):
    _flat_tiles(tmp_path / "he", range(10, 130, 10))  # 12 files
    _flat_tiles(tmp_path / "ki67", range(15, 95, 10))  # 8 files
    he, ki67 = _index(tmp_path / "he"), _index(tmp_path / "ki67", "ki67")
    seen = []
    for worker in range(2):
        dataset = make_train_dataset(he, ki67, batch_size=4, crop_size=CROP, seed=3, augment_tiles=False,
                                     input_context=_context(worker, 2))
        batches = list(dataset.take(6))  # 12 elements: two passes of its 6 H&E files, three of its 4 Ki-67
        assert all(batch[0].shape == (2, CROP, CROP, 3) for batch in batches)  # 4 / 2 workers
        he_values = [value for batch in batches for value in _red(batch[0])]
        ki67_values = [value for batch in batches for value in _red(batch[1])]
        assert len(set(he_values[:6])) == 6 and sorted(he_values[:6]) == sorted(he_values[6:])
        assert len(set(ki67_values[:4])) == 4 and sorted(ki67_values[:4]) == sorted(ki67_values[4:8])
        assert he_values[:6] != he_values[6:]  # a fresh order every pass
        elements = [int(batch[2][0]) for batch in batches]
        assert elements == [2 * (2 * step + 1) + worker for step in range(6)]  # local j -> 2 j + worker
        seen.append((set(he_values), set(ki67_values)))
    assert not seen[0][0] & seen[1][0] and seen[0][0] | seen[1][0] == set(range(10, 130, 10))
    assert not seen[0][1] & seen[1][1] and seen[0][1] | seen[1][1] == set(range(15, 95, 10))


def test_worker_streams_resume_at_the_recorded_global_element(tmp_path):
    _flat_tiles(tmp_path / "he", range(10, 90, 10))
    _flat_tiles(tmp_path / "ki67", range(15, 95, 10))
    he, ki67 = _index(tmp_path / "he"), _index(tmp_path / "ki67", "ki67")
    make = lambda worker, start: make_train_dataset(he, ki67, 4, CROP, seed=5, start_element=start,  # noqa: E731
                                                    input_context=_context(worker, 2))
    full = [list(make(worker, 0).take(5)) for worker in range(2)]
    chief_next = int(full[0][2][2][0]) + 1  # what the chief's model records after 3 steps
    for worker in range(2):
        resumed = list(make(worker, chief_next).take(2))
        for expected, got in zip(full[worker][3:], resumed):
            for part in range(3):
                np.testing.assert_array_equal(expected[part].numpy(), got[part].numpy())


def test_one_large_image_falls_back_to_splitting_the_single_stream_by_element(tmp_path):
    """With fewer files than workers, worker w takes elements w, w + W, ... of the one-process stream:
    the same tiles with the same random crops and flips, and each worker decodes only its own."""
    for stain in ("he", "ki67"):
        write_image_rgb(tmp_path / stain / "region.png", _tissue_image(200, 160, len(stain)))
    he, ki67 = _index(tmp_path / "he"), _index(tmp_path / "ki67", "ki67")
    single = list(make_train_dataset(he, ki67, 1, CROP, seed=2).take(8))
    for worker in range(2):
        batches = list(make_train_dataset(he, ki67, 2, CROP, seed=2, input_context=_context(worker, 2)).take(4))
        for step, batch in enumerate(batches):
            expected = single[2 * step + worker]
            np.testing.assert_array_equal(batch[0].numpy(), expected[0].numpy())
            np.testing.assert_array_equal(batch[1].numpy(), expected[1].numpy())


@pytest.mark.parametrize("shards", [4, 1])
def test_tfrecord_workers_read_their_own_shards_or_every_other_record(tmp_path, shards):
    values = list(range(10, 170, 10))  # 16 tiles
    for shard in range(shards):
        write_tile_shard(tmp_path / "he" / f"slide{shard}-00000.tfrecord",
                         [TileRecord(encode_png(np.full((TILE, TILE, 3), (value, 120, 160), np.uint8)),
                                     f"slide{shard}", 0, value, TILE) for value in values[shard::shards]])
    _flat_tiles(tmp_path / "ki67", range(15, 95, 10))
    he, ki67 = _index(tmp_path / "he"), _index(tmp_path / "ki67", "ki67")
    per_worker = []
    for worker in range(2):
        batches = list(make_train_dataset(he, ki67, 2, CROP, seed=1, augment_tiles=False,
                                          input_context=_context(worker, 2)).take(16))  # 4 passes
        per_worker.append([value for batch in batches for value in _red(batch[0])])
    if shards == 4:  # two shards each
        assert set(per_worker[0]) | set(per_worker[1]) == set(values)
        assert not set(per_worker[0]) & set(per_worker[1])
    else:  # the fallback is the single stream split by element
        single = [value for batch in make_train_dataset(he, ki67, 1, CROP, seed=1, augment_tiles=False).take(32)
                  for value in _red(batch[0])]
        assert per_worker[0] == single[0:32:2] and per_worker[1] == single[1:32:2]


def test_the_replicas_of_one_worker_take_consecutive_parts_of_its_batch(tmp_path):
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("TensorFlow was initialised before conftest could split the CPU")
    _flat_tiles(tmp_path / "he", range(10, 90, 10))
    _flat_tiles(tmp_path / "ki67", range(15, 95, 10))
    he, ki67 = _index(tmp_path / "he"), _index(tmp_path / "ki67", "ki67")
    strategy = tf.distribute.MirroredStrategy([device.name for device in cpus[:2]])
    distributed = strategy.distribute_datasets_from_function(
        lambda context: make_train_dataset(he, ki67, 4, CROP, seed=4, augment_tiles=False, input_context=context))
    single = list(make_train_dataset(he, ki67, 4, CROP, seed=4, augment_tiles=False).take(3))
    for expected, batch in zip(single, distributed):
        halves = [strategy.experimental_local_results(part) for part in batch]
        assert [tile.shape[0] for tile in halves[0]] == [2, 2]
        np.testing.assert_array_equal(np.concatenate([h.numpy() for h in halves[0]]), expected[0].numpy())
        assert {int(value) for h in halves[2] for value in h.numpy()} == {int(expected[2][0])}
        if expected is single[-1]:
            break
