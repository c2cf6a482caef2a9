#!/usr/bin/env python
"""Wall time of the walkthrough notebooks, executed top to bottom as a person would run them.

    python benchmarks/notebooks.py                          # every notebook at full settings, one at a time
    python benchmarks/notebooks.py 01_quickstart --out out  # one notebook; keep it executed, figures as PNG
    python benchmarks/notebooks.py --fast                   # VIRTUAL_IHC_FAST=1, what the test suite runs

Each notebook runs in a fresh Jupyter kernel (nbclient) in its own empty working folder (a
temporary one, or ``--out/<name>/``), so it cannot lean on another notebook's outputs. Wall
time is from kernel start to the last cell, kernel start-up and imports included. With
``--out`` the executed notebook and every figure it shows (``<name>/figures/cell_NN_K.png``)
are kept for a look. One JSON line per notebook: name, seconds, FAST mode.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(notebook_path: Path, workdir: Path, fast: bool, timeout: int, keep: Path | None = None):
    """Run every cell of a notebook in ``workdir``; returns the executed notebook.

    A cell error is raised after the notebook, executed up to that cell, is written to ``keep`` (if given).
    """
    import nbclient
    import nbformat

    notebook = nbformat.read(notebook_path, as_version=4)
    previous = os.environ.get("VIRTUAL_IHC_FAST")
    os.environ["VIRTUAL_IHC_FAST"] = "1" if fast else "0"  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(workdir)}}).execute()
    except Exception:
        if keep is not None:
            nbformat.write(notebook, keep)
        raise
    finally:
        if previous is None:
            os.environ.pop("VIRTUAL_IHC_FAST", None)
        else:
            os.environ["VIRTUAL_IHC_FAST"] = previous
    return notebook


def save_figures(notebook, folder: Path) -> list[Path]:
    """Write every PNG output of an executed notebook as ``cell_NN_K.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, cell in enumerate(notebook.cells):
        pngs = [output["data"]["image/png"] for output in cell.get("outputs", [])
                if "image/png" in output.get("data", {})]
        for number, data in enumerate(pngs):
            path = folder / f"cell_{index:02d}_{number}.png"
            path.write_bytes(base64.b64decode(data))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks (file stems; default: every notebook in notebooks/)")
    parser.add_argument("--fast", action="store_true", help="VIRTUAL_IHC_FAST=1 (the test suite's settings)")
    parser.add_argument("--out", type=Path, help="keep working folders, executed notebooks and figures here")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    import nbformat

    paths = [NOTEBOOKS / f"{name}.ipynb" for name in args.names] or sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    for path in paths:
        with tempfile.TemporaryDirectory() as scratch:
            workdir = args.out / path.stem if args.out else Path(scratch)
            if workdir.exists() and any(workdir.iterdir()):
                parser.error(f"{workdir} is not empty: a notebook would reuse what is there (remove it first)")
            workdir.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            notebook = execute(path, workdir, args.fast, args.timeout, workdir / path.name if args.out else None)
            seconds = time.perf_counter() - started
            if args.out:
                nbformat.write(notebook, workdir / path.name)
                save_figures(notebook, workdir / "figures")
        print(json.dumps({"notebook": path.stem, "seconds": round(seconds, 1), "fast": args.fast}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
