"""The paper's ablation: train CycleGAN, +skip, +SSIM and +skip+SSIM on the same data and seed, then evaluate.

One command::

    virtual-ihc ablate --out runs/ablation      # or: python -m virtual_ihc.experiments.ablation --out ...

writes::

    OUT/sample_data/              paired procedural tiles (unless --he-dir/--ki67-dir are given)
    OUT/runs/<variant>/           one training run per variant (checkpoint every epoch)
    OUT/evaluation/               metrics.csv, per_tile.csv, summary.md and the three figures

The variants differ only in ``generator.skip`` and ``loss.ssim_weight`` (0 for
the variants without SSIM; the configured beta, 5 by default, for the others);
everything else, data and seed included, is shared. A variant whose run already
has all its epochs is not trained again, so a second call only re-evaluates.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __name__ == "__main__":  # as a command: the dispatcher, before the imports below load TensorFlow unquietly
    from virtual_ihc.cli import main

    sys.exit(main(["ablate", *sys.argv[1:]]))

from virtual_ihc.config import ConfigError, ExperimentConfig, load_config_file, resolve_config
from virtual_ihc.data.synthetic import write_sample_dataset
from virtual_ihc.evaluation.cli import print_outputs
from virtual_ihc.evaluation.evaluator import EvaluationOptions, evaluate_models, resolve_data
from virtual_ihc.evaluation.models import run_entries, virtual_dir_entry
from virtual_ihc.evaluation.report import write_evaluation
from virtual_ihc.evaluation.tiles import EvaluationInputError
from virtual_ihc.training.checkpoints import list_checkpoints
from virtual_ihc.training.trainer import run_training
from virtual_ihc.weights import resolve_weights

logger = logging.getLogger(__name__)

#: variant -> (skip connections, SSIM cycle loss), in the paper's order
VARIANTS = {"cyclegan": (False, False), "skip": (True, False), "ssim": (False, True), "skip_ssim": (True, True)}


def variant_overrides(variant: str, ssim_weight: float) -> dict:
    """The config overrides that make ``variant`` (nested like ``config.json``)."""
    if variant not in VARIANTS:
        raise ConfigError(f"--variants: unknown variant {variant!r}; choose from {list(VARIANTS)}")
    skip, ssim = VARIANTS[variant]
    return {"generator": {"skip": skip}, "loss": {"ssim_weight": ssim_weight if ssim else 0.0}}


def _merge(base: dict, extra: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    return merged


def variant_configs(out: str | Path, variants: list[str], overrides: dict, profile: str = "small",
                    file_values: dict | None = None) -> dict[str, ExperimentConfig]:
    """One resolved config per variant, identical but for the variant's options and run directory."""
    probe = resolve_config(profile, file_values, overrides)
    configs = {}
    for variant in variants:
        values = _merge(overrides, variant_overrides(variant, probe.loss.ssim_weight))
        values["out"] = str(Path(out) / "runs" / variant)
        values["name"] = variant
        configs[variant] = resolve_config(profile, file_values, values)
    return configs


def is_complete(config: ExperimentConfig) -> bool:
    """Whether the run already holds a checkpoint of its last epoch."""
    epochs = [epoch for epoch, _ in list_checkpoints(config.run_dir / "checkpoints")]
    return bool(epochs) and max(epochs) >= config.train.epochs


