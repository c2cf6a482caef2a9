"""Seam score: how much tile borders stand out in a stitched image.

For every line between two adjacent pixel rows (or columns) the *jump* is the
mean absolute difference between the two rows, over columns and RGB channels
(grey levels). The seam score of an image for a set of *seam lines* is

    mean jump over seam lines / mean jump over all other lines

pooled over both axes. Seam lines are where tiles meet: every line inside an
overlap band of the tile grid (where outputs of two tiles are blended) and the
tile edges themselves; for non-overlapping tiling, just the edges. An image with
no seams scores about 1 (seam lines look like any other line); visible seams
score above 1. Compare a stitched output with a ``--whole`` output of the same
image scored on the same lines.
"""

from __future__ import annotations

import numpy as np


def line_jumps(image: np.ndarray, axis: int) -> np.ndarray:
    """float64 ``(n - 1,)``: mean |difference| across each line between rows (axis 0) or columns (axis 1).

    Entry ``k - 1`` is the jump between line ``k - 1`` and line ``k``, i.e. across the
    line in front of pixel ``k``.
    """
    values = np.asarray(image, np.float64)
    differences = np.abs(np.diff(values, axis=axis))
    other_axes = tuple(index for index in range(values.ndim) if index != axis)
    return differences.mean(axis=other_axes)


def seam_lines(starts: list[int], tile: int, length: int) -> list[int]:
    """Positions ``k`` (0 < k < length) of lines where tiles meet, for one axis.

    A line ``k`` lies between pixels ``k - 1`` and ``k``; every tile start and end
    inside the image and every line inside an overlap between consecutive tiles.
    """
    lines = set()
    for previous, start in zip(starts, starts[1:]):
        lines.update(range(start, min(previous + tile, length) + 1))
    for start in starts:
        lines.update((start, start + tile))
    return sorted(line for line in lines if 0 < line < length)


def seam_score(image: np.ndarray, row_lines: list[int], col_lines: list[int]) -> float:
    """Mean jump across seam lines divided by the mean jump across the other lines.

    Args:
        image: ``uint8`` RGB ``(H, W, 3)`` (or any ``(H, W, ...)`` array).
        row_lines: seam lines between rows (from :func:`seam_lines` over heights).
        col_lines: seam lines between columns.
    """
    seams, others = [], []
    for axis, lines in ((0, row_lines), (1, col_lines)):
        jumps = line_jumps(image, axis)
        is_seam = np.zeros(len(jumps), bool)
        is_seam[np.asarray(lines, int) - 1] = True
        seams.append(jumps[is_seam])
        others.append(jumps[~is_seam])
    seam_mean, other_mean = np.concatenate(seams).mean(), np.concatenate(others).mean()
    return float(seam_mean / other_mean)
