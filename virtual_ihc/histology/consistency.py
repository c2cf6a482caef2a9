"""Pathology consistency of a virtual Ki-67: what a pathologist checks first, without paired truth.

Every measure reads an H&E tile and the virtual Ki-67 made from it (both ``uint8 (H, W, 3)``)
and nothing else; the positivity calibration and colour statistics also read a set of
real Ki-67 tiles (the reference: the tiles the model learned from, when known).

- **Nuclei preservation.** Nuclei are segmented in the H&E (hematoxylin) and in the
  virtual Ki-67 (hematoxylin + DAB) by :mod:`virtual_ihc.histology.nuclei`. Object level:
  nuclei are matched one to one by centroid distance (Hungarian assignment; a match is
  closer than ``match_distance``, by default half the median H&E nucleus diameter, at
  least 3 px): precision, recall and F1. Pixel level: Dice of the two nucleus masks.
- **Background preservation** (``glass_kept``): of the H&E's glass (bright, unsaturated
  pixels, eroded by 2 px, tiles with fewer than ``min_glass_pixels`` of it skipped), the
  share whose virtual pixel is still light (brightness >= ``virtual_glass_min_brightness``).
- **Stain realism.** ``eosin_ratio``: mean eosin amount (``rgb2hed``) over the H&E's tissue
  in the virtual image divided by the same in the H&E (1 = eosin untouched, 0 = none
  left; real Ki-67 reads 0). ``dab_outside_nuclei``: share of the tissue outside the H&E's
  nuclei (dilated by ``nucleus_margin`` px) whose virtual DAB amount exceeds the DAB
  threshold - the "brown stroma" failure. ``nuclear_correlation``: Pearson correlation of
  the H&E's hematoxylin with the virtual hematoxylin + DAB over the tile; an inverted
  stain (glass dark, nuclei light) makes it negative. Colour statistics (mean and spread
  of H, E, DAB over tissue) and their distance to the reference set when one is given.
- **Ki-67 index per nucleus**: the virtual tile's DAB read over the *H&E's* nuclei
  (:func:`virtual_ihc.histology.ki67_index.index_over_nuclei`), and the index of the
  virtual tile's own nuclei. **Positivity calibration**: an unpaired model cannot know
  which nucleus is truly positive; it can only learn how common positivity is in the
  Ki-67 set it saw. So the virtual index is compared with the reference set's index,
  and one far above it is reported as hallucinated positivity, never as a diagnosis.

Flags (thresholds in :class:`ConsistencyThresholds`, documented in ``docs/evaluation.md``)
are raised on the pooled summary of a tile set: ``inverted`` (nuclear correlation below 0),
``nuclei_lost`` (nuclei F1 below 0.6), ``glass_lost`` (less than 90 % of the glass kept),
``brown_stroma`` (more than 10 % of the non-nuclear tissue DAB-brown), ``eosin_left``
(eosin ratio above 0.25), ``hallucinated_positivity`` / ``suppressed_positivity``
(virtual index more than 0.2 above / below the reference's).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from virtual_ihc.histology.ki67_index import TileIndex, index_over_nuclei, tile_index
from virtual_ihc.histology.nuclei import NucleusOptions, nuclear_stains, nucleus_centroids, segment_nuclei
from virtual_ihc.histology.stains import stain_concentrations
from virtual_ihc.histology.tissue import saturation


@dataclasses.dataclass(frozen=True)
class ConsistencyThresholds:
    """Where a measure turns into a flag (pooled over a tile set)."""

    min_nuclei_f1: float = 0.6
    min_glass_kept: float = 0.9
    max_dab_outside_nuclei: float = 0.10
    max_eosin_ratio: float = 0.25
    min_nuclear_correlation: float = 0.0
    max_index_excess: float = 0.2
    max_index_deficit: float = 0.2


@dataclasses.dataclass(frozen=True)
class ConsistencyOptions:
    """Settings of the measures (pixel sizes for 20x, about 0.5 um/px).

    Attributes:
        nuclei: nucleus segmentation (and the DAB threshold of a positive nucleus).
        match_distance: largest centroid distance of a matched nucleus pair, pixels
            (``None``: half the median H&E nucleus diameter, at least 3 px).
        glass_min_brightness, glass_max_saturation: an H&E pixel at least this
            bright (mean of R, G, B) and at most this saturated (HSV, 0-255) is glass.
        virtual_glass_min_brightness: a virtual pixel at least this bright stays glass.
        min_glass_pixels: tiles with less glass than this have no ``glass_kept``.
        nucleus_margin: pixels around the H&E's nuclei where DAB is still nuclear.
        thresholds: flag thresholds.
    """

    nuclei: NucleusOptions = NucleusOptions()
    match_distance: float | None = None
    glass_min_brightness: int = 200
    glass_max_saturation: int = 25
    virtual_glass_min_brightness: int = 180
    min_glass_pixels: int = 64
    nucleus_margin: int = 2
    thresholds: ConsistencyThresholds = ConsistencyThresholds()


@dataclasses.dataclass(frozen=True)
class TileConsistency:
    """The measures of one H&E tile and its virtual Ki-67, with the counts that pool across tiles."""

    he_nuclei: int
    virtual_nuclei: int
    matched_nuclei: int
    he_nucleus_pixels: int
    virtual_nucleus_pixels: int
    shared_nucleus_pixels: int
    glass_pixels: int
    glass_kept_pixels: int
    tissue_pixels: int
    eosin_he: float  # mean eosin amount over the H&E's tissue, in the H&E
    eosin_virtual: float  # the same pixels in the virtual Ki-67
    stroma_pixels: int
    stroma_dab_pixels: int
    nuclear_correlation: float
    index_over_he_nuclei: TileIndex
    virtual_index: TileIndex

    @property
    def nuclei_precision(self) -> float:
        return _ratio(self.matched_nuclei, self.virtual_nuclei)

    @property
    def nuclei_recall(self) -> float:
        return _ratio(self.matched_nuclei, self.he_nuclei)

    @property
    def nuclei_f1(self) -> float:
        return _ratio(2 * self.matched_nuclei, self.he_nuclei + self.virtual_nuclei)

    @property
    def nuclei_dice(self) -> float:
        return _ratio(2 * self.shared_nucleus_pixels, self.he_nucleus_pixels + self.virtual_nucleus_pixels)

    @property
    def glass_kept(self) -> float:
        return _ratio(self.glass_kept_pixels, self.glass_pixels)

    @property
    def eosin_ratio(self) -> float:
        return _ratio(self.eosin_virtual, self.eosin_he)

    @property
    def dab_outside_nuclei(self) -> float:
        return _ratio(self.stroma_dab_pixels, self.stroma_pixels)

    def values(self) -> dict[str, float]:
        """Per-tile measures by name (NaN where undefined, e.g. no glass in the tile)."""
        return {
            "nuclei_f1": self.nuclei_f1, "nuclei_precision": self.nuclei_precision,
            "nuclei_recall": self.nuclei_recall, "nuclei_dice": self.nuclei_dice,
            "glass_kept": self.glass_kept, "eosin_ratio": self.eosin_ratio,
            "dab_outside_nuclei": self.dab_outside_nuclei, "nuclear_correlation": self.nuclear_correlation,
            "virtual_index_he_nuclei": self.index_over_he_nuclei.index, "virtual_index": self.virtual_index.index,
        }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def glass_mask(rgb: np.ndarray, min_brightness: int, max_saturation: int) -> np.ndarray:
    """Bright, unsaturated pixels of a ``uint8`` RGB tile (unmounted glass, lumina, fat)."""
    return (np.asarray(rgb, np.float32).mean(axis=-1) >= min_brightness) & (saturation(rgb) <= max_saturation)


def match_nuclei(first: np.ndarray, second: np.ndarray, max_distance: float) -> int:
    """One-to-one matches of two ``(N, 2)`` centroid sets closer than ``max_distance`` (Hungarian)."""
    if len(first) == 0 or len(second) == 0:
        return 0
    pairs = cKDTree(first).sparse_distance_matrix(cKDTree(second), max_distance, output_type="coo_matrix")
    if pairs.nnz == 0:
        return 0
    rows, row_index = np.unique(pairs.row, return_inverse=True)
    cols, col_index = np.unique(pairs.col, return_inverse=True)
    cost = np.full((len(rows), len(cols)), max_distance * 10.0 + 1.0)
    cost[row_index, col_index] = pairs.data
    assigned_rows, assigned_cols = linear_sum_assignment(cost)
    return int(np.sum(cost[assigned_rows, assigned_cols] <= max_distance))


def default_match_distance(labels: np.ndarray) -> float:
    """Half the median equivalent diameter of the labelled nuclei, at least 3 px."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if len(areas) == 0:
        return 3.0
    return max(3.0, 0.5 * 2.0 * math.sqrt(float(np.median(areas)) / math.pi))


