"""Stain rescaling: colour deconvolution, scaled amounts, Beer-Lambert back."""

import numpy as np
import pytest
from skimage.color import rgb2hed

from virtual_ihc.data.synthetic import sample_tiles
from virtual_ihc.histology.stains import rescale_stains


@pytest.fixture(scope="module")
def he():
    return sample_tiles("he", 1, 64, seed=4)[0]


def test_unit_factors_give_the_image_back(he):
    difference = np.abs(rescale_stains(he).astype(int) - he)
    assert difference.max() <= 6  # near-white pixels: rgb2hed drops negative amounts
    assert (difference > 1).mean() < 0.005


def test_factors_scale_each_stain_as_scikit_image_reads_it(he):
    before = rgb2hed(he).reshape(-1, 3).mean(axis=0)
    after = rgb2hed(rescale_stains(he, hematoxylin=1.8, eosin=0.5)).reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(after[:2], before[:2] * [1.8, 0.5], rtol=0.03)
    assert after[2] == pytest.approx(before[2], rel=0.03)


def test_negative_factor_is_refused(he):
    with pytest.raises(ValueError, match="stain factors"):
        rescale_stains(he, eosin=-1.0)
