"""Tissue mask pictures: tint and outline where the mask is, nothing elsewhere."""

import numpy as np
import pytest

from virtual_ihc.histology.tissue import (MIN_SATURATION, glass_threshold, tissue_overlay, tissue_threshold,
                                          tissue_weight)


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


def _glass_dense_and_pale_tissue():
    """Glass (saturation about 3), dense tissue (about 120) and a band of pale stroma (about 40)."""
    rng = np.random.default_rng(0)
    image = np.full((120, 120, 3), 245, np.uint8)
    image[:, :, 1] = 243
    image[20:100, 20:60] = (200, 110, 160)  # dense
    image[20:100, 60:80] = (235, 205, 225)  # pale
    return np.clip(image.astype(int) + rng.integers(-1, 2, image.shape), 0, 255).astype(np.uint8)


def test_pixels_as_pale_as_the_glass_are_glass_and_pale_stroma_stays_tissue():
    image = _glass_dense_and_pale_tissue()
    threshold = glass_threshold(image)
    assert MIN_SATURATION <= threshold < tissue_threshold(image)
    weight = tissue_weight(image, threshold, colourless=False, feather=0)
    assert weight[30:90, 25:75].min() == 1 and weight[:10].max() == 0 and weight[:, 100:].max() == 0


def test_tissue_weight_is_feathered_across_the_edge():
    image = _glass_dense_and_pale_tissue()
    weight = tissue_weight(image, glass_threshold(image), colourless=False, feather=2.0)
    row = weight[60, 10:30]
    assert row[0] < 0.01 and row[-1] > 0.99 and np.all(np.diff(row) >= -1e-6)
    assert 0.2 < weight[60, 20] < 0.8  # the edge itself is half way
