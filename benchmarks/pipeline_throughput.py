#!/usr/bin/env python
"""Training-input throughput against what the training step consumes, at the paper settings, in one run.

    python benchmarks/pipeline_throughput.py                   # the three sources, then the step
    python benchmarks/pipeline_throughput.py --seconds 10 --steps 1 --sources tiles tfrecord

Sources, written once into a temporary folder for both stains:

- ``tiles``: folders of 288x288 PNG tiles (the sample tissue of ``virtual_ihc.data.synthetic``);
- ``large``: large PNG images tiled on the fly (288 px tiles, 144 overlap), read by region from the
  copies decoded once at indexing, as training reads them;
- ``tfrecord``: TFRecord shards of PNG tiles, as ``data_prep.tile_slides --format tfrecord`` writes them.

For each, ``make_train_dataset`` at the paper settings (batch 4, 288x288 random crops, flips and
rotations) is iterated for ``--seconds`` after a warm-up. One *element* is what one image of a training
batch consumes: an H&E tile and a Ki-67 tile, each decoded and augmented. Reported: elements/s over wall
time, the process CPU time it took (every tf.data thread), and elements per CPU-second, the throughput
of one fully used core. Then the training step of the paper model (float32, batch 4, 288x288) is timed in
the same process (``benchmarks/train_step.py``'s timing), and each source's elements/s is divided by
the step's consumption (4 / step seconds). Last line: one JSON object.

A GPU step consumes far more; the cores a pipeline needs to keep up with a consumption of C elements/s
are C / (elements per CPU-second) (no GPU was measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from large_image_tiles import write_images  # noqa: E402  (this folder is on sys.path when run as a script)
from train_step import time_steps  # noqa: E402
from virtual_ihc.config import resolve_config  # noqa: E402
from virtual_ihc.io.images import encode_png, write_image_rgb  # noqa: E402
from virtual_ihc.data.decode import DecodeFailures  # noqa: E402
from virtual_ihc.data.index import index_domain  # noqa: E402
from virtual_ihc.data.stream import make_train_dataset  # noqa: E402
from virtual_ihc.data.synthetic import sample_tiles  # noqa: E402
from virtual_ihc.io.tfrecords import TileRecord, write_tile_shard  # noqa: E402
from virtual_ihc.training.trainer import build_cycle_gan, compile_cycle_gan  # noqa: E402

TILE, OVERLAP, BATCH = 288, 144, 4
SOURCES = ("tiles", "large", "tfrecord")


def write_source(kind: str, root: Path, tiles: dict[str, np.ndarray], large_images: int, large_size: int) -> dict:
    """Write one source for both stains under ``root``; returns ``{stain: folder}``."""
    folders = {}
    for stain, stack in tiles.items():
        folder = folders[stain] = root / kind / stain
        if kind == "tiles":
            for number, tile in enumerate(stack):
                write_image_rgb(folder / f"{number:03d}.png", tile)
        elif kind == "large":
            write_images(folder, large_images, large_size)
        else:  # four shards, each tile twice over the domain
            records = [TileRecord(encode_png(tile), f"slide{number % 4}", 0, number, TILE)
                       for number, tile in enumerate(np.concatenate([stack, stack[::-1]]))]
            for shard in range(4):
                write_tile_shard(folder / f"slide{shard}-00000.tfrecord", records[shard::4])
    return folders


def measure_pipeline(folders: dict, cache: Path, seconds: float, warmup_batches: int = 3) -> dict:
    """Elements/s, CPU seconds and elements per CPU-second of the training dataset over ``folders``."""
    indexes = [index_domain(folders[stain], stain, TILE, OVERLAP, 0.25, TILE, cache_dir=cache / stain)
               for stain in ("he", "ki67")]
    failures = DecodeFailures()
    iterator = iter(make_train_dataset(*indexes, BATCH, TILE, seed=0, failures=failures))
    for _ in range(warmup_batches):
        next(iterator)
    batches = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        next(iterator)
        batches += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    elements = batches * BATCH
    return {"tiles_per_domain": [len(index) for index in indexes], "elements": elements, "wall_s": wall,
            "cpu_s": cpu, "elements_per_s": elements / wall, "elements_per_cpu_s": elements / cpu,
            "decode_failures": failures.count}


def measure_step(steps: int, warmup: int) -> dict:
    """Seconds per training step of the paper model, float32, batch 4, 288x288 (wall and process CPU)."""
    config = resolve_config(profile="paper", cli_values={"train": {"batch_size": BATCH}})
    keras.utils.set_random_seed(0)
    model = build_cycle_gan(config)
    compile_cycle_gan(model, config, steps_per_epoch=100)
    cpu = time.process_time()
    timings = time_steps(model, TILE, BATCH, steps, warmup)
    cpu = time.process_time() - cpu
    step_s = float(np.median(timings))
    return {"step_s": step_s, "step_cpu_s_incl_warmup": cpu, "elements_per_s": BATCH / step_s,
            "timings": timings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per source")
    parser.add_argument("--tiles", type=int, default=32, help="PNG tiles per stain (tile and TFRecord sources)")
    parser.add_argument("--large-images", type=int, default=4, help="large images per stain")
    parser.add_argument("--large-size", type=int, default=2000, help="side of the large images in pixels")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps first (tracing)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seconds <= 0:
        parser.error("--steps must be at least 1 and --seconds positive")

    workdir = Path(tempfile.mkdtemp(prefix="pipeline_throughput_"))
    try:
        tiles = {stain: sample_tiles(stain, args.tiles, TILE, seed=number) for number, stain in
                 enumerate(("he", "ki67"))}
        results = {}
        for kind in args.sources:
            folders = write_source(kind, workdir, tiles, args.large_images, args.large_size)
            result = results[kind] = measure_pipeline(folders, workdir / "cache" / kind, args.seconds)
            print(f"{kind}: {result['elements_per_s']:.1f} elements/s ({result['elements']} in "
                  f"{result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU: "
                  f"{result['elements_per_cpu_s']:.1f} per CPU-second)", flush=True)
        step = measure_step(args.steps, args.warmup)
        print(f"paper training step, float32, batch {BATCH}, {TILE}x{TILE}: {step['step_s']:.2f} s "
              f"-> consumes {step['elements_per_s']:.3f} elements/s", flush=True)
        for kind, result in results.items():
            result["ratio_to_step"] = result["elements_per_s"] / step["elements_per_s"]
            print(f"{kind}: {result['ratio_to_step']:.0f}x the CPU step's consumption; one core delivers "
                  f"{result['elements_per_cpu_s']:.1f} elements/s, so a consumption of C elements/s needs "
                  f"C / {result['elements_per_cpu_s']:.1f} cores")
        print(json.dumps({"cpu_count": os.cpu_count(), "step": step, "sources": results}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
