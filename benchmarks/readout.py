"""Benchmark of ``virtual-ihc readout``: peak memory against slide area, and time.

Two synthetic virtual Ki-67 slides (pyramidal TIFFs at 0.5 µm/px, ``--tissue`` of their area
tissue, the same texture and density), ``--small`` and ``--large`` pixels a side (8000 and
20 000 by default: 6.25 times the area). Each is read out in a fresh process, which reports its
peak resident memory (``ru_maxrss``), its time and what it counted. Memory should not grow with
the area (the readout streams tiles; it keeps two counters per 250 µm region): the large slide's
peak over the small one's is printed, with a JSON line.

    python benchmarks/readout.py                       # ~6 minutes on 2 CPU cores
    python benchmarks/readout.py --small 2000 --large 5000   # quick check
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


def child(args) -> dict:
    from virtual_ihc.readout.slide_readout import read_out

    started, cpu = time.perf_counter(), time.process_time()
    summary = read_out(args.slide, args.out)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "nuclei": summary.nuclei, "index": summary.index, "regions": summary.regions,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "cells_bytes": (Path(args.out) / "cells.geojson").stat().st_size}


def make_slide(path: Path, size: int, tissue: float) -> Path:
    from virtual_ihc.io.tiff_pyramid import write_pyramidal_tiff
    from virtual_ihc.slides.synthetic_slides import blob_tissue_renderer

    return write_pyramidal_tiff(path, (size, size), blob_tissue_renderer(size, size, seed=2, tissue_fraction=tissue,
                                                                         stain="ki67"), mpp=0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=8000, help="side of the small slide (pixels)")
    parser.add_argument("--large", type=int, default=20000, help="side of the large slide (pixels)")
    parser.add_argument("--tissue", type=float, default=0.1, help="tissue fraction of both slides")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    report = {"tissue_fraction": args.tissue}
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        for name, size in (("small", args.small), ("large", args.large)):
            slide = make_slide(Path(scratch) / f"{name}.tif", size, args.tissue)
            completed = subprocess.run([sys.executable, __file__, "--child", "--slide", str(slide), "--out",
                                        str(Path(scratch) / f"{name}_readout")], capture_output=True, text=True)
            if completed.returncode:
                raise RuntimeError(f"readout of {name} failed:\n{completed.stderr[-3000:]}")
            report[name] = {"side": size, **json.loads(completed.stdout.strip().splitlines()[-1])}
            run = report[name]
            print(f"{size} x {size} ({args.tissue:.0%} tissue): {run['nuclei']} nuclei, index {run['index']:.3f}, "
                  f"{run['regions']} regions, {run['seconds']:.0f} s ({run['cpu_seconds']:.0f} s CPU), peak RSS "
                  f"{run['peak_rss_mb']:.0f} MB, cells.geojson {run['cells_bytes'] / 1e6:.1f} MB", flush=True)
    report["area_ratio"] = (args.large / args.small) ** 2
    report["peak_rss_ratio"] = report["large"]["peak_rss_mb"] / report["small"]["peak_rss_mb"]
    print(f"peak memory, large over small: {report['peak_rss_ratio']:.3f} (area {report['area_ratio']:.2f} times; "
          f"target <= 1.2)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
