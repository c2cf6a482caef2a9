"""Procedural H&E and Ki-67 IHC tiles at 20x (about 0.5 um/px): the built-in sample data.

A tile is a random tissue *layout*, drawn at real 20x sizes whatever the tile size:

- carcinoma nests: crowded large oval-to-irregular vesicular nuclei (semi-major
  axis about 5-9 px) with a chromatin rim, granular chromatin and nucleoli, each in
  a cell of pale cytoplasm with faint cell borders;
- stroma: wavy collagen fibres along a smoothly turning orientation, sparse
  elongated spindle (fibroblast) nuclei aligned with the fibres, small capillaries
  of red blood cells;
- lymphocytes: small round dark nuclei (radius 3.5-4.5 px), scattered in the
  stroma, in occasional aggregates and a few between the tumour cells;
- lumina and glass.

Nuclei may touch but rarely overlap. Each nucleus has a Ki-67 status; tumour
nuclei are positive far more often than lymphocytes and spindle cells, and the
expected share of positive nuclei over all nuclei is ``positive_fraction``.

The layout is stained by Beer-Lambert mixing with the stain colours *as seen* in
real slides: each stain's optical-density vector is written as the
``skimage.color.rgb2hed`` amounts (hematoxylin, eosin, DAB) it reads as, measured on
real 20x H&E and Ki-67 tiles (tiatoolbox, stardist and DeepLIIF samples, halved). A real eosin reads as
eosin plus DAB, a real IHC counterstain as hematoxylin minus some eosin; rendering
with these vectors reproduces the colour statistics of real tissue rather than those
of the textbook vectors:

- H&E: hematoxylin (purple) in nuclei and faintly in cytoplasm, eosin (pink) in
  collagen, cytoplasm and, strongly, in red blood cells; glass slightly pink-white;
- Ki-67 IHC: granular DAB (brown) in positive nuclei, a blue hematoxylin
  counterstain in negative nuclei and very faintly in cytoplasm and stroma, no
  eosin; glass white with a faint beige tint.

The nuclei and their Ki-67 status are ground truth: the labelling index of a
rendered Ki-67 tile is known. Unpaired mode (training) renders the two stains from
independent layouts; paired mode renders one layout in both stains and warps the
Ki-67 side by a known smooth deformation, as consecutive sections differ.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.histology.stains import STAIN_MATRIX_HED, render_beer_lambert
from virtual_ihc.io.images import write_image_rgb

logger = logging.getLogger(__name__)

SAMPLE_DATA_VERSION = 2

#: mean semi-major axis of a tumour nucleus at 20x, pixels (drawn from 0.75x to 1.25x of it)
TUMOUR_NUCLEUS_RADIUS = 7.0
#: nucleus kinds, the values of :attr:`TissueLayout.kinds`
TUMOUR, LYMPHOCYTE, SPINDLE = 0, 1, 2
#: how much more likely a tumour nucleus is Ki-67 positive than a lymphocyte or a spindle cell
_POSITIVITY_WEIGHT = {TUMOUR: 1.0, LYMPHOCYTE: 0.25, SPINDLE: 0.15}

# rgb2hed natural-log scale: rgb2hed reads optical density / ln(1e6)
_RGB2HED_SCALE = -np.log(1e-6)


def _stain_vectors(*amounts: tuple[float, float, float]) -> np.ndarray:
    """Optical density rows ``(K, 3)`` of stains given as the rgb2hed amounts one unit of each reads as."""
    return np.asarray(amounts, np.float64) @ STAIN_MATRIX_HED * _RGB2HED_SCALE


#: H&E stains as seen (measured on the tiatoolbox and stardist H&E at 20x): hematoxylin,
#: eosin (collagen and red blood cells read 1 eosin : 1.25 DAB), glass (at amount 1)
HE_STAINS = _stain_vectors((1.0, 0.0, 0.13), (0.03, 1.0, 1.25), (0.005, 0.002, 0.006))
#: Ki-67 IHC stains as seen (measured on the DeepLIIF Ki-67 tiles at 20x): hematoxylin
#: counterstain (blue), DAB, glass (at amount 1; lighter than the DeepLIIF scans' grey-beige)
KI67_STAINS = _stain_vectors((1.0, -0.3, -0.1), (0.05, 0.0, 1.0), (0.008, -0.003, 0.010))


@dataclasses.dataclass
class TissueLayout:
    """One tissue layout, before staining (amounts in ``rgb2hed`` units where noted).

    Attributes:
        stroma: float32 ``(H, W)`` collagen fibre density in [0, 1] (0 = no stroma).
        nucleus_density: float32 ``(H, W)`` hematoxylin-binding chromatin (H&E hematoxylin amount).
        positive_density: float32 ``(H, W)`` Ki-67 antigen of positive nuclei (Ki-67 DAB amount), granular.
        nucleus_labels: int32 ``(H, W)``, 0 = no nucleus, ``i + 1`` = nucleus ``i``.
        centers: float32 ``(N, 2)`` nucleus centres as ``(y, x)`` (outside the tile for nuclei its edge cuts).
        radii: float32 ``(N,)`` nucleus semi-major axes in pixels.
        positive: bool ``(N,)`` Ki-67 status of each nucleus.
        kinds: int8 ``(N,)`` ``TUMOUR``, ``LYMPHOCYTE`` or ``SPINDLE``.
        cytoplasm: float32 ``(H, W)`` tumour cytoplasm density in [0, 1.6] (cell borders darker).
        blood: float32 ``(H, W)`` red blood cell density in [0, 1].
        nucleoli: float32 ``(H, W)`` nucleolus density in [0, 1].
    """

    stroma: np.ndarray
    nucleus_density: np.ndarray
    positive_density: np.ndarray
    nucleus_labels: np.ndarray
    centers: np.ndarray
    radii: np.ndarray
    positive: np.ndarray
    kinds: np.ndarray
    cytoplasm: np.ndarray
    blood: np.ndarray
    nucleoli: np.ndarray

    @property
    def labelling_index(self) -> float:
        """Fraction of Ki-67-positive nuclei (0 when there are none)."""
        return float(self.positive.mean()) if len(self.positive) else 0.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth random field with unit standard deviation and features of ``scale`` pixels."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=scale, borderType=cv2.BORDER_REFLECT)
    return noise / (noise.std() + 1e-6)


def _field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth Gaussian field with features of ``scale`` pixels and unit standard deviation *in expectation*.

    Normalised by the theoretical standard deviation of blurred white noise, ``1 / (2 sqrt(pi) sigma)``,
    not by the tile's own: a small tile then shows a part of the tissue, not a squeezed whole.
    Broad fields are drawn on a coarser grid and interpolated (the same field, much faster).
    """
    height, width = shape
    step = max(1, int(scale // 4))
    sigma = scale / step
    pad = int(np.ceil(3 * sigma)) + 1  # blurred with real noise beyond the tile, not a mirror of it
    noise = rng.standard_normal((-(-height // step) + 2 * pad, -(-width // step) + 2 * pad), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    noise *= np.float32(2.0 * np.sqrt(np.pi) * sigma)
    if step == 1:
        return noise[pad:pad + height, pad:pad + width]
    fine = cv2.resize(noise, (noise.shape[1] * step, noise.shape[0] * step), interpolation=cv2.INTER_CUBIC)
    return fine[pad * step:pad * step + height, pad * step:pad * step + width]


def _fibres(rng: np.random.Generator, shape: tuple[int, int], stream: np.ndarray) -> np.ndarray:
    """Wavy collagen fibres in [0, 1] along the level lines of ``stream``: each fibre its own brightness."""
    # a random profile across the fibres (one value per pixel of stream), read along the level lines
    low, high = float(stream.min()) - 2, float(stream.max()) + 2
    profile = cv2.GaussianBlur(rng.standard_normal((1, int(high - low) + 3)).astype(np.float32), (0, 0), 1.0)
    profile = profile[0] * np.float32(np.sqrt(2.0 * np.sqrt(np.pi)))  # unit variance (1-D blur, sigma 1)
    across = stream + 0.8 * _field(rng, shape, 3.0)  # fibres merge and split
    bands = np.interp(across.ravel(), np.arange(len(profile)) + low, profile).reshape(shape)
    strength = np.clip(0.6 + 0.3 * _field(rng, shape, 5.0), 0.0, 1.0)  # fibres fade in and out
    fibres = 1.0 / (1.0 + np.exp(-2.0 * bands * strength)) + 0.12 * _field(rng, shape, 0.7)
    clefts = np.clip((_field(rng, shape, 6.0) - 1.0) / 0.5, 0.0, 1.0) * (bands < -0.7)
    return np.clip(0.3 + 0.8 * fibres - 0.6 * clefts, 0.0, 1.0).astype(np.float32)


class _NucleusSet:
    """Nuclei placed so far: rows ``(y, x, a, b, angle_degrees, kind)``; rejects heavy overlaps."""

    def __init__(self):
        self._rows = np.zeros((64, 6))
        self._reach = np.zeros(64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def rows(self) -> np.ndarray:
        """``float64 (N, 6)``: centre ``(y, x)``, semi-axes ``(a, b)``, angle in degrees, kind."""
        return self._rows[:self._count]

    def add_if_free(self, y: float, x: float, a: float, b: float, angle: float, kind: int,
                    spacing: float) -> bool:
        """Add the nucleus unless a placed one is closer than ``spacing`` x the sum of their mean radii."""
        count, reach = self._count, 0.5 * (a + b)
        if count:
            placed = self._rows[:count]
            limit = spacing * (self._reach[:count] + reach)
            if np.any((placed[:, 0] - y) ** 2 + (placed[:, 1] - x) ** 2 < limit * limit):
                return False
        if count == len(self._rows):
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
            self._reach = np.concatenate([self._reach, np.zeros_like(self._reach)])
        self._rows[count] = (y, x, a, b, angle, kind)
        self._reach[count] = reach
        self._count += 1
        return True


def _scatter(rng: np.random.Generator, nuclei: _NucleusSet, probability: np.ndarray, attempts: int,
             draw_shapes, kind: int, spacing: float, orientation: np.ndarray | None = None,
             max_added: int | None = None) -> None:
    """Throw ``attempts`` candidate nuclei, kept with ``probability`` at their pixel and where free.

    ``draw_shapes(n)`` returns ``n`` semi-axes ``a``, ``b`` and angles (degrees); with an
    ``orientation`` map (radians) nuclei are turned along it instead.
    """
    height, width = probability.shape
    ys, xs = rng.uniform(0, height, attempts), rng.uniform(0, width, attempts)
    keep = rng.random(attempts) < probability[ys.astype(int), xs.astype(int)]
    ys, xs = ys[keep], xs[keep]
    a, b, angles = draw_shapes(len(ys))
    if orientation is not None:
        angles = np.degrees(orientation[ys.astype(int), xs.astype(int)]) + rng.normal(0, 8, len(ys))
    added = 0
    for candidate in zip(ys.tolist(), xs.tolist(), a.tolist(), b.tolist(), angles.tolist()):
        if nuclei.add_if_free(*candidate, kind, spacing):
            added += 1
            if max_added is not None and added >= max_added:
                return


def _nucleus_polygons(rng: np.random.Generator, rows: np.ndarray, irregularity: np.ndarray,
                      vertices: int = 20) -> np.ndarray:
    """Outlines of ellipses with smoothly wobbling radii, ``int32 (N, vertices, 2)`` cv2 points, 4 fractional bits."""
    count = len(rows)
    phi = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    orders = np.array([2, 3, 4])
    amplitude = rng.normal(0, 1, (count, 3)) * irregularity[:, None]
    phase = rng.uniform(0, 2 * np.pi, (count, 3))
    wobble = 1.0 + np.einsum("nk,nkv->nv", amplitude, np.cos(orders[None, :, None] * phi + phase[..., None]))
    y, x, a, b, theta = rows[:, 0:1], rows[:, 1:2], rows[:, 2:3], rows[:, 3:4], np.radians(rows[:, 4:5])
    px, py = a * np.cos(phi) * wobble, b * np.sin(phi) * wobble
    points = np.stack([x + px * np.cos(theta) - py * np.sin(theta), y + px * np.sin(theta) + py * np.cos(theta)], -1)
    return np.rint(points * 16).astype(np.int32)


def _positive_statuses(rng: np.random.Generator, kinds: np.ndarray, positive_fraction: float) -> np.ndarray:
    """Ki-67 statuses with P(positive) proportional to the kind's weight, averaging ``positive_fraction``."""
    if len(kinds) == 0:
        return np.zeros(0, bool)
    weights = np.array([_POSITIVITY_WEIGHT[int(kind)] for kind in kinds])
    probability = np.zeros(len(kinds))
    target = float(np.clip(positive_fraction, 0.0, 1.0)) * len(kinds)
    free = np.ones(len(kinds), bool)
    # scale the weights to the target sum; nuclei that reach probability 1 hand the rest to the others
    for _ in range(len(kinds)):
        remaining = target - probability[~free].sum()
        scaled = weights[free] * remaining / weights[free].sum()
        if np.all(scaled <= 1.0):
            probability[free] = scaled
            break
        capped = np.flatnonzero(free)[scaled > 1.0]
        probability[capped] = 1.0
        free[capped] = False
        if not free.any():
            break
    return rng.random(len(kinds)) < probability


@dataclasses.dataclass
class _Regions:
    """Where each tissue is (float32 maps in [0, 1]) and which way the collagen runs."""

    tissue: np.ndarray  # 0 = glass / lumen
    tumour: np.ndarray
    stroma: np.ndarray
    aggregate: np.ndarray  # lymphoid aggregate within the stroma
    stream: np.ndarray  # collagen runs along its level lines
    orientation: np.ndarray  # local fibre direction, radians (x axis = 0, y down)


def _regions(rng: np.random.Generator, shape: tuple[int, int]) -> _Regions:
    """Tumour nests in stroma, lumina/glass and lymphoid aggregates, with shares that vary from tile to tile."""
    tumour_field = _field(rng, shape, 30.0) + rng.uniform(-1.1, 1.4)
    glass_share = rng.uniform(0.02, 0.2) if rng.random() < 0.7 else 0.0
    glass_level = statistics.NormalDist().inv_cdf(glass_share) if glass_share > 0 else -np.inf
    glass_field = _field(rng, shape, 12.0) + 0.15 * _field(rng, shape, 2.5)  # frayed edges
    tissue = np.clip((glass_field - glass_level) / 0.25, 0.0, 1.0).astype(np.float32)
    nest = np.clip(tumour_field / 0.15, 0.0, 1.0)
    aggregate = np.clip((_field(rng, shape, 16.0) - 1.3) / 0.4, 0.0, 1.0) * (rng.random() < 0.4)
    direction = rng.uniform(0, np.pi)
    rows, cols = np.indices(shape, dtype=np.float32)
    stream = (-cols * np.sin(direction) + rows * np.cos(direction)
              + rng.uniform(6.0, 14.0) * _field(rng, shape, 24.0)).astype(np.float32)
    gradient_y, gradient_x = np.gradient(stream)
    return _Regions(tissue=tissue, tumour=(nest * tissue).astype(np.float32),
                    stroma=((1.0 - nest) * tissue).astype(np.float32), aggregate=aggregate.astype(np.float32),
                    stream=stream, orientation=np.arctan2(-gradient_x, gradient_y))


def _place_nuclei(rng: np.random.Generator, regions: _Regions, nucleus_radius: float) -> _NucleusSet:
    """Tumour nuclei packed in the nests, lymphocytes in the stroma and aggregates, spindle cells on the fibres."""
    nuclei = _NucleusSet()
    area = regions.tissue.size

    def tumour_shapes(n):
        a = nucleus_radius * rng.uniform(0.75, 1.25, n)
        return a, a * rng.uniform(0.6, 0.95, n), rng.uniform(0, 180, n)

    def lymphocyte_shapes(n):
        radius = rng.uniform(3.5, 4.5, n)
        return radius, radius * rng.uniform(0.85, 1.0, n), rng.uniform(0, 180, n)

    def spindle_shapes(n):
        return rng.uniform(6.0, 10.0, n), rng.uniform(2.1, 2.8, n), np.zeros(n)

    # tumour: a nuclear area share of about 0.3-0.45 of the nest (where dart throwing does not saturate first)
    tumour_target = int(round(rng.uniform(0.3, 0.45) * float(regions.tumour.sum())
                              / (np.pi * nucleus_radius ** 2 * 0.78)))
    _scatter(rng, nuclei, regions.tumour, 6 * tumour_target + 4, tumour_shapes, TUMOUR, spacing=1.1,
             max_added=tumour_target)
    # lymphocytes: scattered in the stroma, packed in aggregates, a few between the tumour cells
    scattered = rng.lognormal(np.log(1 / 600), 0.7)  # per pixel of stroma
    candidates_per_pixel = 1 / 30
    probability = np.clip(regions.stroma * (scattered / candidates_per_pixel + 0.5 * regions.aggregate)
                          + 0.004 * regions.tumour, 0.0, 1.0)
    _scatter(rng, nuclei, probability, int(area * candidates_per_pixel), lymphocyte_shapes, LYMPHOCYTE, spacing=1.0)
    spindle_density = rng.uniform(1 / 2500, 1 / 1200)
    _scatter(rng, nuclei, regions.stroma, int(rng.poisson(spindle_density * area) * 1.5), spindle_shapes, SPINDLE,
             spacing=1.0, orientation=regions.orientation,
             max_added=int(rng.poisson(spindle_density * float(regions.stroma.sum()))))
    return nuclei


def _draw_nuclei(rng: np.random.Generator, rows: np.ndarray, shape: tuple[int, int]):
    """Label map, nucleoli and the per-nucleus chromatin amount, rim contrast and graininess (index 0 = none)."""
    count = len(rows)
    kinds = rows[:, 5].astype(int)
    tumour, lymphocyte = kinds == TUMOUR, kinds == LYMPHOCYTE
    labels = np.zeros(shape, np.int32)
    for index, polygon in enumerate(_nucleus_polygons(rng, rows, np.select([tumour, lymphocyte], [0.06, 0.025], 0.04))):
        cv2.fillPoly(labels, [polygon], index + 1, lineType=cv2.LINE_8, shift=4)
    # hematoxylin amount (rgb2hed units at the rim), chromatin inside relative to the rim
    # (vesicular tumour nuclei: low), graininess
    hyperchromatic = tumour & (rng.random(count) < 0.2)
    amount = np.select([tumour, lymphocyte], [rng.uniform(0.035, 0.06, count) * np.where(hyperchromatic, 1.25, 1.0),
                                              rng.uniform(0.085, 0.11, count)], rng.uniform(0.055, 0.075, count))
    interior = np.select([hyperchromatic, tumour, lymphocyte],
                         [rng.uniform(0.8, 0.95, count), rng.uniform(0.45, 0.7, count), 0.9], 0.85)
    grain = np.select([tumour, lymphocyte], [rng.uniform(0.35, 0.6, count), 0.2], 0.15)
    # nucleoli: none, one or two small dots near the centre of tumour nuclei
    nucleoli = np.zeros(shape, np.float32)
    for index in np.flatnonzero(tumour):
        y, x, _, b = rows[index, :4]
        for _ in range(rng.choice([0, 1, 1, 2])):
            offset = rng.normal(0, 0.25 * b, 2)
            cv2.circle(nucleoli, (int(round((x + offset[1]) * 4)), int(round((y + offset[0]) * 4))),
                       int(rng.uniform(1.0, 1.7) * 4), 1.0, -1, lineType=cv2.LINE_AA, shift=2)
    per_label = [np.concatenate([[0.0], values]).astype(np.float32) for values in (amount, interior, grain)]
    return (labels, nucleoli * (labels > 0), *per_label)


def _cytoplasm(rng: np.random.Generator, tumour: np.ndarray, tumour_centers: np.ndarray) -> np.ndarray:
    """Tumour cytoplasm: the Voronoi cell of each tumour nucleus, each its own tone, faint borders."""
    shape = tumour.shape
    if len(tumour_centers) == 0:
        return np.zeros(shape, np.float32)
    seeds = np.ones(shape, np.uint8)
    seeds[np.clip(tumour_centers[:, 0].astype(int), 0, shape[0] - 1),
          np.clip(tumour_centers[:, 1].astype(int), 0, shape[1] - 1)] = 0
    _, cells = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    tone = rng.uniform(0.7, 1.2, cells.max() + 1).astype(np.float32)
    border = np.zeros(shape, bool)
    border[:-1] |= cells[:-1] != cells[1:]
    border[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    border = cv2.GaussianBlur(border.astype(np.float32), (0, 0), 1.0)
    texture = 1.0 + 0.12 * _field(rng, shape, 1.5) + 0.15 * _field(rng, shape, 5.0)
    return np.clip(tumour * (tone[cells] * texture + 0.3 * border), 0.0, 1.6).astype(np.float32)


def _capillaries(rng: np.random.Generator, regions: _Regions) -> np.ndarray:
    """Red blood cells in short rows along the fibres, density in [0, 1]."""
    height, width = regions.stroma.shape
    blood = np.zeros((height, width), np.float32)
    for _ in range(rng.poisson(float(regions.stroma.sum()) / 12_000)):
        y0, x0 = rng.uniform(0, height), rng.uniform(0, width)
        if regions.stroma[int(y0), int(x0)] < 0.5:
            continue
        theta = regions.orientation[int(y0), int(x0)]
        for step in rng.uniform(-12, 12, rng.integers(4, 14)):
            y = y0 + step * np.sin(theta) + rng.normal(0, 2.0)
            x = x0 + step * np.cos(theta) + rng.normal(0, 2.0)
            cv2.circle(blood, (int(round(x * 4)), int(round(y * 4))), int(rng.uniform(3.0, 3.8) * 4), 1.0, -1,
                       lineType=cv2.LINE_AA, shift=2)
    return np.clip(blood, 0.0, 1.0)


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbour has another label."""
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edge


def make_layout(rng: np.random.Generator, size: int | tuple[int, int],
                positive_fraction: float = 0.3, nucleus_radius: float = TUMOUR_NUCLEUS_RADIUS) -> TissueLayout:
    """Draw a random 20x tissue layout of ``size`` pixels (tumour, stroma, lymphocytes, glass).

    The tile is a crop of a larger piece of tissue: nuclei cut by its edges are part of
    the layout, with their centres (``centers``) up to about 10 px outside the tile.

    Args:
        rng: NumPy random generator (the only source of randomness).
        size: tile side, or ``(height, width)``.
        positive_fraction: expected fraction of Ki-67-positive nuclei (tumour nuclei are
            positive 4x as often as lymphocytes and about 7x as often as spindle cells).
        nucleus_radius: mean semi-major axis of the tumour nuclei in pixels (7 px at 20x);
            lymphocytes and spindle cells keep their 20x sizes.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if nucleus_radius <= 0:
        raise ValueError(f"nucleus_radius must be positive, got {nucleus_radius}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    margin = int(np.ceil(max(10.0, 1.25 * nucleus_radius))) + 1  # the largest nucleus reaches into the tile
    canvas = (height + 2 * margin, width + 2 * margin)
    regions = _regions(rng, canvas)
    nuclei = _place_nuclei(rng, regions, nucleus_radius)
    rows = nuclei.rows
    labels, nucleoli, amount, interior, grain = _draw_nuclei(rng, rows, canvas)
    cytoplasm = _cytoplasm(rng, regions.tumour, rows[rows[:, 5] == TUMOUR, :2])
    stroma = regions.stroma * _fibres(rng, canvas, regions.stream)
    blood = _capillaries(rng, regions) * (labels == 0)
    stroma *= 1.0 - blood  # red cells lie in a vessel, not on collagen

    # crop the tile; keep the nuclei that show in it, numbered 1..N
    tile = (slice(margin, margin + height), slice(margin, margin + width))
    labels, nucleoli, cytoplasm, stroma, blood = (array[tile] for array in (labels, nucleoli, cytoplasm, stroma, blood))
    shown = np.flatnonzero(np.bincount(labels.ravel(), minlength=len(nuclei) + 1)[1:]) + 1
    renumber = np.zeros(len(nuclei) + 1, np.int32)
    renumber[shown] = np.arange(1, len(shown) + 1)
    labels = renumber[labels]
    amount, interior, grain = (values[np.concatenate([[0], shown])] for values in (amount, interior, grain))
    rows = rows[shown - 1]
    kinds = rows[:, 5].astype(np.int8)
    shape = (height, width)

    # chromatin: a rim along each nucleus' edge (also between touching nuclei), granular inside
    inside = labels > 0
    depth = cv2.distanceTransform((inside & ~_edges(labels)).astype(np.uint8), cv2.DIST_L2, 3)
    rim = np.exp(-depth / 1.3)
    clumps = 0.8 * _field(rng, shape, 0.8) + 0.6 * _field(rng, shape, 1.5)
    texture = np.clip(1.0 + grain[labels] * clumps, 0.3, 2.0)
    chromatin = amount[labels] * (interior[labels] + (1.0 - interior[labels]) * rim) * texture
    chromatin = cv2.GaussianBlur(chromatin.astype(np.float32), (0, 0), 0.5)

    positive = _positive_statuses(rng, kinds, positive_fraction)
    # Ki-67 DAB: granular, strong in most positive nuclei, weaker in some (all well above the 0.04 threshold)
    strength = np.concatenate([[0.0], np.where(positive, rng.uniform(0.15, 0.35, len(kinds)), 0.0)])
    granules = np.clip(0.75 + 0.45 * _field(rng, shape, 1.1) + 0.2 * clumps, 0.2, 2.2)
    positive_density = cv2.GaussianBlur((strength.astype(np.float32)[labels] * granules).astype(np.float32),
                                        (0, 0), 0.5)

    return TissueLayout(stroma=stroma.astype(np.float32), nucleus_density=chromatin,
                        positive_density=positive_density, nucleus_labels=labels,
                        centers=(rows[:, :2] - margin).astype(np.float32), radii=rows[:, 2].astype(np.float32),
                        positive=positive, kinds=kinds, cytoplasm=cytoplasm, blood=blood.astype(np.float32),
                        nucleoli=cv2.GaussianBlur(np.ascontiguousarray(nucleoli), (0, 0), 0.5))


def _finish(rng: np.random.Generator, intensity: np.ndarray) -> np.ndarray:
    """Optical blur and sensor noise, then ``uint8``."""
    intensity = cv2.GaussianBlur(intensity, (0, 0), 0.6)
    intensity = intensity + 2.0 * rng.standard_normal(intensity.shape, dtype=np.float32)
    return np.clip(np.rint(intensity), 0, 255).astype(np.uint8)


def render_he(layout: TissueLayout, rng: np.random.Generator) -> np.ndarray:
    """Render a layout as H&E: ``uint8 (H, W, 3)``.

    Amounts in rgb2hed units, set so that the tissue reads as real 20x H&E does (nuclei about
    0.05-0.12 hematoxylin, cytoplasm and collagen about 0.02-0.04 eosin).
    """
    hematoxylin_scale, eosin_scale = rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.15)  # this slide's staining
    nuclear = (layout.nucleus_labels > 0).astype(np.float32)
    hematoxylin = (layout.nucleus_density + 0.022 * layout.cytoplasm * (1.0 - nuclear) + 0.02 * nuclear
                   + 0.004 * layout.stroma + 0.05 * layout.nucleoli)
    eosin = (0.036 * layout.stroma * (1.0 - 0.5 * nuclear) + 0.026 * layout.cytoplasm + 0.004 * nuclear
             + 0.055 * layout.blood + 0.03 * layout.nucleoli)
    concentrations = np.stack([hematoxylin * hematoxylin_scale, eosin * eosin_scale, np.ones_like(eosin)], -1)
    return _finish(rng, render_beer_lambert(concentrations, HE_STAINS))


def render_ki67(layout: TissueLayout, rng: np.random.Generator) -> np.ndarray:
    """Render a layout as Ki-67 IHC (DAB + hematoxylin counterstain): ``uint8 (H, W, 3)``.

    Amounts in rgb2hed units, set so that the tissue reads as real 20x Ki-67 does (positive
    nuclei about 0.1-0.3 DAB, negative nuclei about 0.05-0.1 hematoxylin, pale cytoplasm).
    """
    hematoxylin_scale, dab_scale = rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.15)
    labels = layout.nucleus_labels
    positive_nuclei = layout.positive_density > 0.01
    # the counterstain shows less chromatin texture than H&E (mostly each nucleus' mean); under DAB little of it
    counts = np.maximum(np.bincount(labels.ravel(), minlength=1), 1)
    mean_chromatin = (np.bincount(labels.ravel(), weights=layout.nucleus_density.ravel()) / counts)[labels]
    mean_chromatin[labels == 0] = 0.0
    counterstain = ((0.016 + 0.35 * mean_chromatin + 0.3 * layout.nucleus_density).astype(np.float32)
                    * (labels > 0) * np.where(positive_nuclei, 0.35, 1.0))
    counterstain = cv2.GaussianBlur(counterstain, (0, 0), 0.7)
    hematoxylin = counterstain + 0.007 * layout.cytoplasm + 0.012 * layout.stroma + 0.004 * layout.blood
    # a faint non-specific brown over tissue, as in real IHC; red blood cells a little more
    dab = layout.positive_density + 0.009 * np.minimum(layout.cytoplasm + layout.stroma, 1.0) + 0.014 * layout.blood
    concentrations = np.stack([hematoxylin * hematoxylin_scale, dab * dab_scale, np.ones_like(dab)], -1)
    return _finish(rng, render_beer_lambert(concentrations, KI67_STAINS))


def smooth_deformation(rng: np.random.Generator, shape: tuple[int, int], max_shift: float,
                       smoothness: float | None = None) -> np.ndarray:
    """A smooth random displacement field ``float32 (H, W, 2)`` as ``(dy, dx)``, |d| <= ``max_shift``."""
    height, width = shape
    smoothness = smoothness or max(height, width) / 4
    field = np.stack([_smooth_noise(rng, shape, smoothness) for _ in range(2)], axis=-1)
    peak = np.abs(field).max() + 1e-6
    return (field / peak * max_shift).astype(np.float32)


def warp_image(image: np.ndarray, displacement: np.ndarray, border_value: int = 255) -> np.ndarray:
    """Sample ``image`` at ``(y + dy, x + dx)``: output pixel p shows input pixel p + d(p)."""
    height, width = displacement.shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    return cv2.remap(image, grid_x + displacement[..., 1], grid_y + displacement[..., 0],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(border_value,) * 3)


@dataclasses.dataclass
class SyntheticPair:
    """One layout rendered in both stains.

    ``ki67`` shows the layout warped by ``displacement`` (``ki67[p] = ki67_aligned[p + d(p)]``);
    ``layout`` is the unwarped layout, aligned with ``he``.
    """

    he: np.ndarray
    ki67: np.ndarray
    layout: TissueLayout
    displacement: np.ndarray


def render_pair(rng: np.random.Generator, size: int, positive_fraction: float = 0.3,
                max_shift: float = 0.0, nucleus_radius: float = TUMOUR_NUCLEUS_RADIUS) -> SyntheticPair:
    """Render one layout as an H&E tile and a (deformed) Ki-67 tile of ``size`` pixels."""
    layout = make_layout(rng, size, positive_fraction, nucleus_radius)
    he = render_he(layout, rng)
    ki67 = render_ki67(layout, rng)
    displacement = (smooth_deformation(rng, (size, size), max_shift) if max_shift > 0
                    else np.zeros((size, size, 2), np.float32))
    if max_shift > 0:
        ki67 = warp_image(ki67, displacement)
    return SyntheticPair(he=he, ki67=ki67, layout=layout, displacement=displacement)


def sample_tiles(stain: str, count: int, size: int, seed: int, positive_fraction: float = 0.3,
                 nucleus_radius: float | None = None) -> np.ndarray:
    """``count`` tiles of one stain (``"he"`` or ``"ki67"``) from independent layouts, ``uint8 (N, S, S, 3)``.

    ``nucleus_radius``: tumour nuclei as in :func:`make_layout` (``None``: the 20x default, whatever ``size``).
    """
    renderers = {"he": render_he, "ki67": render_ki67}
    if stain not in renderers:
        raise ValueError(f"stain must be one of {sorted(renderers)}, got {stain!r}")
    nucleus_radius = TUMOUR_NUCLEUS_RADIUS if nucleus_radius is None else nucleus_radius
    # separate streams per stain: unpaired tiles never share a layout
    rng = np.random.default_rng([seed, 0 if stain == "he" else 1])
    return np.stack([renderers[stain](make_layout(rng, size, positive_fraction, nucleus_radius), rng)
                     for _ in range(count)])


def write_sample_dataset(root: str | Path, num_train: int, num_val: int, tile_size: int,
                         seed: int = 0, positive_fraction: float = 0.3, paired: bool = False,
                         max_shift: float = 2.0) -> Path:
    """Write the sample data set as PNG tiles under ``root``.

    Layout (what ``train.py --he-dir/--ki67-dir`` read)::

        root/he/train/*.png   root/ki67/train/*.png
        root/he/val/*.png     root/ki67/val/*.png
        root/sample_data.json (parameters; the folder is reused when they match)

    Nuclei have their 20x sizes whatever ``tile_size``. In paired mode tile ``i`` of
    both stains shows the same layout (the Ki-67 side deformed by up to ``max_shift``
    pixels) and the nuclei are listed in ``root/<split>_nuclei.json``.
    """
    root = Path(root)
    params = dict(version=SAMPLE_DATA_VERSION, num_train=num_train, num_val=num_val, tile_size=tile_size,
                  seed=seed, positive_fraction=positive_fraction, paired=paired, max_shift=max_shift)
    marker = root / "sample_data.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        logger.info("reusing sample data in %s", root)
        return root
    for split, count, split_seed in (("train", num_train, seed), ("val", num_val, seed + 10_007)):
        if paired:
            rng = np.random.default_rng([split_seed, 2])
            nuclei = []
            for index in range(count):
                pair = render_pair(rng, tile_size, positive_fraction, max_shift)
                name = f"tile_{index:05d}.png"
                write_image_rgb(root / "he" / split / name, pair.he)
                write_image_rgb(root / "ki67" / split / name, pair.ki67)
                nuclei.append(dict(name=name, centers=pair.layout.centers.tolist(),
                                   positive=pair.layout.positive.tolist()))
            (root / f"{split}_nuclei.json").write_text(json.dumps(nuclei))
        else:
            for stain in ("he", "ki67"):
                tiles = sample_tiles(stain, count, tile_size, split_seed, positive_fraction)
                for index, tile in enumerate(tiles):
                    write_image_rgb(root / stain / split / f"{stain}_{index:05d}.png", tile)
    marker.write_text(json.dumps(params, indent=2))
    logger.info("wrote sample data (%d train / %d val tiles per stain) to %s", num_train, num_val, root)
    return root
