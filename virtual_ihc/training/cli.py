"""Command line of ``python train.py`` / ``virtual-ihc train``, generated from the config dataclasses.

Every option of ``virtual_ihc.config`` appears once, with its default (the
dataclass default, i.e. the paper's value; ``--profile small``, the default
profile, overrides some of them, as the help says). Booleans get
``--flag/--no-flag`` (``--no-skip`` is the paper's plain-CycleGAN generator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing

import tensorflow as tf

from virtual_ihc.config import CLI_PREFIX, PROFILES, SECTIONS, ExperimentConfig, load_config_file, resolve_config
from virtual_ihc.training.trainer import run_training

_TOP_LEVEL = ("name", "out", "profile")


def _value_type(field: dataclasses.Field, owner) -> type:
    hint = typing.get_type_hints(owner)[field.name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if args else hint


def _profile_note(section: str, name: str) -> str:
    notes = [f"{profile}: {values[section][name]}" for profile, values in PROFILES.items()
             if name in values.get(section, {})]
    return f"; profile {', '.join(notes)}" if notes else ""


def _add_field(group, section: str | None, field: dataclasses.Field, owner) -> None:
    flag = f"--{(CLI_PREFIX[section] if section else '')}{field.name.replace('_', '-')}"
    dest = f"{section}.{field.name}" if section else field.name
    value_type = _value_type(field, owner)
    default = field.default
    # a None default is described by the help text itself (e.g. "default: built-in sample data")
    notes = ([] if default is None else [f"default: {default}"])
    notes += [_profile_note(section, field.name).removeprefix("; ")] if section and _profile_note(
        section, field.name) else []
    help_text = field.metadata.get("help", "") + (f" ({'; '.join(notes)})" if notes else "")
    kwargs = dict(dest=dest, default=argparse.SUPPRESS, help=help_text)
    if value_type is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    else:
        group.add_argument(flag, type=value_type, choices=field.metadata.get("choices"),
                           metavar=None if field.metadata.get("choices") else value_type.__name__.upper(),
                           **kwargs)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add every training option to ``parser``."""
    parser.description = ("Train the improved CycleGAN (H&E <-> Ki-67). With no data options it trains on the "
                          "built-in procedural sample data with the small CPU profile.")
    run = parser.add_argument_group("run")
    run.add_argument("--config", default=None, help="YAML or JSON config file (nested like config.json); "
                                                    "command-line options override it")
    run.add_argument("--resume", action="store_true", help="continue the run in --out/--name from its "
                                                           "latest checkpoint (weights, optimizers, epoch, lr)")
    run.add_argument("--overwrite", action="store_true", help="delete an existing run's checkpoints and start again")
    for field in dataclasses.fields(ExperimentConfig):
        if field.name in _TOP_LEVEL:
            _add_field(run, None, field, ExperimentConfig)
    for section in SECTIONS:
        section_type = type(getattr(ExperimentConfig(), section))
        group = parser.add_argument_group(section, section_type.__doc__.splitlines()[0])
        for field in dataclasses.fields(section_type):
            _add_field(group, section, field, section_type)


def cli_overrides(args: argparse.Namespace) -> dict:
    """The options given on the command line, nested like the config (only those given)."""
    values: dict = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            values.setdefault(section, {})[name] = value
        elif key in _TOP_LEVEL:
            values[key] = value
    return values


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Resolve defaults < profile < --config file < command line; with --resume start from the run's config.json."""
    file_values = load_config_file(args.config) if args.config else {}
    overrides = cli_overrides(args)
    if args.resume:
        probe = resolve_config(file_values=file_values, cli_values=overrides)
        stored = probe.run_dir / "config.json"
        if not stored.is_file():
            raise FileNotFoundError(f"--resume: {probe.run_dir} has no config.json (no run to resume)")
        file_values = json.loads(stored.read_text())
        overrides.pop("profile", None)
        return resolve_config(profile=file_values.get("profile", "small"), file_values=file_values,
                              cli_values=overrides)
    return resolve_config(file_values=file_values, cli_values=overrides)


#: exit status of a multi-worker run that lost a worker: relaunch every worker with the same command
EXIT_WORKER_LOST = 75  # EX_TEMPFAIL


def run(args: argparse.Namespace) -> int:
    """Train as the arguments say and print where the outputs went.

    Bad options and data raise (the dispatcher reports them, exit status 2), a
    diverged run raises :class:`~virtual_ihc.training.trainer.TrainingDivergedError`
    (exit status 1); a multi-worker run that lost a worker returns :data:`EXIT_WORKER_LOST`.
    """
    config = config_from_args(args)
    try:
        result = run_training(config, resume=args.resume, overwrite=args.overwrite)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as error:
        if config.train.distribute != "multiworker":
            raise
        first_line = re.sub(r"\{\{.*?\}\}\s*", "", str(error)).strip().split("\n")[0] or type(error).__name__
        print(f"virtual-ihc train: error: a worker of the cluster was lost ({first_line}). Relaunch every worker with the same "
              f"command: training resumes from the last checkpoint in {config.run_dir / 'checkpoints'} "
              f"(exit status {EXIT_WORKER_LOST}; docs/distributed.md)", file=sys.stderr)
        return EXIT_WORKER_LOST
    run_dir = result.run_dir
    epochs = f"{result.epochs_completed} epoch{'s' if result.epochs_completed != 1 else ''}"
    print(f"\nTrained {epochs} x {result.steps_per_epoch} steps on {result.replicas} replica(s). "
          f"Outputs in {run_dir}/:")
    outputs = [("config", "config.json"), ("history", "history.csv"), ("samples", "samples/"),
               ("checkpoints", "checkpoints/"), ("TensorBoard", "logs/")]
    if result.exports:
        outputs += [("SavedModel H&E->Ki-67", "export/he_to_ki67/"), ("SavedModel Ki-67->H&E", "export/ki67_to_he/"),
                    ("Keras models", "export/generator_*.keras")]
    for label, path in outputs:
        print(f"  {label:24s} {run_dir / path}")
    if result.consistency is not None:
        print(f"\nPathology guard (validation tiles, last epoch): {result.consistency.verdict()}")
        if result.flagged_epochs:
            epochs = ", ".join(f"{epoch}: {'/'.join(flags)}" for epoch, flags in sorted(result.flagged_epochs.items()))
            print(f"  WARNING: flagged epochs ({epochs}); look at samples/ before using this model")
    if result.skipped_files or result.decode_failures:
        print(f"  skipped: {len(result.skipped_files)} unusable files while indexing, "
              f"{result.decode_failures} failed tile reads during training (see the log)")
    return 0
