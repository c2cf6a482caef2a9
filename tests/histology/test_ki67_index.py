"""Ki-67 labelling index on synthetic Ki-67 tiles whose positive nuclei are known."""

import numpy as np
import pytest

from virtual_ihc.data.synthetic import render_pair
from virtual_ihc.histology.ki67_index import TileIndex, slide_indices, slide_of, tile_index
from virtual_ihc.histology.nuclei import segment_nuclei


@pytest.fixture(scope="module")
def pairs():
    """Twelve 128 px paired tiles (20x-sized nuclei, radius 5 px) with labelling indices from about 0.05 to 0.6."""
    rng = np.random.default_rng(7)
    return [render_pair(rng, 128, positive_fraction=fraction, max_shift=0.0, nucleus_radius=5.0)
            for fraction in np.linspace(0.05, 0.6, 12)]


def test_index_of_real_stain_tiles_is_within_five_points_of_the_truth(pairs):
    measured = [tile_index(pair.ki67) for pair in pairs]
    truth = [pair.layout.labelling_index for pair in pairs]
    errors = np.abs([tile.index - expected for tile, expected in zip(measured, truth)])
    assert errors.mean() <= 0.05
    pooled = sum(t.positive for t in measured) / sum(t.nuclei for t in measured)
    true_pooled = sum(p.layout.positive.sum() for p in pairs) / sum(len(p.layout.positive) for p in pairs)
    assert abs(pooled - true_pooled) <= 0.05


def test_nucleus_count_is_close_to_the_layout(pairs):
    counted = sum(tile_index(pair.ki67).nuclei for pair in pairs)
    assert counted == pytest.approx(sum(len(pair.layout.positive) for pair in pairs), rel=0.2)


def test_positive_area_follows_the_dab_nuclei(pairs):
    low, high = tile_index(pairs[0].ki67), tile_index(pairs[-1].ki67)
    assert high.positive_area > low.positive_area
    assert 0.0 <= low.negative_area <= 1.0


def test_blank_tile_has_no_nuclei_and_no_index():
    blank = np.full((64, 64, 3), 240, np.uint8)
    assert segment_nuclei(blank).max() == 0
    result = tile_index(blank)
    assert result.nuclei == 0 and np.isnan(result.index)


def test_slide_of_reads_registered_tile_names():
    assert slide_of("pairA_x512_y1024.png") == "pairA"
    assert slide_of("sub/case_7_x0_y0.tif") == "case_7"
    assert slide_of("tile_00001.png") == "all"


def test_slide_index_pools_counts_before_dividing():
    tiles = [TileIndex(10, 1, 0, 0), TileIndex(2, 2, 0, 0), TileIndex(4, 1, 0, 0)]
    indices = slide_indices(["s1_x0_y0.png", "s1_x1_y0.png", "s2_x0_y0.png"], tiles)
    assert indices == {"s1": pytest.approx(3 / 12), "s2": pytest.approx(0.25)}
