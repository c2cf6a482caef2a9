"""Tile grids and the tissue fraction of each tile.

The two places that keep grid tiles by their tissue fraction share
:func:`~virtual_ihc.grid.tile_tissue_fractions` and keep their own thresholds (pinned here):

- the training pipeline keeps a tile of a large image when its fraction, at full resolution, is
  **at least** ``min_tissue``; tiles are ``(y, x)`` origins;
- whole-slide staining runs a tile when its fraction on the (dilated) overview **exceeds**
  ``min_tissue``; the fraction is counted on a mask ``overview_downsample`` times smaller.
"""

import numpy as np

from virtual_ihc.data.index import _tissue_tiles
from virtual_ihc.grid import tile_tissue_fractions
from virtual_ihc.inference.stitching import StitchOptions, TileLayout
from virtual_ihc.inference.whole_slide import tissue_tiles

PINK = (200, 110, 160)


def glass(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 245, np.uint8)


def test_tile_tissue_fractions_counts_mask_pixels_under_each_tile():
    mask = np.zeros((8, 8), bool)
    mask[:4, :2] = True
    fractions = tile_tissue_fractions(mask, [(0, 0), (0, 16), (16, 0), (8, 4)], tile_size=16, mask_downsample=4)
    np.testing.assert_allclose(fractions, [0.5, 0.0, 0.0, 0.125])


def test_tile_tissue_fractions_at_full_resolution_is_the_share_of_tissue_pixels():
    mask = np.random.default_rng(0).random((40, 56)) > 0.7
    corners = [(0, 0), (8, 24), (20, 36)]
    expected = [mask[y:y + 20, x:x + 20].mean() for y, x in corners]
    np.testing.assert_allclose(tile_tissue_fractions(mask, corners, 20), expected)


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
