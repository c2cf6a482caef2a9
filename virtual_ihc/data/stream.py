"""The training stream: two unpaired stain domains, permuted, decoded, augmented, zipped and batched.

Element ``k`` of the stream is a pure function of ``(seed, k)`` (see the
package docstring, :mod:`virtual_ihc.data`); :func:`make_train_dataset` builds
it for one process or for one worker of a multi-worker run.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import tensorflow as tf

from virtual_ihc.data.decode import DecodeFailures, RecordDecoder, TileDecoder
from virtual_ihc.data.index import DomainIndex, slide_groups
from virtual_ihc.pixels import uint8_to_unit

logger = logging.getLogger(__name__)

#: TFRecord shards read at the same time, record by record (fewer when a domain has fewer shards)
RECORD_CYCLE_LENGTH = 16
#: elements of the TFRecord shuffle buffer (at most the domain's size)
RECORD_SHUFFLE_BUFFER = 2048


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
    group_of = {shard: number for number, group in enumerate(slide_groups(index.record_slides)) for shard in group}
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
            across pipelines (see :mod:`virtual_ihc.data`); ``start_element`` too.
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


def make_validation_dataset(he_tiles: np.ndarray, ki67_tiles: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Finite dataset of ``(real_he, real_ki67)`` batches, float32 in [-1, 1], from uint8 arrays."""
    dataset = tf.data.Dataset.from_tensor_slices((he_tiles, ki67_tiles))
    dataset = dataset.map(lambda he_tile, ki67_tile: (uint8_to_unit(he_tile), uint8_to_unit(ki67_tile)))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def default_steps_per_epoch(he: DomainIndex, ki67: DomainIndex, batch_size: int) -> int:
    """One pass over the larger domain."""
    return max(1, math.ceil(max(len(he), len(ki67)) / batch_size))
