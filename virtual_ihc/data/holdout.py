"""Holding out validation tiles, never with an overlapping tile on the training side.

TFRecord domains hold out whole slides; domains with enough files hold out
whole files; domains with fewer files hold out a band at the end of each large
image (:func:`split_validation`).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from virtual_ihc.data.index import DataError, DomainIndex, TileSource, slide_groups

logger = logging.getLogger(__name__)


def _split_records(index: DomainIndex, fraction: float, seed: int) -> tuple[DomainIndex, DomainIndex]:
    """Hold out whole slides (all their shards), so no slide has tiles on both sides."""
    groups = slide_groups(index.record_slides)
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
