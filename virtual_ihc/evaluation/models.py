"""The models an evaluation compares: trained runs (export or checkpoints) and folders of virtual tiles.

A :class:`ModelEntry` is one row of the results. It loads lazily into a
:class:`Translator`, which maps ``uint8`` RGB batches between the stains:

- a run's exported SavedModels (``RUN/export/he_to_ki67/``, ``ki67_to_he/``);
- a run's checkpoint of one epoch (generators rebuilt from ``RUN/config.json``);
- a folder of precomputed virtual Ki-67 tiles named like the H&E tiles (e.g.
  the NST baseline's batch output): H&E -> Ki-67 only, so no cycle metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from virtual_ihc.config import ExperimentConfig
from virtual_ihc.evaluation.tiles import EvaluationInputError, TileFolder, index_tiles
from virtual_ihc.export import size_multiple_of
from virtual_ihc.pixels import padding_to_multiple, uint8_to_unit, unit_to_uint8
from virtual_ihc.training.checkpoints import list_checkpoints, load_generators

#: uint8 (N, H, W, 3) RGB -> uint8 (N, H, W, 3) RGB, given the tiles' names
StainFunction = Callable[[list[str], np.ndarray], np.ndarray]
SOURCES = ("auto", "export", "checkpoint")


@dataclasses.dataclass
class Translator:
    """Stain transfer in both directions; ``ki67_to_he`` is ``None`` for one-way models."""

    he_to_ki67: StainFunction
    ki67_to_he: StainFunction | None = None


@dataclasses.dataclass
class ModelEntry:
    """One evaluated model: a name, its ablation variant, the epoch (if known) and a loader."""

    name: str
    variant: str
    epoch: int | None
    load: Callable[[], Translator]


def variant_name(config: ExperimentConfig) -> str:
    """The paper's name of a run's variant: ``CycleGAN``, ``+skip``, ``+SSIM`` or ``+skip+SSIM``."""
    parts = [part for part, on in (("skip", config.generator.skip), ("SSIM", config.loss.ssim_weight > 0)) if on]
    return "+" + "+".join(parts) if parts else "CycleGAN"


def _generator_function(generator) -> StainFunction:
    """Call a generator eagerly (no tracing per model: faster over many epochs), mirror-padding to its
    size multiple (8 px for 3 downsamplings).

    Same arithmetic as the exported ``serving_default`` signature.
    """
    multiple = size_multiple_of(generator)

    def stain(names: list[str], images: np.ndarray) -> np.ndarray:
        height, width = images.shape[1:3]
        pad_h, pad_w = padding_to_multiple(height, width, multiple)
        padding = ((0, 0), (0, pad_h), (0, pad_w), (0, 0))
        padded = np.pad(images, padding, mode="reflect")
        output = generator(uint8_to_unit(tf.constant(padded)), training=False)[:, :height, :width]
        return unit_to_uint8(output).numpy()
    return stain


def _saved_model_function(directory: Path) -> StainFunction:
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    return lambda names, images: signature(images=tf.constant(images))["images"].numpy()


def _checkpoint_loader(run_dir: Path, epoch: int) -> Callable[[], Translator]:
    def load() -> Translator:
        generators = load_generators(run_dir, epoch)
        return Translator(_generator_function(generators["he_to_ki67"]),
                          _generator_function(generators["ki67_to_he"]))
    return load


def _export_loader(export_dir: Path) -> Callable[[], Translator]:
    return lambda: Translator(_saved_model_function(export_dir / "he_to_ki67"),
                              _saved_model_function(export_dir / "ki67_to_he"))


def parse_named(spec: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` -> ``(NAME, PATH)``; a bare ``PATH`` -> ``(None, PATH)``."""
    name, separator, path = spec.partition("=")
    return (name, Path(path)) if separator and name else (None, Path(spec))


def run_entries(spec: str, source: str = "auto", all_checkpoints: bool = False) -> list[ModelEntry]:
    """The entries of one ``--run [NAME=]RUN_DIR``.

    ``source``: ``export`` (the SavedModels), ``checkpoint`` (the latest epoch) or
    ``auto`` (export when present, else the latest checkpoint); ``all_checkpoints``
    gives one entry per saved epoch instead.

    Raises:
        EvaluationInputError: missing run directory, no config.json, or nothing to load.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    name, run_dir = parse_named(spec)
    name = name or run_dir.name
    if not run_dir.is_dir():
        raise EvaluationInputError(f"--run {spec}: no such run directory: {run_dir}")
    if not (run_dir / "config.json").is_file():
        raise EvaluationInputError(f"--run {spec}: {run_dir} is not a run directory (no config.json)")
    variant = variant_name(ExperimentConfig.load(run_dir / "config.json"))
    checkpoints = [epoch for epoch, _ in list_checkpoints(run_dir / "checkpoints")]
    export_dir = run_dir / "export"
    has_export = all((export_dir / direction / "saved_model.pb").is_file() for direction in ("he_to_ki67",
                                                                                             "ki67_to_he"))
    if all_checkpoints or source == "checkpoint" or (source == "auto" and not has_export):
        if not checkpoints:
            raise EvaluationInputError(f"--run {spec}: no checkpoint in {run_dir / 'checkpoints'}"
                                       + ("" if has_export else " and no export"))
        epochs = checkpoints if all_checkpoints else checkpoints[-1:]
        return [ModelEntry(name, variant, epoch, _checkpoint_loader(run_dir, epoch)) for epoch in epochs]
    if not has_export:
        raise EvaluationInputError(f"--run {spec}: no SavedModels in {export_dir} (use --source checkpoint)")
    return [ModelEntry(name, variant, checkpoints[-1] if checkpoints else None, _export_loader(export_dir))]


def virtual_dir_entry(spec: str) -> ModelEntry:
    """The entry of ``--virtual-dir NAME=DIR``: precomputed virtual Ki-67 tiles named like the H&E tiles."""
    name, folder = parse_named(spec)
    tiles = index_tiles(folder, f"--virtual-dir {spec}")

    def load() -> Translator:
        return Translator(lambda names, images: _read_virtual(tiles, names, images))
    return ModelEntry(name or folder.name, "precomputed", None, load)


def _read_virtual(tiles: TileFolder, names: list[str], he_images: np.ndarray) -> np.ndarray:
    """The virtual tiles for ``names``: the same relative name, or the same name with another extension."""
    by_stem = {str(Path(name).with_suffix("")): name for name in tiles.names}
    found = []
    for name in names:
        match = name if name in tiles.names else by_stem.get(str(Path(name).with_suffix("")))
        if match is None:
            raise EvaluationInputError(f"--virtual-dir {tiles.root}: no virtual tile for H&E tile {name}")
        found.append(match)
    virtual = tiles.read_many(found)
    if virtual.shape != he_images.shape:
        raise EvaluationInputError(f"--virtual-dir {tiles.root}: virtual tiles {found} have shape "
                                   f"{virtual.shape[1:]} but the H&E tiles {he_images.shape[1:]}")
    return virtual
