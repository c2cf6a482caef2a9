#!/usr/bin/env python
"""Training-step throughput of the paper model, against a matmul measured in the same run.

    python benchmarks/train_step.py                           # 288x288, batch 1 and 4, float32
    python benchmarks/train_step.py --precision bfloat16      # mixed_bfloat16, with the float32 step for the ratio
    python benchmarks/train_step.py --size 128 --batch 2 --steps 3

Prints, per batch size: seconds per training step, tiles/s, the step's FLOPs
(counted by the TensorFlow profiler on the traced step: convolutions forward and
backward, matmuls), achieved GFLOP/s, and the ratio of that to a square float32
matmul measured in the same process. The last line is one JSON object with the
keys step_s, tiles_per_s, gflop_per_step, gflops_per_s, matmul_gflops_per_s and
efficiency (achieved / float32 matmul) for the largest batch, plus details.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from virtual_ihc.config import resolve_config  # noqa: E402
from virtual_ihc.training.trainer import build_cycle_gan, compile_cycle_gan  # noqa: E402

PRECISIONS = {"float32": "none", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def matmul_gflops(dtype: tf.DType, size: int = 2048, repeats: int = 10) -> float:
    """Best-of-3 GFLOP/s of a square matmul chain in ``dtype`` (2 n^3 FLOPs each)."""
    a = tf.random.stateless_normal((size, size), seed=[1, 2], dtype=tf.float32)
    a = tf.cast(a / np.sqrt(size), dtype)

    @tf.function
    def chain(x):
        for _ in range(repeats):
            x = tf.linalg.matmul(x, a)
        return x

    chain(a).numpy()
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        chain(a).numpy()
        timings.append(time.perf_counter() - start)
    return 2 * size ** 3 * repeats / min(timings) / 1e9


def step_flops(model, size: int, batch: int) -> float:
    """FLOPs of one traced training step, from the TensorFlow profiler's op statistics."""
    spec = tf.TensorSpec((batch, size, size, 3), tf.float32)
    concrete = tf.function(model.train_step).get_concrete_function((spec, spec))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(concrete.graph, options=options)
    return float(profile.total_float_ops)


def time_steps(model, size: int, batch: int, steps: int, warmup: int) -> list[float]:
    """Seconds per step over ``steps`` steps, after ``warmup`` steps (tracing included there)."""
    rng = np.random.default_rng(0)
    data = tuple(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32") for _ in range(2))
    iterator = iter(tf.data.Dataset.from_tensors(data).repeat())
    model.make_train_function()
    train_function = model.train_function
    for _ in range(warmup):
        train_function(iterator)
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        logs = train_function(iterator)
        float(logs["generator_loss"])  # wait for the step to finish
        timings.append(time.perf_counter() - start)
    return timings


def measure(precision: str, size: int, batch: int, steps: int, warmup: int, jit: bool) -> dict:
    config = resolve_config(profile="paper", cli_values={
        "data": {"crop_size": size, "tile_size": max(size, 288)},
        "train": {"batch_size": batch, "mixed_precision": PRECISIONS[precision], "jit": jit}})
    keras.utils.set_random_seed(0)
    model = build_cycle_gan(config)
    compile_cycle_gan(model, config, steps_per_epoch=100)
    flops = step_flops(model, size, batch)
    timings = time_steps(model, size, batch, steps, warmup)
    step_s = statistics.median(timings)
    return {"precision": precision, "batch": batch, "size": size, "step_s": step_s,
            "tiles_per_s": batch / step_s, "gflop_per_step": flops / 1e9, "gflops_per_s": flops / 1e9 / step_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=288, help="tile side (multiple of 8)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="float32",
                        help="float32, or mixed precision (bfloat16 also measures float32 for the ratio)")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the training step")
    args = parser.parse_args(argv)

    matmul_f32 = matmul_gflops(tf.float32)
    print(f"float32 matmul 2048^3: {matmul_f32:.1f} GFLOP/s")
    matmul_bf16 = None
    if args.precision != "float32":
        matmul_bf16 = matmul_gflops(tf.bfloat16 if args.precision == "bfloat16" else tf.float16)
        print(f"{args.precision} matmul 2048^3: {matmul_bf16:.1f} GFLOP/s ({matmul_bf16 / matmul_f32:.2f}x float32)")

    results = []
    for batch in args.batch:
        result = measure(args.precision, args.size, batch, args.steps, args.warmup, args.jit)
        result["efficiency"] = result["gflops_per_s"] / matmul_f32
        if args.precision != "float32":
            reference = measure("float32", args.size, batch, args.steps, args.warmup, args.jit)
            result["float32_step_s"] = reference["step_s"]
            result["speedup_vs_float32"] = reference["step_s"] / result["step_s"]
        results.append(result)
        line = (f"{args.precision} {args.size}x{args.size} batch {batch}: {result['step_s']:.3f} s/step, "
                f"{result['tiles_per_s']:.2f} tiles/s, {result['gflop_per_step']:.1f} GFLOP/step, "
                f"{result['gflops_per_s']:.1f} GFLOP/s = {result['efficiency']:.2f} x float32 matmul")
        if "speedup_vs_float32" in result:
            line += f"; float32 step {result['float32_step_s']:.3f} s -> {result['speedup_vs_float32']:.2f}x"
        print(line, flush=True)

    main_result = results[-1]
    summary = {key: main_result[key] for key in ("step_s", "tiles_per_s", "gflop_per_step", "gflops_per_s")}
    summary.update(matmul_gflops_per_s=matmul_f32, efficiency=main_result["efficiency"],
                   precision=args.precision, jit=args.jit, size=args.size, batch=main_result["batch"],
                   per_batch=results)
    if matmul_bf16 is not None:
        summary["low_precision_matmul_gflops_per_s"] = matmul_bf16
        summary["speedup_vs_float32"] = main_result["speedup_vs_float32"]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