def train_variants(configs: dict[str, ExperimentConfig],
                   train: Callable[..., object] | None = None) -> dict[str, float]:
    """Train every variant that is not complete (resuming partial runs); returns seconds per variant."""
    train = train or run_training
    seconds = {}
    for variant, config in configs.items():
        if is_complete(config):
            logger.info("%s: already trained (%s), skipping", variant, config.run_dir)
            continue
        start = time.perf_counter()
        resume = bool(list_checkpoints(config.run_dir / "checkpoints"))
        logger.info("training %s in %s", variant, config.run_dir)
        train(config, resume=resume)
        seconds[variant] = time.perf_counter() - start
    return seconds


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="ablation folder (runs/, evaluation/, sample_data/)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants to train and compare (default: all four)")
    training = parser.add_argument_group("training (shared by every variant)")
    training.add_argument("--profile", default="small", help="config profile (default: %(default)s)")
    training.add_argument("--config", help="YAML/JSON config file applied to every variant")
    training.add_argument("--epochs", type=int, help="epochs per variant (default: the profile's)")
    training.add_argument("--steps-per-epoch", type=int, help="steps per epoch (default: one pass over the data)")
    training.add_argument("--seed", type=int, default=0, help="random seed of every variant (default: %(default)s)")
    training.add_argument("--he-dir", help="H&E training tiles (default: procedural sample data)")
    training.add_argument("--ki67-dir", help="Ki-67 training tiles")
    training.add_argument("--sample-train-tiles", type=int, help="sample data: training tiles per stain")
    training.add_argument("--no-export", dest="export", action="store_false", default=None,
                          help="skip the SavedModel/.keras export of each run (the evaluation reads checkpoints)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval-he-dir", help="H&E evaluation tiles (default: the sample data's val split)")
    evaluation.add_argument("--eval-ki67-dir", help="real Ki-67 evaluation tiles")
    evaluation.add_argument("--pairs-dir", help="registered pairs (DIR/he/, DIR/ki67/) for paired metrics")
    evaluation.add_argument("--eval-tiles", type=int, default=32,
                            help="sample data: paired evaluation tiles (default: %(default)s)")
    evaluation.add_argument("--virtual-dir", action="append", default=[], metavar="NAME=DIR",
                            help="also compare precomputed virtual Ki-67 tiles (e.g. NST output)")
    evaluation.add_argument("--weights", default="imagenet",
                            help="feature-extractor weights: imagenet or none (default: %(default)s)")
    evaluation.add_argument("--fid-image-size", type=int, default=299, help="InceptionV3 input side")
    evaluation.add_argument("--no-fid", action="store_true", help="skip FID/KID")
    evaluation.add_argument("--no-progress", action="store_true", help="no progress bars")


def training_overrides(args: argparse.Namespace) -> dict:
    """The shared training options given on the command line, nested like ``config.json``."""
    values: dict = {"train": {"seed": args.seed}, "data": {}}
    for section, name in (("train", "epochs"), ("train", "steps_per_epoch"), ("train", "export"),
                          ("data", "he_dir"), ("data", "ki67_dir"), ("data", "sample_train_tiles")):
        if getattr(args, name) is not None:
            values[section][name] = getattr(args, name)
    return values


def run_ablation(args: argparse.Namespace, train: Callable[..., object] | None = None) -> dict[str, Path]:
    """Train the variants and evaluate them into ``OUT/evaluation``; returns the written outputs."""
    out = Path(args.out)
    overrides = training_overrides(args)
    file_values = load_config_file(args.config) if args.config else None
    eval_he, eval_ki67 = args.eval_he_dir, args.eval_ki67_dir
    if args.he_dir is None:
        probe = resolve_config(args.profile, file_values, overrides)
        data = probe.data
        root = write_sample_dataset(out / "sample_data", data.sample_train_tiles, args.eval_tiles,
                                    data.sample_tile_size, seed=args.seed, paired=True)
        overrides["data"].update(he_dir=str(root / "he" / "train"), ki67_dir=str(root / "ki67" / "train"),
                                 he_val_dir=str(root / "he" / "val"), ki67_val_dir=str(root / "ki67" / "val"))
        if eval_he is None and args.pairs_dir is None:
            eval_he, eval_ki67 = root / "he" / "val", root / "ki67" / "val"
    elif eval_he is None and args.pairs_dir is None:
        raise EvaluationInputError("with --he-dir/--ki67-dir training data, give --eval-he-dir (and "
                                   "--eval-ki67-dir) or --pairs-dir for the evaluation")
    configs = variant_configs(out, args.variants, overrides, args.profile, file_values)
    seconds = train_variants(configs, train)
    for variant, taken in seconds.items():
        logger.info("%s trained in %.0f s", variant, taken)
    weights = resolve_weights(args.weights)
    options = EvaluationOptions(phash_weights=weights, fid_weights=weights, distribution=not args.no_fid,
                                fid_image_size=args.fid_image_size, progress=not args.no_progress, seed=args.seed)
    entries = [entry for variant, config in configs.items()
               for entry in run_entries(f"{variant}={config.run_dir}", "checkpoint", all_checkpoints=True)]
    entries += [virtual_dir_entry(spec) for spec in args.virtual_dir]
    results, real_rows, notes = evaluate_models(entries, resolve_data(eval_he, eval_ki67, args.pairs_dir), options)
    notes.append("variants trained with the same data and seed " + f"({args.seed}); training seconds: "
                 + (", ".join(f"{variant} {taken:.0f}" for variant, taken in seconds.items()) or "none (reused)"))
    return write_evaluation(results, real_rows, notes, out / "evaluation")


def run(args: argparse.Namespace) -> int:
    return print_outputs(run_ablation(args), f"Ablation of {', '.join(args.variants)} in {args.out}/; evaluation:")
