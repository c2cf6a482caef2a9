#!/usr/bin/env python
"""Real-tissue benchmark: train on real unpaired H&E and Ki-67 for a fixed budget, measure pathology consistency.

    python benchmarks/real_tissue.py                                   # profile real, ../shared/realdata, seed 0
    python benchmarks/real_tissue.py --profile paper --seed 1
    python benchmarks/real_tissue.py --he-dir my/he --ki67-dir my/ki67 --scale 1.0 --steps 300
    python benchmarks/real_tissue.py --set loss.identity_weight=5 --set loss.adversarial=lsgan

Data. Every image of ``--he-dir`` and ``--ki67-dir`` is rescaled by ``--scale`` (0.5 turns
40x images into the paper's 20x). The held-out split is fixed and spatial: the last
``--test-fraction`` of each H&E image along its long side (at least one crop wide), separated
from the training part by a 16-pixel gap, is never trained on; an H&E image too small to give
both goes to the held-out set whole. All Ki-67 images are training data: the measures need no
held-out Ki-67, and the Ki-67 tiles the model learned from are the reference of the positivity
calibration (an unpaired model can only learn how common positivity is there).

Training. ``virtual_ihc.training.trainer.run_training`` with ``--profile`` (``real``, ``paper`` or
``small``), the model size and crop given here (16 base filters, 6 residual blocks, 128-pixel
crops by default: about 1.6 s per batch-4 step on 2 CPU cores), ``--steps`` steps split into
``--epochs`` epochs, and any ``--set section.option=value``. The pathology guard measures the
held-out tiles after every epoch (``history.csv``).

Output. The held-out H&E regions are stained whole and measured with
:func:`virtual_ihc.histology.consistency.evaluate_consistency` against the training Ki-67
images. The last line printed is one JSON object (also ``OUT/result.json``) with the measures,
the flags, the verdict, the wall time and the settings; ``OUT/grid.png`` shows held-out tiles as
H&E | virtual Ki-67 | reconstructed H&E.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from virtual_ihc.io.images import list_images, read_image_rgb, write_image_rgb  # noqa: E402

REALDATA = REPOSITORY.parent / "shared" / "realdata"
GAP = 16  # pixels between an image's training part and its held-out band

logger = logging.getLogger("real_tissue")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--he-dir", default=str(REALDATA / "he"), help="real H&E images (default: %(default)s)")
    parser.add_argument("--ki67-dir", default=str(REALDATA / "ki67"), help="real Ki-67 images (default: %(default)s)")
    parser.add_argument("--profile", default="real", help="training profile (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=600, help="training steps, the budget (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs the steps are split into (default: %(default)s)")
    parser.add_argument("--crop", type=int, default=128, help="training crop side (default: %(default)s)")
    parser.add_argument("--base-filters", type=int, default=16, help="generator base filters (default: %(default)s)")
    parser.add_argument("--residual-blocks", type=int, default=6, help="generator residual blocks (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data order and augmentation")
    parser.add_argument("--scale", type=float, default=0.5, help="rescale every image by this factor "
                                                                  "(0.5: 40x -> 20x) (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="share of each H&E image's long side held out (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.OPTION=VALUE",
                        help="any training option, e.g. loss.identity_weight=5 (repeatable)")
    parser.add_argument("--out", help="output folder (default: runs/real_tissue/<profile>_seed<seed>)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="do not train: measure the latest checkpoint of an earlier run in --out")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last checkpoint (same options)")
    args = parser.parse_args(argv)
    for name in ("he_dir", "ki67_dir"):
        if not Path(getattr(args, name)).is_dir():
            parser.error(f"--{name.replace('_', '-')}: not a folder: {getattr(args, name)} "
                         "(give real H&E and Ki-67 folders; ../shared/realdata is used when present)")
    if args.resume and args.evaluate_only:
        parser.error("--resume and --evaluate-only exclude each other")
    if args.steps < args.epochs or args.epochs < 1:
        parser.error("--steps must be at least --epochs, and --epochs at least 1")
    if not 0.0 < args.test_fraction < 1.0:
        parser.error("--test-fraction must be in (0, 1)")
    return args


def overrides_from(assignments: list[str]) -> dict:
    """``["loss.identity_weight=5"]`` -> ``{"loss": {"identity_weight": 5}}`` (values parsed as YAML)."""
    values: dict = {}
    for assignment in assignments:
        key, separator, raw = assignment.partition("=")
        if not separator or "." not in key:
            raise SystemExit(f"--set {assignment!r}: expected SECTION.OPTION=VALUE")
        section, option = key.split(".", 1)
        values.setdefault(section, {})[option] = yaml.safe_load(raw)
    return values


def rescaled(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def multiple_of(value: int, factor: int = 8) -> int:
    return value - value % factor


def split_he(image: np.ndarray, fraction: float, crop: int) -> tuple[np.ndarray | None, np.ndarray]:
    """``(training part or None, held-out band)`` of one H&E image, split along its long side."""
    transposed = image.shape[0] > image.shape[1]
    work = image.transpose(1, 0, 2) if transposed else image
    width = work.shape[1]
    band = max(int(round(fraction * width)), crop)
    train_width = width - band - GAP
    if train_width < crop or work.shape[0] < crop:
        return None, image
    train, held_out = work[:, :train_width], work[:, width - band:]
    if transposed:
        train, held_out = train.transpose(1, 0, 2), held_out.transpose(1, 0, 2)
    return np.ascontiguousarray(train), np.ascontiguousarray(held_out)


def cut_tiles(region: np.ndarray, size: int) -> list[np.ndarray]:
    """Tiles of ``size`` covering ``region`` (the last row and column aligned to its far edges)."""
    from virtual_ihc.grid import tile_starts

    if min(region.shape[:2]) < size:
        return []
    return [region[y:y + size, x:x + size] for y in tile_starts(region.shape[0], size, size)
            for x in tile_starts(region.shape[1], size, size)]


def prepare(args: argparse.Namespace, out: Path) -> dict:
    """Write the training folders; return the held-out regions, their tiles and the reference images."""
    data = out / "data"
    held_out_regions, held_out_names = [], []
    for path in list_images(args.he_dir):
        image = rescaled(read_image_rgb(path), args.scale)
        train, held_out = split_he(image, args.test_fraction, args.crop)
        if train is not None:
            write_image_rgb(data / "he_train" / f"{path.stem}.png", train)
        else:
            logger.info("%s (%dx%d after scaling) is too small to split: held out whole", path.name,
                        image.shape[0], image.shape[1])
        held_out = held_out[:multiple_of(held_out.shape[0]), :multiple_of(held_out.shape[1])]
        held_out_regions.append(held_out)
        held_out_names.append(path.stem)
    tiles = [tile for region in held_out_regions for tile in cut_tiles(region, args.crop)]
    if not tiles:
        raise SystemExit(f"no held-out H&E tile of {args.crop} px: images too small for --crop/--scale")
    for index, tile in enumerate(tiles):
        write_image_rgb(data / "he_val" / f"he_val_{index:03d}.png", tile)
    reference = []
    for path in list_images(args.ki67_dir):
        image = rescaled(read_image_rgb(path), args.scale)
        write_image_rgb(data / "ki67_train" / f"{path.stem}.png", image)
        reference.append(image)
    if not (data / "he_train").is_dir():
        raise SystemExit("no H&E image is large enough to give training data; lower --test-fraction or --crop")
    return dict(regions=held_out_regions, names=held_out_names, tiles=tiles, reference=reference, data=data)


def stain(generator, image: np.ndarray) -> np.ndarray:
    """One uint8 image through a generator (float [-1, 1] in and out)."""
    from virtual_ihc.pixels import uint8_to_unit, unit_to_uint8

    return unit_to_uint8(generator(uint8_to_unit(image[None]), training=False)).numpy()[0]


def grid_tiles(tiles: list[np.ndarray], count: int = 8) -> list[np.ndarray]:
    """``count`` held-out tiles spread evenly over all of them (every region shows, none twice)."""
    if len(tiles) <= count:
        return list(tiles)
    return [tiles[int(index)] for index in np.linspace(0, len(tiles) - 1, count).round()]


def grid_image(tiles: list[np.ndarray], virtual: list[np.ndarray], reconstructed: list[np.ndarray],
               columns: int = 2) -> np.ndarray:
    """Rows of H&E | virtual Ki-67 | reconstructed H&E, ``columns`` triplets side by side, white gutters."""
    size = tiles[0].shape[0]
    gutter = max(2, size // 32)
    triplets = [np.concatenate([t, np.full((size, gutter // 2, 3), 255, np.uint8), v,
                                np.full((size, gutter // 2, 3), 255, np.uint8), r], axis=1)
                for t, v, r in zip(tiles, virtual, reconstructed)]
    while len(triplets) % columns:
        triplets.append(np.full_like(triplets[0], 255))
    rows = []
    for start in range(0, len(triplets), columns):
        parts = []
        for triplet in triplets[start:start + columns]:
            parts += [triplet, np.full((size, gutter * 2, 3), 255, np.uint8)]
        rows += [np.concatenate(parts[:-1], axis=1), np.full((gutter, sum(p.shape[1] for p in parts[:-1]), 3),
                                                             255, np.uint8)]
    return np.concatenate(rows[:-1], axis=0)


def read_history(path: Path) -> dict:
    """``history.csv`` of a run as ``{column: [values]}``."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows if row[key] not in ("", None)] for key in (rows[0] if rows else {})}