def pearson_r(a, b) -> float:
    """Pearson correlation of two equal-shaped arrays over their finite pairs; NaN with < 2 or a constant side."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def tile_consistency(he: np.ndarray, virtual: np.ndarray,
                     options: ConsistencyOptions = ConsistencyOptions()) -> TileConsistency:
    """All measures of one H&E tile and its virtual Ki-67 (same size, ``uint8 (H, W, 3)``).

    Raises:
        ValueError: the two images differ in size.
    """
    he, virtual = np.asarray(he), np.asarray(virtual)
    if he.shape != virtual.shape:
        raise ValueError(f"H&E {he.shape} and virtual Ki-67 {virtual.shape} differ in size")
    nucleus_options = options.nuclei
    he_labels = segment_nuclei(he, nucleus_options)
    virtual_labels = segment_nuclei(virtual, nucleus_options)
    distance = options.match_distance or default_match_distance(he_labels)
    matched = match_nuclei(nucleus_centroids(he_labels), nucleus_centroids(virtual_labels), distance)
    he_mask, virtual_mask = he_labels > 0, virtual_labels > 0

    glass_raw = glass_mask(he, options.glass_min_brightness, options.glass_max_saturation)
    glass = ndimage.binary_erosion(glass_raw, iterations=2)
    glass_count = int(glass.sum())
    virtual_light = np.asarray(virtual, np.float32).mean(axis=-1) >= options.virtual_glass_min_brightness
    if glass_count < options.min_glass_pixels:
        glass_count, glass_kept = 0, 0
    else:
        glass_kept = int((glass & virtual_light).sum())

    tissue = ~glass_raw
    he_stains, virtual_stains = stain_concentrations(he), stain_concentrations(virtual)
    tissue_count = int(tissue.sum())
    eosin_he = float(he_stains[..., 1][tissue].mean()) if tissue_count else 0.0
    eosin_virtual = float(virtual_stains[..., 1][tissue].mean()) if tissue_count else 0.0
    margin = options.nucleus_margin
    near_nuclei = ndimage.binary_dilation(he_mask, iterations=margin) if margin > 0 else he_mask
    stroma = tissue & ~near_nuclei
    stroma_dab = stroma & (virtual_stains[..., 2] > nucleus_options.dab_threshold)

    he_hematoxylin, _ = nuclear_stains(he, nucleus_options)
    virtual_hematoxylin, virtual_dab = nuclear_stains(virtual, nucleus_options)
    return TileConsistency(
        he_nuclei=int(he_labels.max()), virtual_nuclei=int(virtual_labels.max()), matched_nuclei=matched,
        he_nucleus_pixels=int(he_mask.sum()), virtual_nucleus_pixels=int(virtual_mask.sum()),
        shared_nucleus_pixels=int((he_mask & virtual_mask).sum()),
        glass_pixels=glass_count, glass_kept_pixels=glass_kept, tissue_pixels=tissue_count,
        eosin_he=eosin_he, eosin_virtual=eosin_virtual,
        stroma_pixels=int(stroma.sum()), stroma_dab_pixels=int(stroma_dab.sum()),
        nuclear_correlation=pearson_r(he_hematoxylin, virtual_hematoxylin + virtual_dab),
        index_over_he_nuclei=index_over_nuclei(virtual, he_labels, nucleus_options),
        virtual_index=index_over_nuclei(virtual, virtual_labels, nucleus_options))


@dataclasses.dataclass(frozen=True)
class StainStatistics:
    """Mean and standard deviation of the H, E and DAB amounts over tissue pixels of a tile set."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixels: int

    def distance(self, reference: "StainStatistics") -> float:
        """Mean over H, E, DAB of |mean - reference mean| / reference std (0 = same colour on average)."""
        return float(np.mean([abs(m - r) / max(s, 1e-6) for m, r, s in zip(self.mean, reference.mean, reference.std)]))


