"""Pins of the two places that keep grid tiles by their tissue fraction (before they share one function).

- the training pipeline keeps a tile of a large image when its fraction, at full resolution, is
  **at least** ``min_tissue``; tiles are ``(y, x)`` origins;
- whole-slide staining runs a tile when its fraction on the (dilated) overview **exceeds**
  ``min_tissue``; the fraction is counted on a mask ``overview_downsample`` times smaller.
"""

import numpy as np

from virtual_ihc.data.pipeline import _tissue_tiles
from virtual_ihc.inference.stitching import StitchOptions, TileLayout
from virtual_ihc.inference.whole_slide import tissue_tiles

PINK = (200, 110, 160)


def glass(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 245, np.uint8)


def test_training_keeps_a_tile_whose_fraction_equals_min_tissue_and_names_it_y_x(tmp_path):
    image = glass(64, 96)
    image[32:64, 0:16] = PINK  # tile (y=32, x=0) of a 32-px grid: exactly half tissue
    image[0:32, 64:96] = PINK  # tile (y=0, x=64): all tissue
    sources = _tissue_tiles(image, tmp_path / "large.png", tile_size=32, overlap=0, min_tissue=0.5)
    assert [(source.y, source.x, source.size) for source in sources] == [(0, 64, 32), (32, 0, 32)]
    above = _tissue_tiles(image, tmp_path / "large.png", tile_size=32, overlap=0, min_tissue=0.51)
    assert [(source.y, source.x) for source in above] == [(0, 64)]


def test_staining_runs_a_tile_only_when_its_overview_fraction_exceeds_min_tissue():
    overview = glass(64, 64)
    overview[:, 0:15] = PINK  # dilated by one overview pixel: columns 0-15, half of the left tiles
    layout = TileLayout.plan(64, 64, StitchOptions(tile_size=32, overlap=0, margin=0))
    assert tissue_tiles(overview, layout, 1.0, 0.49).tolist() == [[True, False], [True, False]]
    assert tissue_tiles(overview, layout, 1.0, 0.5).tolist() == [[False, False], [False, False]]


def test_staining_counts_tissue_on_an_overview_smaller_than_the_image():
    overview = glass(32, 32)  # the image is 64 x 64: two image pixels per overview pixel
    overview[0:16, 16:32] = PINK  # all of tile (row 0, column 1) once dilated
    layout = TileLayout.plan(64, 64, StitchOptions(tile_size=32, overlap=0, margin=0))
    assert tissue_tiles(overview, layout, 2.0, 0.99).tolist() == [[False, True], [False, False]]
