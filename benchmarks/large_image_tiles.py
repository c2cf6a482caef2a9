"""Tiles/s of the training input from many large images: region reads vs whole-image decodes.

Writes ``--images`` large PNG images (``--size`` pixels a side, H&E-like
texture), indexes them as training does (288 px tiles, 144 overlap), then reads
``--tiles`` tissue tiles in one global random order (as the training stream
draws them) two ways, in the same run:

- ``region``: :class:`virtual_ihc.data.decode.TileDecoder`, which reads each tile
  from a memory-mapped copy of its image decoded once at indexing;
- ``whole``: the previous reader, which decoded the whole image per tile through
  an ``lru_cache(maxsize=8)`` (so with more than 8 images nearly every tile
  decodes a whole image, and up to 8 images stay in memory).

Both read the same tiles in the same order (checked equal). Also reports the
indexing time (which includes writing the decoded copies).

Usage::

    python benchmarks/large_image_tiles.py [--images 50] [--size 1500] [--tiles 400] [--workdir DIR]

Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtual_ihc.io.images import read_image_rgb, write_image_rgb  # noqa: E402
from virtual_ihc.data.decode import DecodeFailures, TileDecoder  # noqa: E402
from virtual_ihc.data.index import index_domain  # noqa: E402
from virtual_ihc.data.synthetic import make_layout, render_he  # noqa: E402

TILE, OVERLAP = 288, 144


def write_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    texture = render_he(make_layout(rng, (512, 512)), rng)  # tiled, so that writing 50 images stays quick
    for number in range(count):
        reps = -(-size // 512)
        image = np.roll(np.tile(texture, (reps, reps, 1)), shift=37 * number, axis=(0, 1))[:size, :size]
        write_image_rgb(folder / f"region_{number:03d}.png", image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="large images")
    parser.add_argument("--size", type=int, default=1500, help="image side in pixels")
    parser.add_argument("--tiles", type=int, default=400, help="tiles read per method")
    parser.add_argument("--workdir", type=Path, help="folder for the images (default: a temporary one)")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="large_image_tiles_"))
    images, cache = workdir / "images", workdir / "cache"
    try:
        if not images.is_dir() or len(list(images.glob("*.png"))) != args.images:
            shutil.rmtree(images, ignore_errors=True)
            write_images(images, args.images, args.size)
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        index = index_domain(images, "he", TILE, OVERLAP, 0.25, TILE, cache_dir=cache)
        index_seconds = time.perf_counter() - start
        order = np.random.default_rng(1).permutation(len(index.sources))[:args.tiles]

        decoder = TileDecoder(index, DecodeFailures(), TILE)
        start = time.perf_counter()
        region_tiles = [decoder(position)[0] for position in order]
        region_seconds = time.perf_counter() - start

        whole_image = functools.lru_cache(maxsize=8)(read_image_rgb)
        start = time.perf_counter()
        whole_tiles = []
        for position in order:
            source = index.sources[position]
            whole_tiles.append(whole_image(source.path)[source.y:source.y + TILE, source.x:source.x + TILE])
        whole_seconds = time.perf_counter() - start

        same = all(np.array_equal(a, b) for a, b in zip(region_tiles, whole_tiles))
        region_rate, whole_rate = len(order) / region_seconds, len(order) / whole_seconds
        print(f"{args.images} images of {args.size} x {args.size} px, {len(index)} tissue tiles; indexing "
              f"(tissue masks + decoded copies) {index_seconds:.1f} s")
        print(f"region reads: {region_rate:.0f} tiles/s; whole-image decodes (lru_cache 8): {whole_rate:.1f} tiles/s; "
              f"ratio {region_rate / whole_rate:.0f}x; same tiles: {same}")
        print(json.dumps(dict(benchmark="large_image_tiles", images=args.images, size=args.size,
                              tiles=len(order), index_seconds=round(index_seconds, 2),
                              region_tiles_per_s=round(region_rate, 1), whole_tiles_per_s=round(whole_rate, 2),
                              ratio=round(region_rate / whole_rate, 1), same_tiles=same)))
        return 0 if same else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
