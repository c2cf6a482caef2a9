"""``python -m virtual_ihc.stain INPUT OUTPUT --model EXPORT``: same as ``virtual-ihc stain``."""

if __name__ == "__main__":  # the way in is the dispatcher (imported here: this module is only an entry point)
    import sys

    from virtual_ihc.cli import main

    sys.exit(main(["stain", *sys.argv[1:]]))
