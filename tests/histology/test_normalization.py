"""Stain normalisation against Beer-Lambert renderings with known stain vectors."""

from __future__ import annotations

import numpy as np
import pytest

from virtual_ihc.histology.normalization import (METHODS, StainNormalizer, fit_stain_stats, macenko_stain_matrix,
                                                 optical_density, vahadane_stain_matrix)
from virtual_ihc.histology.stains import render_beer_lambert


def unit_rows(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


#: a bluer hematoxylin and a more orange eosin than the reference vectors
SOURCE_STAINS = unit_rows([[0.55, 0.78, 0.30], [0.10, 0.95, 0.25]])
TARGET_STAINS = unit_rows([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])


def stain_amounts(seed: int, shape=(96, 96)) -> np.ndarray:
    """Hematoxylin in sparse nuclei, eosin almost everywhere, a band of bare glass."""
    rng = np.random.default_rng(seed)
    amounts = np.stack([rng.gamma(2.0, 0.4, shape) * (rng.random(shape) < 0.4),
                        rng.gamma(3.0, 0.25, shape) * (rng.random(shape) < 0.8)], axis=-1)
    amounts[:16] = 0.0
    return amounts


def render(amounts: np.ndarray, stains: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(render_beer_lambert(amounts, stains)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("estimate", [macenko_stain_matrix, vahadane_stain_matrix])
def test_stain_vectors_are_recovered(estimate):
    estimated = estimate(render(stain_amounts(0), SOURCE_STAINS))
    cosines = np.sum(estimated * SOURCE_STAINS, axis=1)
    assert cosines.min() > 0.99  # hematoxylin first, eosin second


@pytest.mark.parametrize("method, tolerance", [("macenko", 2.5), ("vahadane", 3.0), ("reinhard", 5.0)])
def test_normalised_image_approaches_target_rendering_of_same_tissue(method, tolerance):
    source = render(stain_amounts(1), SOURCE_STAINS)
    ideal = render(stain_amounts(1), TARGET_STAINS)  # the same tissue stained like the target
    target = render(stain_amounts(2), TARGET_STAINS)
    normalised = StainNormalizer.fit(method, target).transform(source)
    error_before = np.abs(source.astype(float) - ideal).mean()
    error_after = np.abs(normalised.astype(float) - ideal).mean()
    assert normalised.shape == source.shape and normalised.dtype == np.uint8
    assert error_after < tolerance < error_before


@pytest.mark.parametrize("method", METHODS)
def test_glass_stays_white(method):
    source = render(stain_amounts(1), SOURCE_STAINS)
    normalised = StainNormalizer.fit(method, render(stain_amounts(2), TARGET_STAINS)).transform(source)
    assert normalised[:16].min() >= 250


def test_reinhard_matches_target_lab_statistics_on_tissue():
    target = render(stain_amounts(2), TARGET_STAINS)
    normaliser = StainNormalizer.fit("reinhard", target)
    normalised = normaliser.transform(render(stain_amounts(1), SOURCE_STAINS))
    stats = fit_stain_stats("reinhard", normalised)
    np.testing.assert_allclose(stats.lab_mean, normaliser.target.lab_mean, atol=2.0)


def test_slide_statistics_give_the_same_mapping_to_every_tile():
    slide = render(stain_amounts(3, (128, 128)), SOURCE_STAINS)
    normaliser = StainNormalizer.fit("macenko", render(stain_amounts(2), TARGET_STAINS))
    source = fit_stain_stats("macenko", slide)
    whole = normaliser.transform(slide, source)
    np.testing.assert_array_equal(normaliser.transform(slide[64:, 64:], source), whole[64:, 64:])


def test_normaliser_survives_save_and_load(tmp_path):
    normaliser = StainNormalizer.fit("vahadane", render(stain_amounts(2), TARGET_STAINS))
    loaded = StainNormalizer.load(normaliser.save(tmp_path / "norm.json"))
    image = render(stain_amounts(1), SOURCE_STAINS)
    np.testing.assert_array_equal(loaded.transform(image), normaliser.transform(image))


def test_blank_image_and_unknown_method_are_refused():
    with pytest.raises(ValueError, match="too little"):
        fit_stain_stats("macenko", np.full((32, 32, 3), 250, np.uint8))
    with pytest.raises(ValueError, match="must be one of"):
        fit_stain_stats("histogram", np.zeros((8, 8, 3), np.uint8))


def test_optical_density_of_glass_is_zero():
    assert optical_density(np.full((2, 2, 3), 255, np.uint8)).max() == 0.0
