"""Blending weights for stitching overlapping tiles.

Each tile's output is weighted by a separable window ``w(y, x) = w_y(y) * w_x(x)``.
Along an axis, a side that overlaps a neighbouring tile ramps from 0 to 1 with a
half Hann (raised-cosine) window spanning that overlap, after a *context margin*
of zero weight: the first ``margin`` pixels next to a tile border, where the
generator saw least context (zero padding, different instance-norm statistics),
never reach the output. Sides on the image border keep full weight. Two
neighbours' ramps over their common overlap are ``sin²`` and ``cos²`` of the same
angle, so they sum to 1; where the edge-aligned last tile overlaps more than one
neighbour the stitcher divides by the summed weights anyway.
"""

from __future__ import annotations

import numpy as np


def rising_ramp(length: int, margin: int) -> np.ndarray:
    """float64 ``(length,)`` in [0, 1]: 0 for ``margin`` pixels, a half Hann window, then 1.

    The margin shrinks when the overlap is too short to keep one ramp pixel;
    ``rising_ramp(n, m) + rising_ramp(n, m)[::-1] == 1`` everywhere.
    """
    margin = max(0, min(margin, (length - 1) // 2))
    span = length - 2 * margin
    position = (np.arange(length) - margin + 0.5) / span
    return np.sin(0.5 * np.pi * np.clip(position, 0.0, 1.0)) ** 2


def axis_weights(starts: list[int], tile: int, margin: int) -> list[np.ndarray]:
    """Window of each tile along one axis, float64 ``(tile,)`` each.

    Args:
        starts: tile start offsets in increasing order (as from ``tile_starts``).
        tile: tile length along the axis.
        margin: context margin (pixels of zero weight next to an overlapping side).
    """
    weights = []
    for index, start in enumerate(starts):
        weight = np.ones(tile)
        if index > 0:
            overlap = starts[index - 1] + tile - start
            weight[:overlap] *= rising_ramp(overlap, margin)
        if index + 1 < len(starts):
            overlap = start + tile - starts[index + 1]
            weight[tile - overlap:] *= rising_ramp(overlap, margin)[::-1]
        weights.append(weight)
    return weights