def stain_statistics(tiles, options: ConsistencyOptions = ConsistencyOptions(),
                     tissue_masks=None) -> StainStatistics:
    """Stain amounts over the tissue of ``uint8`` RGB tiles (tissue: not glass, unless masks are given)."""
    sums, squares, count = np.zeros(3), np.zeros(3), 0
    for position, tile in enumerate(tiles):
        tile = np.asarray(tile)
        tissue = (tissue_masks[position] if tissue_masks is not None
                  else ~glass_mask(tile, options.glass_min_brightness, options.glass_max_saturation))
        amounts = stain_concentrations(tile)[tissue].astype(np.float64)
        sums += amounts.sum(axis=0)
        squares += np.square(amounts).sum(axis=0)
        count += len(amounts)
    if count == 0:
        nan = (float("nan"),) * 3
        return StainStatistics(nan, nan, 0)
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return StainStatistics(tuple(mean.tolist()), tuple(std.tolist()), count)


@dataclasses.dataclass(frozen=True)
class Reference:
    """What the real Ki-67 tiles say: pooled index and stain statistics."""

    index: float
    nuclei: int
    tiles: int
    stains: StainStatistics


def reference_from_tiles(tiles, options: ConsistencyOptions = ConsistencyOptions()) -> Reference:
    """The pooled Ki-67 index and stain statistics of real Ki-67 tiles (``uint8 (H, W, 3)`` each)."""
    tiles = [np.asarray(tile) for tile in tiles]
    indices = [tile_index(tile, options.nuclei) for tile in tiles]
    nuclei = sum(index.nuclei for index in indices)
    pooled = sum(index.positive for index in indices) / nuclei if nuclei else float("nan")
    return Reference(index=pooled, nuclei=nuclei, tiles=len(tiles), stains=stain_statistics(tiles, options))


