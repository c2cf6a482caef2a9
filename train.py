#!/usr/bin/env python
"""Train the improved CycleGAN for H&E -> Ki-67 virtual staining (the same command as ``virtual-ihc train``).

    python train.py                          # built-in sample data, small CPU profile
    python train.py --profile paper --he-dir tiles/he/train --ki67-dir tiles/ki67/train
    python train.py --help                   # every option with its default
"""

import sys

from virtual_ihc.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
