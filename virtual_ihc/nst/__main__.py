"""``python -m virtual_ihc.nst``: same as ``virtual-ihc nst``."""

if __name__ == "__main__":  # the way in is the dispatcher (imported here: this module is only an entry point)
    import sys

    from virtual_ihc.cli import main

    sys.exit(main(["nst", *sys.argv[1:]]))
