"""Peak memory of tiling a 20 000 x 20 000 whole-slide image (must stay under 1 GB).

Writes a synthetic pyramidal tiled TIFF (JPEG tiles, 0.25 µm/px, ~40 % tissue),
then runs ``python -m data_prep.tile_slides`` on it in a child process at 20x with
the default 288 px tiles and 144 px overlap, and reads the child's peak resident
memory from ``os.wait4``. Level 0 alone would take 1.2 GB as ``uint8`` RGB, so a
peak under 1 GB shows the tiler reads region by region.

Usage::

    python benchmarks/tile_memory.py [--size 20000] [--workers 1] [--workdir DIR] [--keep]

Prints the figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from virtual_ihc.io.tiff_pyramid import write_pyramidal_tiff  # noqa: E402
from virtual_ihc.slides.synthetic_slides import blob_tissue_renderer  # noqa: E402

LIMIT_MB = 1024


def run_measured(command: list[str]) -> tuple[int, float, float]:
    """Run a command; returns (exit status, peak RSS in MB of it and its waited children, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    sys.stdout.write(output)
    return process.returncode, usage.ru_maxrss / 1024.0, time.perf_counter() - start  # ru_maxrss is in KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="slide side in level-0 pixels")
    parser.add_argument("--workers", type=int, default=1, help="tiler worker processes")
    parser.add_argument("--workdir", type=Path, help="folder for the slide and the tiles (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the slide and the tiles")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tile_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    slide = workdir / f"synthetic_{args.size}.tif"
    out = workdir / "tiles"
    shutil.rmtree(out, ignore_errors=True)
    try:
        start = time.perf_counter()
        if not slide.exists():
            write_pyramidal_tiff(slide, (args.size, args.size), blob_tissue_renderer(args.size, args.size), mpp=0.25)
        write_seconds = time.perf_counter() - start
        print(f"slide: {slide} ({args.size} x {args.size} px, {slide.stat().st_size / 1e6:.0f} MB on disk, "
              f"written in {write_seconds:.0f} s)")
        command = [sys.executable, "-m", "data_prep.tile_slides", str(slide), "--stain", "he", "--out", str(out),
                   "--target-mag", "20", "--test-fraction", "0", "--workers", str(args.workers), "--no-progress"]
        status, peak_mb, seconds = run_measured(command)
        tiles = len(list((out / "he" / "train").glob("*.png")))
        print(f"tiles: {tiles} PNG tiles of 288 px (overlap 144) at 20x in {seconds:.0f} s "
              f"({tiles / max(seconds, 1e-9):.0f} tiles/s, {args.workers} worker(s))")
        print(f"peak RSS of the tiler{' (largest process)' if args.workers > 1 else ''}: {peak_mb:.0f} MB "
              f"(limit {LIMIT_MB} MB; level 0 in memory would be {args.size ** 2 * 3 / 2 ** 20:.0f} MB)")
        passed = status == 0 and tiles > 0 and peak_mb < LIMIT_MB
        print(json.dumps(dict(benchmark="tile_memory", slide_px=args.size, workers=args.workers, tiles=tiles,
                              tiling_seconds=round(seconds, 1), peak_rss_mb=round(peak_mb, 1),
                              limit_mb=LIMIT_MB, passed=passed)))
        return 0 if passed else 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
