"""Tissue mask pictures: tint and outline where the mask is, nothing elsewhere."""

import numpy as np
import pytest

from virtual_ihc.histology.tissue import tissue_overlay


def test_overlay_tints_the_mask_and_leaves_the_rest():
    rgb = np.full((40, 40, 3), 200, np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = tissue_overlay(rgb, mask, colour=(0, 100, 0), alpha=0.5, outline=0)
    np.testing.assert_array_equal(out[15, 15], [100, 150, 100])
    np.testing.assert_array_equal(out[~mask], rgb[~mask])


def test_outline_is_drawn_on_the_mask_edge():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = tissue_overlay(np.full((40, 40, 3), 255, np.uint8), mask, colour=(255, 0, 0), alpha=0.0, outline=1)
    np.testing.assert_array_equal(out[10, 20], [255, 0, 0])
    np.testing.assert_array_equal(out[20, 20], [255, 255, 255])
    np.testing.assert_array_equal(out[2, 2], [255, 255, 255])


@pytest.mark.parametrize("factor", [2, 4])
def test_a_low_resolution_mask_is_scaled_to_the_image(factor):
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    out = tissue_overlay(np.full((10 * factor, 10 * factor, 3), 200, np.uint8), mask, colour=(0, 0, 0),
                         alpha=1.0, outline=0)
    assert (out[:5 * factor] == 0).all() and (out[5 * factor:] == 200).all()
