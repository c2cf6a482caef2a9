"""Seconds per neural style transfer iteration on CPU, next to one CycleGAN generator forward pass.

For each tile size, the NST Adam step (VGG19 forward + backward through the
default content and style layers) is timed after a warm-up run that traces it,
and so is one forward pass of the CycleGAN generator (``GeneratorConfig()``) on
the same tile. Weights do not change the arithmetic, so the default
``--weights none`` (random VGG19) gives the same timings as ImageNet weights
without a download.

    python benchmarks/nst_speed.py                       # 288 and 512, 5 timed iterations
    python benchmarks/nst_speed.py --sizes 288 --iterations 3

Prints one line per size, the ratios, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.nst.features import build_vgg19
from virtual_ihc.nst.transfer import StyleTransfer
from virtual_ihc.weights import describe_weights, resolve_weights


def nst_seconds_per_iteration(vgg: keras.Model, config: NSTConfig, size: int) -> float:
    """Median wall-clock seconds of one NST iteration on a ``size`` x ``size`` synthetic tile.

    The median leaves out the first iteration, which also traces the compiled step.
    """
    transfer = StyleTransfer(config, vgg)
    content = sample_tiles("he", 1, size, seed=1)[0]
    targets = transfer.style_targets([sample_tiles("ki67", 1, size, seed=2)[0]])
    return transfer.run(content, targets).seconds_per_iteration


def generator_forward_seconds(size: int, repeats: int) -> float | None:
    """Median seconds of one compiled generator forward pass on a ``(1, size, size, 3)`` tile.

    ``None`` when the generator is not available in this checkout.
    """
    try:
        from virtual_ihc.config import GeneratorConfig
        from virtual_ihc.models.resnet_generator import build_resnet_generator
    except ImportError:
        return None
    generator = build_resnet_generator(GeneratorConfig())
    forward = tf.function(lambda images: generator(images, training=False))
    tile = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32))
    forward(tile).numpy()  # warm-up: traces the call
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        forward(tile).numpy()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[288, 512], help="tile sizes (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=5,
                        help="NST iterations per size, >= 3 (median taken; default: %(default)s)")
    parser.add_argument("--optimizer", choices=("adam", "lbfgs"), default="adam", help="NST optimiser (default: adam)")
    parser.add_argument("--repeats", type=int, default=5, help="timed generator passes per size (default: %(default)s)")
    parser.add_argument("--weights", default="none", help="VGG19 weights; do not change the speed (default: none)")
    args = parser.parse_args(argv)
    if args.iterations < 3:
        parser.error("--iterations must be >= 3 (the median must leave out the traced first iteration)")

    resolved = resolve_weights(args.weights)
    keras.utils.set_random_seed(0)
    vgg = build_vgg19(resolved)
    config = dataclasses.replace(NSTConfig(), iterations=args.iterations, optimizer=args.optimizer,
                                 weights=args.weights)
    tile_iterations = NSTConfig().iterations
    print(f"CPU: {os.cpu_count()} logical cores ({platform.machine()}), load average {os.getloadavg()[0]:.1f} "
          f"at start; TensorFlow {tf.__version__}; VGG19 {describe_weights(resolved)} (speed is the same)")
    rows = []
    for size in args.sizes:
        per_iteration = nst_seconds_per_iteration(vgg, config, size)
        forward = generator_forward_seconds(size, args.repeats)
        row = {"size": size, "nst_seconds_per_iteration": per_iteration,
               "nst_seconds_per_tile": per_iteration * tile_iterations,
               "generator_forward_seconds": forward,
               "iteration_to_forward_ratio": per_iteration / forward if forward else None,
               "tile_to_forward_ratio": per_iteration * tile_iterations / forward if forward else None}
        rows.append(row)
        generator_text = ("generator not available" if forward is None else
                          f"generator forward {forward:.3f} s -> one NST iteration = "
                          f"{row['iteration_to_forward_ratio']:.1f} forward passes, a {tile_iterations}-iteration "
                          f"NST tile = {row['tile_to_forward_ratio']:.0f} forward passes")
        print(f"{size}x{size}: NST {args.optimizer} {per_iteration:.3f} s/iteration "
              f"({row['nst_seconds_per_tile']:.0f} s per tile at {tile_iterations} iterations); {generator_text}")
    print(json.dumps({"benchmark": "nst_speed", "device": "cpu", "cpu_count": os.cpu_count(),
                      "load_average_at_end": os.getloadavg()[0],
                      "optimizer": args.optimizer, "timed_iterations": args.iterations,
                      "tile_iterations": tile_iterations, "weights": args.weights, "results": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