def main(argv=None) -> int:
    args = parse_args(argv)
    from virtual_ihc.runtime import configure_logging

    configure_logging()
    from virtual_ihc.config import resolve_config
    from virtual_ihc.histology.consistency import evaluate_consistency
    from virtual_ihc.training.checkpoints import load_generators
    from virtual_ihc.training.trainer import run_training

    out = Path(args.out or f"runs/real_tissue/{args.profile}_seed{args.seed}")
    prepared = prepare(args, out)
    data = prepared["data"]
    tile_size = multiple_of(args.crop * 3 // 2)
    values = {
        "out": str(out / "run"), "profile": args.profile,
        "generator": {"base_filters": args.base_filters, "num_residual_blocks": args.residual_blocks},
        "data": {"he_dir": str(data / "he_train"), "ki67_dir": str(data / "ki67_train"),
                 "he_val_dir": str(data / "he_val"), "ki67_val_dir": str(data / "ki67_train"),
                 "crop_size": args.crop, "tile_size": tile_size, "tile_overlap": tile_size // 2,
                 "max_val_tiles": len(prepared["tiles"])},
        "train": {"epochs": args.epochs, "steps_per_epoch": args.steps // args.epochs, "batch_size": args.batch_size,
                  "seed": args.seed, "verbose": "2", "keep_checkpoints": 1},
    }
    for section, options in overrides_from(args.set).items():
        values.setdefault(section, {}).update(options) if isinstance(options, dict) else None
    config = resolve_config(profile=args.profile, cli_values=values)
    if args.evaluate_only:
        result, train_seconds = None, float("nan")
    else:
        start = time.perf_counter()
        result = run_training(config, resume=args.resume, overwrite=not args.resume)
        train_seconds = time.perf_counter() - start

    generators = load_generators(out / "run")
    virtual = [stain(generators["he_to_ki67"], region) for region in prepared["regions"]]
    _, summary = evaluate_consistency(prepared["regions"], virtual, prepared["reference"])
    for name, region, image in zip(prepared["names"], prepared["regions"], virtual):
        write_image_rgb(out / "held_out" / f"{name}_he.png", region)
        write_image_rgb(out / "held_out" / f"{name}_virtual_ki67.png", image)
    tiles = grid_tiles(prepared["tiles"])
    tile_virtual = [stain(generators["he_to_ki67"], tile) for tile in tiles]
    tile_cycled = [stain(generators["ki67_to_he"], tile) for tile in tile_virtual]
    write_image_rgb(out / "grid.png", grid_image(tiles, tile_virtual, tile_cycled))

    steps = args.steps // args.epochs * args.epochs
    history = result.history if result is not None else read_history(out / "run" / "history.csv")
    report = {
        "profile": args.profile, "seed": args.seed, "steps": steps,
        "train_minutes": round(train_seconds / 60, 2), "seconds_per_step": None if args.resume else round(train_seconds / steps, 3),
        "crop": args.crop, "base_filters": args.base_filters, "residual_blocks": args.residual_blocks,
        "scale": args.scale, "overrides": args.set, "resumed": args.resume,
        "measures": {key: round(float(value), 4) for key, value in summary.values.items()},
        "flags": summary.flags, "consistent": summary.consistent, "verdict": summary.verdict(),
        "held_out_regions": [list(region.shape[:2]) for region in prepared["regions"]],
        "val_he_cycle_ssim": round(float(history.get("val_he_cycle_ssim", [float("nan")])[-1]), 4),
        "grid": str(out / "grid.png"),
    }
    (out / "result.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