@dataclasses.dataclass
class ConsistencySummary:
    """Pooled measures of a tile set, flags, and the sentence a report shows."""

    tiles: int
    values: dict[str, float]
    flags: list[str]
    reference: Reference | None

    @property
    def consistent(self) -> bool:
        return not self.flags

    def verdict(self) -> str:
        """One paragraph for logs and reports: pass/fail, the flags, and the positivity caveat."""
        values = self.values
        head = "pathology-consistent" if self.consistent else "NOT pathology-consistent: " + ", ".join(self.flags)
        text = (f"{head} ({self.tiles} tiles): nuclei F1 {values['nuclei_f1']:.2f}, glass kept "
                f"{values['glass_kept']:.2f}, DAB outside nuclei {values['dab_outside_nuclei']:.2f}, eosin ratio "
                f"{values['eosin_ratio']:.2f}, virtual index {values['virtual_index_he_nuclei']:.2f}")
        if self.reference is not None and math.isfinite(self.reference.index):
            text += (f" vs {self.reference.index:.2f} in the reference Ki-67 set "
                     f"({values['index_difference']:+.2f})")
        if "hallucinated_positivity" in self.flags:
            text += (". The virtual index is far above the reference set's: positivity is hallucinated, "
                     "not measured")
        return text + (". An unpaired model only learns how common Ki-67 positivity is in its training set; "
                       "the virtual index is not a diagnosis.")


