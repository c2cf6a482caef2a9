"""``python -m virtual_ihc.stain INPUT OUTPUT --model EXPORT``: same as ``virtual-ihc stain``."""

import sys

from virtual_ihc.cli import main

if __name__ == "__main__":
    sys.exit(main(["stain", *sys.argv[1:]]))
