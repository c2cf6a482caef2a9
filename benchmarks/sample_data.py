#!/usr/bin/env python
"""Sample data against real tissue: colour statistics, nuclei, rendering time, pictures.

    python benchmarks/sample_data.py                       # ../shared/realdata when present
    python benchmarks/sample_data.py --he-dir my/he --ki67-dir my/ki67 --scale 1.0
    python benchmarks/sample_data.py --figure docs/sample_data.png --comparison comparison.png

Colour. Over the tissue (not glass: ``virtual_ihc.histology.consistency.glass_mask``) of
128-pixel tiles, the mean and standard deviation of the hematoxylin, eosin and DAB amounts
(``skimage.color.rgb2hed``) of the real images (rescaled by ``--scale``: 0.5 turns 40x into
20x, cut into tiles) and of as many sample tiles; and over the nuclei that
``virtual_ihc.histology.nuclei.segment_nuclei`` finds: the hematoxylin of the H&E nuclei, the
DAB of the positive Ki-67 nuclei (mean DAB above the index threshold) and the hematoxylin of
the negative ones, with their 10th and 90th percentiles, nuclei per tile and the Ki-67 index.

Speed. Wall and CPU time of writing the default ``python train.py`` sample set (160 + 8 tiles
of 72 px per stain, PNGs written) and of rendering ``--paper-tiles`` tiles of 288 px per stain.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from virtual_ihc.io.images import list_images, read_image_rgb, write_image_rgb  # noqa: E402
from virtual_ihc.data.synthetic import render_pair, sample_tiles, write_sample_dataset  # noqa: E402
from virtual_ihc.histology.consistency import glass_mask, stain_statistics  # noqa: E402
from virtual_ihc.histology.nuclei import NucleusOptions, mean_per_nucleus, segment_nuclei  # noqa: E402
from virtual_ihc.histology.stains import stain_concentrations  # noqa: E402

REALDATA = REPOSITORY.parent / "shared" / "realdata"
TILE = 128


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--he-dir", default=str(REALDATA / "he"), help="real H&E images (default: %(default)s)")
    parser.add_argument("--ki67-dir", default=str(REALDATA / "ki67"), help="real Ki-67 images (default: %(default)s)")
    parser.add_argument("--scale", type=float, default=0.5,
                        help="rescale the real images by this factor (0.5: 40x -> 20x) (default: %(default)s)")
    parser.add_argument("--sample-tiles", type=int, default=48, help="sample tiles per stain (default: %(default)s)")
    parser.add_argument("--paper-tiles", type=int, default=40,
                        help="288-px tiles per stain rendered for the timing (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample tiles (default: %(default)s)")
    parser.add_argument("--figure", help="write a picture of sample tiles (H&E over the Ki-67 of the same layouts)")
    parser.add_argument("--comparison", help="write real H&E | sample H&E | real Ki-67 | sample Ki-67 tiles")
    args = parser.parse_args(argv)
    for name in ("he_dir", "ki67_dir"):
        if not Path(getattr(args, name)).is_dir():
            parser.error(f"--{name.replace('_', '-')}: not a folder: {getattr(args, name)}")
    if args.scale <= 0:
        parser.error(f"--scale must be positive, got {args.scale}")
    return args


def real_tiles(folder: str, scale: float) -> list[np.ndarray]:
    """Every image of ``folder`` rescaled by ``scale`` and cut into ``TILE``-pixel tiles."""
    tiles = []
    for path in list_images(folder):
        image = read_image_rgb(path)
        if scale != 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        for y in range(0, image.shape[0] - TILE + 1, TILE):
            for x in range(0, image.shape[1] - TILE + 1, TILE):
                tiles.append(image[y:y + TILE, x:x + TILE])
    if not tiles:
        raise SystemExit(f"{folder}: no image of at least {TILE} px after scaling by {scale}")
    return tiles


def describe(tiles: list[np.ndarray]) -> dict:
    """Stain statistics over tissue and over the segmented nuclei of ``tiles``."""
    threshold = NucleusOptions().dab_threshold
    statistics = stain_statistics(tiles)
    nuclear_h, positive_dab, negative_h, nuclei, tissue = [], [], [], 0, []
    for tile in tiles:
        labels = segment_nuclei(tile)
        amounts = stain_concentrations(tile)
        dab, hematoxylin = mean_per_nucleus(amounts[..., 2], labels), mean_per_nucleus(amounts[..., 0], labels)
        positive = dab > threshold
        nuclear_h.append(hematoxylin)
        positive_dab.append(dab[positive])
        negative_h.append(hematoxylin[~positive])
        nuclei += int(labels.max())
        tissue.append(1.0 - glass_mask(tile, 200, 25).mean())

    def spread(values: list[np.ndarray]) -> list[float]:
        values = np.concatenate(values)
        if len(values) == 0:
            return [float("nan")] * 3
        return [round(float(v), 4) for v in (values.mean(), *np.percentile(values, [10, 90]))]

    positives = sum(len(values) for values in positive_dab)
    return {"tiles": len(tiles), "tissue_fraction": round(float(np.mean(tissue)), 3),
            "tissue_mean_hed": [round(v, 4) for v in statistics.mean],
            "tissue_std_hed": [round(v, 4) for v in statistics.std],
            "nuclei_per_tile": round(nuclei / len(tiles), 1),
            "nucleus_hematoxylin_mean_p10_p90": spread(nuclear_h),
            "positive_nucleus_dab_mean_p10_p90": spread(positive_dab),
            "negative_nucleus_hematoxylin_mean_p10_p90": spread(negative_h),
            "index": round(positives / nuclei, 3) if nuclei else float("nan")}


def timings(paper_tiles: int) -> dict:
    """Wall and CPU seconds of the default sample set (written) and of 288-px tiles (rendered)."""
    with tempfile.TemporaryDirectory() as folder:
        wall, cpu = time.perf_counter(), time.process_time()
        write_sample_dataset(Path(folder) / "sample", 160, 8, 72)
        default = (time.perf_counter() - wall, time.process_time() - cpu)
    wall, cpu = time.perf_counter(), time.process_time()
    for stain in ("he", "ki67"):
        sample_tiles(stain, paper_tiles, 288, seed=0)
    count = 2 * max(paper_tiles, 1)
    return {"default_set_wall_s": round(default[0], 2), "default_set_cpu_s": round(default[1], 2),
            "tile_288_wall_ms": round((time.perf_counter() - wall) / count * 1000, 1),
            "tile_288_cpu_ms": round((time.process_time() - cpu) / count * 1000, 1)}


def grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Tiles of equal size in rows, on white."""
    size = rows[0][0].shape[0]
    columns = max(len(row) for row in rows)
    canvas = np.full((len(rows) * (size + gap) - gap, columns * (size + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas[r * (size + gap):r * (size + gap) + size, c * (size + gap):c * (size + gap) + size] = tile
    return canvas


def main(argv=None) -> int:
    args = parse_args(argv)
    real = {"he": real_tiles(args.he_dir, args.scale), "ki67": real_tiles(args.ki67_dir, args.scale)}
    sample = {stain: list(sample_tiles(stain, args.sample_tiles, TILE, seed=args.seed)) for stain in ("he", "ki67")}
    result = {f"{origin}_{stain}": describe(tiles[stain])
              for origin, tiles in (("real", real), ("sample", sample)) for stain in ("he", "ki67")}
    for name, values in result.items():
        print(f"{name:12s} tissue H,E,DAB mean {values['tissue_mean_hed']} std {values['tissue_std_hed']}; "
              f"nuclei/tile {values['nuclei_per_tile']}, nuclear H {values['nucleus_hematoxylin_mean_p10_p90']}, "
              f"positive DAB {values['positive_nucleus_dab_mean_p10_p90']}, "
              f"negative H {values['negative_nucleus_hematoxylin_mean_p10_p90']}, index {values['index']}")
    result["timing"] = timings(args.paper_tiles)
    print(f"default sample set: {result['timing']['default_set_wall_s']} s wall, "
          f"{result['timing']['default_set_cpu_s']} s CPU; 288 px tile: {result['timing']['tile_288_wall_ms']} ms "
          f"wall, {result['timing']['tile_288_cpu_ms']} ms CPU")
    if args.figure:
        rng = np.random.default_rng(args.seed)
        pairs = [render_pair(rng, TILE) for _ in range(6)]
        picture = Image.fromarray(grid([[pair.he for pair in pairs], [pair.ki67 for pair in pairs]]))
        # 256 colours: a third of the bytes of full RGB for a picture kept in the repository
        picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.figure, optimize=True)
    if args.comparison:
        rows = [[real["he"][i * len(real["he"]) // 6], sample["he"][i], real["ki67"][i * len(real["ki67"]) // 6],
                 sample["ki67"][i]] for i in range(min(6, args.sample_tiles))]
        write_image_rgb(args.comparison, grid(rows, gap=6))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