def summarize(tiles: list[TileConsistency], reference: Reference | None = None, virtual_stains=None,
              thresholds: ConsistencyThresholds = ConsistencyThresholds()) -> ConsistencySummary:
    """Pool the per-tile counts over a set (ratios of sums, not means of ratios) and raise the flags.

    Args:
        tiles: per-tile results of :func:`tile_consistency`.
        reference: the real Ki-67 reference (index, stain statistics), if known.
        virtual_stains: :class:`StainStatistics` of the virtual tiles (for the colour distance).
        thresholds: where flags are raised.
    """
    total = lambda attribute: sum(getattr(tile, attribute) for tile in tiles)  # noqa: E731
    he_nuclei, virtual_nuclei, matched = total("he_nuclei"), total("virtual_nuclei"), total("matched_nuclei")
    tissue = total("tissue_pixels")
    over_he = [tile.index_over_he_nuclei for tile in tiles]
    own = [tile.virtual_index for tile in tiles]
    correlations = [tile.nuclear_correlation for tile in tiles if math.isfinite(tile.nuclear_correlation)]
    values = {
        "nuclei_f1": _ratio(2 * matched, he_nuclei + virtual_nuclei),
        "nuclei_precision": _ratio(matched, virtual_nuclei),
        "nuclei_recall": _ratio(matched, he_nuclei),
        "nuclei_dice": _ratio(2 * total("shared_nucleus_pixels"),
                              total("he_nucleus_pixels") + total("virtual_nucleus_pixels")),
        "glass_kept": _ratio(total("glass_kept_pixels"), total("glass_pixels")),
        "glass_fraction": _ratio(total("glass_pixels"), sum(t.glass_pixels + t.tissue_pixels for t in tiles)),
        "eosin_ratio": _ratio(sum(t.eosin_virtual * t.tissue_pixels for t in tiles),
                              sum(t.eosin_he * t.tissue_pixels for t in tiles)) if tissue else float("nan"),
        "dab_outside_nuclei": _ratio(total("stroma_dab_pixels"), total("stroma_pixels")),
        "nuclear_correlation": float(np.mean(correlations)) if correlations else float("nan"),
        "virtual_index_he_nuclei": _ratio(sum(i.positive for i in over_he), sum(i.nuclei for i in over_he)),
        "virtual_index": _ratio(sum(i.positive for i in own), sum(i.nuclei for i in own)),
        "he_nuclei": float(he_nuclei),
    }
    if reference is not None:
        values["reference_index"] = reference.index
        values["index_difference"] = values["virtual_index_he_nuclei"] - reference.index
        if virtual_stains is not None and reference.stains.pixels and virtual_stains.pixels:
            values["stain_distance"] = virtual_stains.distance(reference.stains)
    return ConsistencySummary(tiles=len(tiles), values=values, flags=raise_flags(values, thresholds),
                              reference=reference)


def raise_flags(values: dict[str, float], thresholds: ConsistencyThresholds = ConsistencyThresholds()) -> list[str]:
    """The failure flags of pooled ``values`` (a NaN measure raises nothing: it was not measurable)."""
    below = lambda name, limit: math.isfinite(values.get(name, math.nan)) and values[name] < limit  # noqa: E731
    above = lambda name, limit: math.isfinite(values.get(name, math.nan)) and values[name] > limit  # noqa: E731
    flags = []
    if below("nuclear_correlation", thresholds.min_nuclear_correlation):
        flags.append("inverted")
    if below("nuclei_f1", thresholds.min_nuclei_f1):
        flags.append("nuclei_lost")
    if below("glass_kept", thresholds.min_glass_kept):
        flags.append("glass_lost")
    if above("dab_outside_nuclei", thresholds.max_dab_outside_nuclei):
        flags.append("brown_stroma")
    if above("eosin_ratio", thresholds.max_eosin_ratio):
        flags.append("eosin_left")
    if above("index_difference", thresholds.max_index_excess):
        flags.append("hallucinated_positivity")
    if below("index_difference", -thresholds.max_index_deficit):
        flags.append("suppressed_positivity")
    return flags


def evaluate_consistency(he_tiles, virtual_tiles, reference=None,
                         options: ConsistencyOptions = ConsistencyOptions()) -> tuple[list[TileConsistency],
                                                                                     ConsistencySummary]:
    """Per-tile measures and the pooled summary of H&E tiles and their virtual Ki-67 (Python entry point).

    Args:
        he_tiles, virtual_tiles: sequences of ``uint8 (H, W, 3)``, tile ``i`` of one made from tile ``i`` of the other.
        reference: real Ki-67 tiles (a sequence of ``uint8 (H, W, 3)``) or a :class:`Reference` computed from
            them once, for the positivity calibration and the colour distance (optional).
    """
    he_tiles, virtual_tiles = list(he_tiles), list(virtual_tiles)
    if len(he_tiles) != len(virtual_tiles):
        raise ValueError(f"{len(he_tiles)} H&E tiles but {len(virtual_tiles)} virtual tiles")
    tiles = [tile_consistency(he, virtual, options) for he, virtual in zip(he_tiles, virtual_tiles)]
    if reference is not None and not isinstance(reference, Reference):
        reference = reference_from_tiles(reference, options)
    virtual_stains = None
    if reference is not None:
        tissue_masks = [~glass_mask(he, options.glass_min_brightness, options.glass_max_saturation)
                        for he in he_tiles]
        virtual_stains = stain_statistics(virtual_tiles, options, tissue_masks)
    return tiles, summarize(tiles, reference, virtual_stains, options.thresholds)
