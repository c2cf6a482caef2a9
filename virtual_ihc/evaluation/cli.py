"""``python evaluate.py`` / ``virtual-ihc evaluate``: metrics, summary table and figures of trained runs.

Example::

    python evaluate.py --run cyclegan=runs/a --run skip_ssim=runs/b --virtual-dir nst=nst_out \\
        --he-dir tiles/he --ki67-dir tiles/ki67 --pairs-dir registered/pairs --out eval/
"""

from __future__ import annotations

import argparse

from virtual_ihc.evaluation.distribution import INCEPTION_SIZE, KID_SUBSET_SIZE, KID_SUBSETS
from virtual_ihc.evaluation.evaluator import EvaluationOptions, evaluate_models, resolve_data
from virtual_ihc.evaluation.models import run_entries, virtual_dir_entry
from virtual_ihc.evaluation.phash import PHASH_LAYER, PHASH_THRESHOLD
from virtual_ihc.evaluation.report import write_evaluation
from virtual_ihc.evaluation.resnet18 import STAGES
from virtual_ihc.evaluation.tiles import EvaluationInputError
from virtual_ihc.weights import resolve_weights


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the evaluation options to ``parser``."""
    parser.description = ("Evaluate trained runs (and folders of precomputed virtual Ki-67 tiles): reconstruction "
                          "SSIM / MS-SSIM / PSNR / MAE, P-hash, FID / KID, paired metrics and the Ki-67 "
                          "labelling index; writes metrics.csv, per_tile.csv, summary.md and three figures.")
    models = parser.add_argument_group("models")
    models.add_argument("--run", action="append", default=[], metavar="[NAME=]RUN_DIR",
                        help="a training run directory (repeatable); NAME labels it in the table "
                             "(default: the folder name)")
    models.add_argument("--virtual-dir", action="append", default=[], metavar="NAME=DIR",
                        help="precomputed virtual Ki-67 tiles named like the H&E tiles, e.g. the NST "
                             "baseline's batch output (repeatable; no cycle metrics)")
    models.add_argument("--source", choices=("auto", "export", "checkpoint"), default="auto",
                        help="load runs from export/ SavedModels or the latest checkpoint "
                             "(auto: export when present) (default: %(default)s)")
    models.add_argument("--all-checkpoints", action="store_true",
                        help="evaluate every saved epoch (metric-vs-epoch curves)")
    data = parser.add_argument_group("tiles")
    data.add_argument("--he-dir", help="H&E tiles to stain virtually")
    data.add_argument("--ki67-dir", help="real Ki-67 tiles: reverse cycle, FID/KID and index reference "
                                         "(paired with --he-dir when the file names are identical)")
    data.add_argument("--pairs-dir", help="registered pairs: DIR/he/ and DIR/ki67/ with identical file names")
    data.add_argument("--max-tiles", type=int, default=0, help="use the first N tiles of each folder (0 = all)")
    data.add_argument("--batch-size", type=int, default=8, help="tiles per batch (default: %(default)s)")
    features = parser.add_argument_group("feature extractors")
    features.add_argument("--weights", default="imagenet",
                          help="ImageNet weights for ResNet-18 (P-hash) and InceptionV3 (FID/KID): 'imagenet', "
                               "or 'none' (random; offline smoke runs, scores not comparable with the paper) "
                               "(default: %(default)s)")
    features.add_argument("--phash-weights", help="local ResNet-18 .npz (torchvision state_dict); overrides --weights")
    features.add_argument("--fid-weights", help="local InceptionV3 no-top .h5; overrides --weights")
    features.add_argument("--phash-layer", default=PHASH_LAYER, choices=[stage for stage, _, _ in STAGES],
                          help="ResNet-18 stage hashed by the P-hash (default: %(default)s)")
    features.add_argument("--phash-threshold", type=float, default=PHASH_THRESHOLD,
                          help="channel-mean difference that sets a hash bit (default: %(default)s)")
    features.add_argument("--no-fid", action="store_true", help="skip FID/KID (InceptionV3 is the slowest part)")
    features.add_argument("--fid-image-size", type=int, default=INCEPTION_SIZE,
                          help="side tiles are resized to for InceptionV3 (default: %(default)s, min 75)")
    features.add_argument("--kid-subset-size", type=int, default=KID_SUBSET_SIZE,
                          help="KID subset size, capped at the set size (default: %(default)s)")
    features.add_argument("--kid-subsets", type=int, default=KID_SUBSETS, help="KID subsets (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _weights(spec: str | None, fallback: str, option: str) -> str | None:
    if spec is None and fallback.lower() not in ("imagenet", "none"):
        raise EvaluationInputError("--weights takes 'imagenet' or 'none'; a weights file serves one network: "
                                   "use --phash-weights (ResNet-18 .npz) or --fid-weights (InceptionV3 .h5)")
    return resolve_weights(spec if spec is not None else fallback, option)


def evaluate_from_args(args: argparse.Namespace) -> dict:
    """Run the evaluation described by parsed arguments; returns the written outputs by name."""
    if args.batch_size < 1:
        raise EvaluationInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    options = EvaluationOptions(
        batch_size=args.batch_size,
        phash_weights=_weights(args.phash_weights, args.weights, "--phash-weights"),
        fid_weights=_weights(args.fid_weights, args.weights, "--fid-weights"),
        phash_layer=args.phash_layer, phash_threshold=args.phash_threshold, distribution=not args.no_fid,
        fid_image_size=args.fid_image_size, kid_subset_size=args.kid_subset_size, kid_subsets=args.kid_subsets,
        progress=not args.no_progress)
    entries = [entry for spec in args.run for entry in run_entries(spec, args.source, args.all_checkpoints)]
    entries += [virtual_dir_entry(spec) for spec in args.virtual_dir]
    data = resolve_data(args.he_dir, args.ki67_dir, args.pairs_dir, args.max_tiles)
    results, real_rows, notes = evaluate_models(entries, data, options)
    return write_evaluation(results, real_rows, notes, args.out)


def print_outputs(outputs: dict, header: str) -> int:
    """Print ``header`` and where each output went; returns 0."""
    print(f"\n{header}")
    for name, path in outputs.items():
        print(f"  {name:18s} {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    return print_outputs(evaluate_from_args(args), f"Evaluation written to {args.out}/:")
