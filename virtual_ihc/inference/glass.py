"""Glass stays glass: where the H&E is glass, the virtual stain is a clean background colour.

The generator paints glass too, and how depends on the tile's statistics (a grey that
changes from tile to tile under per-tile normalisation). A real Ki-67 slide's glass is
just the scanner's background. So every stained tile is blended with ``colour`` by the
H&E tile's full-resolution tissue weight (:func:`~virtual_ihc.histology.tissue.tissue_weight`:
the slide's tissue threshold, measured once on its overview, applied to the tile's own
pixels and feathered over a few pixels): tissue keeps the generator's colours, glass gets
``colour``, and the edge between them is soft.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from virtual_ihc.histology.tissue import glass_threshold, is_colourless, tissue_weight


@dataclasses.dataclass(frozen=True)
class GlassRule:
    """What counts as glass on one slide, and what glass becomes.

    Attributes:
        colour: RGB of glass in the output.
        threshold: the slide's glass threshold (:func:`~virtual_ihc.histology.tissue.glass_threshold`).
        colourless: the slide has no colour (tissue is what is darker than glass).
    """

    colour: tuple[int, int, int]
    threshold: int
    colourless: bool

    @classmethod
    def for_slide(cls, overview: np.ndarray, colour: tuple[int, int, int]) -> "GlassRule":
        """The rule for a slide whose low-resolution overview is ``overview`` (``uint8`` RGB)."""
        return cls(tuple(int(value) for value in colour), glass_threshold(overview), is_colourless(overview))

    def apply(self, he_tiles: np.ndarray, stained: np.ndarray) -> np.ndarray:
        """``stained`` (``uint8 (N, H, W, 3)``) with ``colour`` where the H&E tiles ``he_tiles`` are glass."""
        out = np.empty_like(stained)
        colour = np.asarray(self.colour, np.float32)
        for index, (he, tile) in enumerate(zip(he_tiles, stained)):
            weight = tissue_weight(he, self.threshold, self.colourless)[..., None]
            out[index] = np.clip(np.rint(colour + weight * (tile.astype(np.float32) - colour)), 0, 255)
        return out
