"""``python -m virtual_ihc.nst``: same as ``virtual-ihc nst``."""

import sys

from virtual_ihc.nst.cli import main

sys.exit(main())
