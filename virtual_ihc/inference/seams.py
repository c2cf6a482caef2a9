"""Seam score: how much tile borders stand out in a stitched image.

For every line between two adjacent pixel rows (or columns) the *jump* is the
mean absolute difference between the two rows, over columns and RGB channels
(grey levels). Along each axis of a tile grid:

- *seam lines* are where a tile-by-tile output can jump: every tile edge, and
  the centre of every overlap (where blending changes fastest);
- *blended lines* are the lines strictly inside an overlap;
- *reference lines* are the lines 8, 16 and 24 pixels from a seam line that
  are neither seam nor blended lines: nearby tissue of the same kind, untouched
  by tile borders or blending, at the same phase of the generator's 8-pixel
  upsampling pattern.

The seam score is the mean jump over the seam lines of both axes divided by the
mean jump over their reference lines. Comparing each seam with its own
neighbourhood cancels the variation of texture across the image: an output
without seams (e.g. ``--whole``, scored on the same lines) scores about 1,
a visible seam scores well above 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: reference lines lie this many pixels from a seam line: whole multiples of the generator's
#: upsampling period (8 px for 3 stride-2 layers), whose faint periodic pattern they then share
REFERENCE_DISTANCES = (8, 16, 24)


@dataclasses.dataclass(frozen=True)
class SeamLines:
    """Lines of one axis; line ``k`` lies between pixels ``k - 1`` and ``k`` (0 < k < length).

    Attributes:
        length: pixels along the axis.
        seams: tile edges and overlap centres.
        blended: lines strictly inside an overlap.
    """

    length: int
    seams: tuple[int, ...]
    blended: tuple[int, ...]

    def references(self) -> list[int]:
        """Lines :data:`REFERENCE_DISTANCES` pixels from a seam that are neither seams nor blended."""
        excluded = set(self.seams) | set(self.blended)
        candidates = {seam + sign * distance for seam in self.seams
                      for distance in REFERENCE_DISTANCES for sign in (-1, 1)}
        return sorted(line for line in candidates - excluded if 0 < line < self.length)


def seam_lines(starts: list[int], tile: int, length: int) -> SeamLines:
    """The :class:`SeamLines` of tiles of ``tile`` pixels at ``starts`` along an axis of ``length``."""
    seams, blended = set(), set()
    for start in starts:
        seams.update((start, start + tile))
    for previous, start in zip(starts, starts[1:]):
        end = previous + tile
        if end > start:
            seams.add((start + end) // 2)
            blended.update(range(start + 1, end))
    inside = lambda lines: tuple(sorted(line for line in lines if 0 < line < length))  # noqa: E731
    return SeamLines(length, inside(seams), inside(blended - seams))


def line_jumps(image: np.ndarray, axis: int) -> np.ndarray:
    """float64 ``(n - 1,)``: mean |difference| across each line between rows (axis 0) or columns (axis 1).

    Entry ``k - 1`` is the jump across line ``k`` (between pixels ``k - 1`` and ``k``).
    """
    values = np.asarray(image, np.float64)
    differences = np.abs(np.diff(values, axis=axis))
    other_axes = tuple(index for index in range(values.ndim) if index != axis)
    return differences.mean(axis=other_axes)


def seam_score(image: np.ndarray, rows: SeamLines, cols: SeamLines) -> float:
    """Mean jump across seam lines / mean jump across their reference lines (both axes pooled).

    Args:
        image: ``uint8`` RGB ``(H, W, 3)`` (or any ``(H, W, ...)`` array).
        rows: lines between rows (``seam_lines`` of the tile rows' starts and height).
        cols: lines between columns.
    """
    seams, references = [], []
    for axis, lines in ((0, rows), (1, cols)):
        jumps = line_jumps(image, axis)
        seams.append(jumps[np.asarray(lines.seams, int) - 1])
        references.append(jumps[np.asarray(lines.references(), int) - 1])
    return float(np.concatenate(seams).mean() / np.concatenate(references).mean())
