"""``python evaluate.py`` / ``virtual-ihc evaluate``: not implemented yet (no metrics are reported)."""

import argparse
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    print("evaluate: not implemented yet; the evaluation work (issue 4) is still open.", file=sys.stderr)
    return 2
