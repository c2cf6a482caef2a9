#!/usr/bin/env python
"""Evaluate trained runs (reconstruction metrics, P-hash, FID/KID, Ki-67 index): ``virtual-ihc evaluate``."""

import sys

from virtual_ihc.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
