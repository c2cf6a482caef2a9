"""Evaluate models on tile sets: every metric of the issue, per tile and aggregated.

Tile sets:

- H&E sets (``he`` from ``--he-dir``, ``pairs`` from ``--pairs-dir``): the
  H&E -> Ki-67 -> H&E cycle, virtual Ki-67 statistics (FID/KID against the real
  Ki-67 set, labelling index) and, where each H&E tile has a Ki-67 tile of the
  same name, the paired metrics (P-hash, SSIM / MS-SSIM / PSNR / MAE, index error);
- the real Ki-67 set (``ki67``: ``--ki67-dir``, else the pairs' Ki-67 side):
  the Ki-67 -> H&E -> Ki-67 cycle, and the reference of FID/KID and of the index.

Results are :class:`~virtual_ihc.evaluation.results.MetricRow` (one per model x
tile set x metric: mean, std, n) and :class:`~virtual_ihc.evaluation.results.TileValue`
(one per model x tile set x tile x metric), gathered per model in a
:class:`~virtual_ihc.evaluation.results.ModelResult`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from virtual_ihc.evaluation.distribution import (INCEPTION_SIZE, KID_SUBSET_SIZE, KID_SUBSETS, InceptionFeatures,
                                                 fid_warning, frechet_distance, kernel_inception_distance)
from virtual_ihc.evaluation.image_metrics import image_metrics
from virtual_ihc.evaluation.models import ModelEntry, Translator
from virtual_ihc.evaluation.phash import PHASH_LAYER, PHASH_THRESHOLD, PerceptualHash, phash_scores
from virtual_ihc.evaluation.results import REAL_KI67, REFERENCE_INDEX, MetricRow, ModelResult, TileValue
from virtual_ihc.evaluation.tiles import (EvaluationInputError, TileFolder, batches, check_pairs, index_tiles,
                                          names_match, read_pairs)
from virtual_ihc.histology.consistency import (ConsistencyOptions, ConsistencySummary, Reference, glass_mask, pearson_r,
                                               stain_statistics, summarize, tile_consistency)
from virtual_ihc.histology.ki67_index import TileIndex, slide_indices, tile_index
from virtual_ihc.histology.nuclei import NucleusOptions
from virtual_ihc.weights import describe_weights

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class EvaluationData:
    """H&E tile sets (each with its paired real Ki-67 folder or ``None``) and the real Ki-67 set."""

    he_sets: dict[str, tuple[TileFolder, TileFolder | None]]
    ki67: TileFolder | None


@dataclasses.dataclass
class EvaluationOptions:
    """How to evaluate (weights are resolved: ``"imagenet"``, ``None`` = random, or a path)."""

    batch_size: int = 8
    phash_weights: str | None = "imagenet"
    fid_weights: str | None = "imagenet"
    phash_layer: str = PHASH_LAYER
    phash_threshold: float = PHASH_THRESHOLD
    distribution: bool = True
    fid_image_size: int = INCEPTION_SIZE
    kid_subset_size: int = KID_SUBSET_SIZE
    kid_subsets: int = KID_SUBSETS
    nuclei: NucleusOptions = dataclasses.field(default_factory=NucleusOptions)
    consistency: ConsistencyOptions = dataclasses.field(default_factory=ConsistencyOptions)
    progress: bool = True
    seed: int = 0


def resolve_data(he_dir: str | Path | None = None, ki67_dir: str | Path | None = None,
                 pairs_dir: str | Path | None = None, max_tiles: int = 0) -> EvaluationData:
    """Index the tile folders; ``--he-dir`` and ``--ki67-dir`` with identical names are pairs too.

    Raises:
        EvaluationInputError: no H&E tiles given, a missing or empty folder, or a
            ``--pairs-dir`` whose ``he/`` and ``ki67/`` names differ.
    """
    if he_dir is None and pairs_dir is None:
        raise EvaluationInputError("give --he-dir (H&E tiles to stain) and/or --pairs-dir (registered pairs)")
    he_sets: dict[str, tuple[TileFolder, TileFolder | None]] = {}
    ki67 = index_tiles(ki67_dir, "--ki67-dir", max_tiles) if ki67_dir is not None else None
    if he_dir is not None:
        he = index_tiles(he_dir, "--he-dir", max_tiles)
        paired = ki67 is not None and names_match(he, ki67)
        if ki67 is not None and not paired:
            logger.info("--he-dir and --ki67-dir names differ: evaluating them as unpaired sets")
        he_sets["he"] = (he, ki67 if paired else None)
    if pairs_dir is not None:
        pairs_he = index_tiles(Path(pairs_dir) / "he", "--pairs-dir (he/)", max_tiles)
        pairs_ki67 = index_tiles(Path(pairs_dir) / "ki67", "--pairs-dir (ki67/)", max_tiles)
        check_pairs(pairs_he, pairs_ki67, f"--pairs-dir {pairs_dir}")
        he_sets["pairs"] = (pairs_he, pairs_ki67)
        ki67 = ki67 or pairs_ki67
    return EvaluationData(he_sets, ki67)


def record(values: dict, set_name: str, metric: str, names: list[str], array) -> None:
    """Store per-tile values: ``values[(set_name, metric)][tile name] = value``."""
    values.setdefault((set_name, metric), {}).update(zip(names, np.asarray(array, np.float64).tolist()))


def set_row(entry: ModelEntry, set_name: str, metric: str, mean: float, n: int, std: float = 0.0,
            note: str = "") -> MetricRow:
    """A row of a set-level value (FID, KID, correlations) of ``entry``."""
    return MetricRow(entry.name, entry.variant, entry.epoch, set_name, metric, float(mean), float(std), n, note)


def pooled_index(tiles: list[TileIndex]) -> float:
    """Positive / nuclei summed over tiles (NaN without nuclei)."""
    nuclei = sum(tile.nuclei for tile in tiles)
    return sum(tile.positive for tile in tiles) / nuclei if nuclei else float("nan")


class Evaluator:
    """Evaluates :class:`ModelEntry` objects on one :class:`EvaluationData`, caching the real-stain side."""

    def __init__(self, data: EvaluationData, options: EvaluationOptions = EvaluationOptions()):
        self.data, self.options = data, options
        self.notes: list[str] = []
        has_pairs = any(reference is not None for _, reference in data.he_sets.values())
        self.phash = (PerceptualHash(options.phash_weights, options.phash_layer, options.phash_threshold)
                      if has_pairs else None)
        if self.phash is not None:
            self.notes.append(f"P-hash: ResNet-18 {options.phash_layer}, threshold {options.phash_threshold}, "
                              f"{describe_weights(options.phash_weights)}")
        self.inception = None
        if options.distribution and data.ki67 is not None:
            self.inception = InceptionFeatures(options.fid_weights, options.fid_image_size)
            self.notes.append(f"FID/KID: InceptionV3 pool features at {options.fid_image_size}px, "
                              f"{describe_weights(options.fid_weights)}")
        self._real_index: dict[tuple[Path, str], TileIndex] = {}
        self._real_means: dict[tuple[Path, str], np.ndarray] = {}
        self._real_features: np.ndarray | None = None
        self._reference: Reference | None = None

    def _progress(self, iterable, description: str, total: int):
        return tqdm(iterable, desc=description, total=total, unit="batch", disable=not self.options.progress,
                    leave=False)

    def _batches(self, folder: TileFolder, description: str):
        total = math.ceil(len(folder.names) / self.options.batch_size)
        return self._progress(batches(folder, self.options.batch_size), description, total)

    def real_index(self, folder: TileFolder, name: str, image: np.ndarray | None = None) -> TileIndex:
        key = (folder.root, name)
        if key not in self._real_index:
            self._real_index[key] = tile_index(folder.read(name) if image is None else image, self.options.nuclei)
        return self._real_index[key]

    def real_features(self) -> np.ndarray:
        """InceptionV3 features of the real Ki-67 set, ``(N, 2048)``, computed once."""
        if self._real_features is None:
            chunks = [self.inception(images) for _, images in self._batches(self.data.ki67, "real Ki-67 features")]
            self._real_features = np.concatenate(chunks)
        return self._real_features

    def reference(self) -> Reference | None:
        """Index and stain statistics of the real Ki-67 set (the positivity reference), computed once."""
        if self._reference is None and self.data.ki67 is not None:
            folder = self.data.ki67
            tiles = [self.real_index(folder, name) for name in folder.names]
            nuclei = sum(tile.nuclei for tile in tiles)
            stains = stain_statistics((folder.read(name) for name in folder.names), self.options.consistency)
            self._reference = Reference(index=pooled_index(tiles), nuclei=nuclei, tiles=len(tiles), stains=stains)
        return self._reference

    def real_rows(self) -> list[MetricRow]:
        """The labelling index of the real Ki-67 set (pooled, and mean +- std per tile)."""
        if self.data.ki67 is None:
            return []
        folder = self.data.ki67
        tiles = [self.real_index(folder, name) for name in folder.names]
        per_tile = np.array([tile.index for tile in tiles])
        return [MetricRow(REAL_KI67, "real", None, "ki67", "ki67_index", float(np.nanmean(per_tile)),
                          float(np.nanstd(per_tile)), int(np.isfinite(per_tile).sum()),
                          f"pooled index {pooled_index(tiles):.4f}")]

    def evaluate(self, entry: ModelEntry) -> ModelResult:
        """All metrics of one model entry."""
        logger.info("evaluating %s (%s, epoch %s)", entry.name, entry.variant, entry.epoch)
        translator = entry.load()
        values: dict[tuple[str, str], dict[str, float]] = {}
        rows: list[MetricRow] = []
        examples: dict[str, np.ndarray] = {}
        consistency: dict[str, ConsistencySummary] = {}
        for position, (set_name, (he, reference)) in enumerate(self.data.he_sets.items()):
            rows += self._evaluate_he_set(entry, translator, set_name, he, reference, values,
                                          examples if position == 0 else None, consistency)
        if self.data.ki67 is not None and translator.ki67_to_he is not None:
            self._evaluate_ki67_cycle(entry, translator, values)
        tiles = [TileValue(entry.name, entry.epoch, set_name, tile, metric, value)
                 for (set_name, metric), per_tile in values.items() for tile, value in per_tile.items()]
        for (set_name, metric), per_tile in values.items():
            array = np.array(list(per_tile.values()), np.float64)
            finite = array[np.isfinite(array)]
            rows.append(MetricRow(entry.name, entry.variant, entry.epoch, set_name, metric,
                                  float(finite.mean()) if len(finite) else float("nan"),
                                  float(finite.std()) if len(finite) else float("nan"), len(finite)))
        return ModelResult(entry, rows, tiles, examples, consistency)

    def _evaluate_he_set(self, entry: ModelEntry, translator: Translator, set_name: str, he: TileFolder,
                         reference: TileFolder | None, values: dict, examples: dict | None,
                         consistency: dict) -> list[MetricRow]:
        """Cycle, paired, index and pathology-consistency metrics on one H&E set; returns its set-level rows.

        Per-tile values go into ``values``; the first tile's images into ``examples`` (unless ``None``);
        the pooled pathology-consistency summary into ``consistency[set_name]``.
        """
        virtual_index: dict[str, TileIndex] = {}
        features = []
        measured = []
        tissue_masks, virtual_tiles = [], []
        for names, he_images in self._batches(he, f"{entry.name} {set_name}"):
            virtual = translator.he_to_ki67(names, he_images)
            reconstructed = real = None
            if translator.ki67_to_he is not None:
                reconstructed = translator.ki67_to_he(names, virtual)
                for metric, array in image_metrics(he_images, reconstructed).items():
                    record(values, set_name, f"cycle_{metric}", names, array)
            if reference is not None:
                real = read_pairs(reference, he, names, he_images.shape[1:3])
                for metric, array in image_metrics(real, virtual).items():
                    record(values, set_name, f"paired_{metric}", names, array)
                record(values, set_name, "phash", names, self._phash(reference, names, real, virtual))
            if examples is not None and "he" not in examples:
                examples.update(he=he_images[0], virtual_ki67=virtual[0])
                if reconstructed is not None:
                    examples["reconstructed_he"] = reconstructed[0]
                if real is not None:
                    examples["reference_ki67"] = real[0]
            for name, image in zip(names, virtual):
                virtual_index[name] = tile_index(image, self.options.nuclei)
            record(values, set_name, "ki67_index", names, [virtual_index[name].index for name in names])
            batch = [tile_consistency(he_image, virtual_image, self.options.consistency)
                     for he_image, virtual_image in zip(he_images, virtual)]
            measured += batch
            for metric in batch[0].values():
                record(values, set_name, metric, names, [tile.values()[metric] for tile in batch])
            options = self.options.consistency
            tissue_masks += [~glass_mask(image, options.glass_min_brightness, options.glass_max_saturation)
                             for image in he_images]
            virtual_tiles += list(virtual)
            if self.inception is not None:
                features.append(self.inception(virtual))
        rows = self._index_rows(entry, set_name, he, reference, virtual_index, values)
        rows += self._consistency_rows(entry, set_name, measured, virtual_tiles, tissue_masks, consistency)
        if features:
            rows += self._distribution_rows(entry, set_name, np.concatenate(features))
        return rows

    def _consistency_rows(self, entry: ModelEntry, set_name: str, measured: list, virtual_tiles: list,
                          tissue_masks: list, consistency: dict) -> list[MetricRow]:
        """Pooled pathology-consistency measures of a set (rows ``pooled_<measure>``), flags and verdict."""
        reference = self.reference()
        stains = (stain_statistics(virtual_tiles, self.options.consistency, tissue_masks)
                  if reference is not None else None)
        summary = summarize(measured, reference, stains, self.options.consistency.thresholds)
        consistency[set_name] = summary
        note = f"flags: {', '.join(summary.flags) or 'none'}"
        return [set_row(entry, set_name, f"pooled_{name}", value, len(measured), note=note)
                for name, value in summary.values.items()]

    def _phash(self, reference: TileFolder, names: list[str], real: np.ndarray, virtual: np.ndarray) -> np.ndarray:
        """P-hash scores of a batch; the real tiles' channel means are computed once per tile."""
        missing = [i for i, name in enumerate(names) if (reference.root, name) not in self._real_means]
        if missing:
            for i, means in zip(missing, self.phash.means(real[missing])):
                self._real_means[(reference.root, names[i])] = means
        real_means = np.stack([self._real_means[(reference.root, name)] for name in names])
        return phash_scores(self.phash.means(virtual), real_means, self.phash.threshold)

    def _index_rows(self, entry: ModelEntry, set_name: str, he: TileFolder, reference: TileFolder | None,
                    virtual_index: dict[str, TileIndex], values: dict) -> list[MetricRow]:
        """Index agreement with the real stain: per tile and per slide when paired, pooled otherwise."""
        names = list(he.names)
        virtual = [virtual_index[name] for name in names]
        if reference is None:
            if self.data.ki67 is None:
                return []
            real = [self.real_index(self.data.ki67, name) for name in self.data.ki67.names]
            return [set_row(entry, set_name, "ki67_index_difference", pooled_index(virtual) - pooled_index(real),
                            len(names), note="unpaired: pooled virtual index minus pooled real index")]
        real = [self.real_index(reference, name) for name in names]
        record(values, set_name, REFERENCE_INDEX, names, [r.index for r in real])
        record(values, set_name, "ki67_index_abs_error", names,
               [abs(v.index - r.index) for v, r in zip(virtual, real)])
        virtual_slides, real_slides = slide_indices(names, virtual), slide_indices(names, real)
        slide_errors = [abs(virtual_slides[slide] - real_slides[slide]) for slide in real_slides]

        def correlation(attribute: str) -> float:
            return pearson_r([getattr(v, attribute) for v in virtual], [getattr(r, attribute) for r in real])

        return [
            set_row(entry, set_name, "ki67_slide_index_abs_error", np.nanmean(slide_errors), len(slide_errors),
                    std=np.nanstd(slide_errors),
                    note=f"{len(slide_errors)} slide(s): {', '.join(sorted(real_slides)[:5])}"),
            set_row(entry, set_name, "ki67_index_pearson_r", correlation("index"), len(names)),
            set_row(entry, set_name, "positive_area_pearson_r", correlation("positive_area"), len(names)),
            set_row(entry, set_name, "negative_area_pearson_r", correlation("negative_area"), len(names)),
        ]

    def _distribution_rows(self, entry: ModelEntry, set_name: str, virtual: np.ndarray) -> list[MetricRow]:
        real = self.real_features()
        if min(len(real), len(virtual)) < 2:
            logger.warning("%s %s: FID/KID skipped, they need at least 2 tiles per set", entry.name, set_name)
            return []
        warning = fid_warning(len(real), len(virtual)) or ""
        if warning and warning not in self.notes:
            logger.warning(warning)
            self.notes.append(warning)
        counts = f"{len(real)} real / {len(virtual)} virtual"
        kid_mean, kid_std = kernel_inception_distance(real, virtual, self.options.kid_subset_size,
                                                      self.options.kid_subsets, self.options.seed)
        n = min(len(real), len(virtual))
        return [set_row(entry, set_name, "fid", frechet_distance(real, virtual), n,
                        note=f"{counts}; {warning}".rstrip("; ")),
                set_row(entry, set_name, "kid", kid_mean, n, std=kid_std, note=counts)]

    def _evaluate_ki67_cycle(self, entry: ModelEntry, translator: Translator, values: dict) -> None:
        folder = self.data.ki67
        for names, ki67_images in self._batches(folder, f"{entry.name} ki67"):
            reconstructed = translator.he_to_ki67(names, translator.ki67_to_he(names, ki67_images))
            for metric, array in image_metrics(ki67_images, reconstructed).items():
                record(values, "ki67", f"cycle_{metric}", names, array)
            for name, image in zip(names, ki67_images):
                self.real_index(folder, name, image)


def evaluate_models(entries: list[ModelEntry], data: EvaluationData,
                    options: EvaluationOptions = EvaluationOptions()) -> tuple[list[ModelResult], list[MetricRow],
                                                                               list[str]]:
    """Evaluate every entry; returns the per-model results, the real-stain rows and the report notes."""
    if not entries:
        raise EvaluationInputError("nothing to evaluate: give --run and/or --virtual-dir")
    evaluator = Evaluator(data, options)
    results = [evaluator.evaluate(entry) for entry in entries]
    return results, evaluator.real_rows(), evaluator.notes
