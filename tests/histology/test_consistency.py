"""Pathology-consistency measures on images the tests make from real IHC (scikit-image) and synthetic H&E.

The "real-derived H&E" is a crop of scikit-image's real IHC image
(``skimage.data.immunohistochemistry``: a gland, stroma and glass) with its hematoxylin kept
and its DAB (a membranous stain there) turned into eosin: real nuclear morphology and real
glass, in H&E colours. Ideal virtual Ki-67 images are made from it by re-staining: hematoxylin
kept, eosin dropped, DAB on a chosen share of its nuclei.
"""

import numpy as np
import pytest
import skimage.data
from skimage.color import hed2rgb

from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.histology.consistency import (ConsistencyOptions, ConsistencyThresholds, evaluate_consistency,
                                               glass_mask, match_nuclei, raise_flags, tile_consistency)
from virtual_ihc.histology.nuclei import segment_nuclei
from virtual_ihc.histology.stains import restain_he_as_ki67, stain_concentrations
from virtual_ihc.histology.tissue import saturation


@pytest.fixture(scope="module")
def real_derived_he():
    """A 256 x 256 real IHC crop (gland, stroma, 17 % glass) with hematoxylin kept and DAB turned into eosin."""
    ihc = skimage.data.immunohistochemistry()[250:506, 0:256]
    amounts = stain_concentrations(ihc).astype(np.float64)
    tissue = saturation(ihc) > 25
    he_amounts = np.stack([amounts[..., 0], 0.3 * amounts[..., 2] + 0.02 * tissue, np.zeros_like(amounts[..., 0])],
                          axis=-1)
    return np.clip(np.rint(hed2rgb(he_amounts) * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference_ki67(real_derived_he):
    """Reference 'real Ki-67' tiles with a known positive share (0.2): the re-stained real-derived H&E."""
    return [restained(real_derived_he, 0.2, seed=5)]


@pytest.fixture(scope="module")
def synthetic_he():
    rng = np.random.default_rng(3)
    return np.stack([render_he(make_layout(rng, 128, nucleus_radius=5.0), rng) for _ in range(3)])


def restained(he: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """``he`` re-stained as an ideal Ki-67 with DAB on a random ``share`` of its nuclei."""
    labels = segment_nuclei(he)
    ids = np.arange(1, labels.max() + 1)
    chosen = ids[np.random.default_rng(seed).random(len(ids)) < share]
    return restain_he_as_ki67(he, np.isin(labels, chosen))


def test_identity_map_keeps_every_nucleus_but_fails_realism(real_derived_he, reference_ki67):
    tiles, summary = evaluate_consistency([real_derived_he], [real_derived_he], reference_ki67)
    assert summary.values["nuclei_f1"] == pytest.approx(1.0)
    assert summary.values["nuclei_dice"] == pytest.approx(1.0)
    assert summary.values["glass_kept"] == pytest.approx(1.0)
    assert summary.values["eosin_ratio"] == pytest.approx(1.0)
    assert "eosin_left" in summary.flags and not summary.consistent
    assert "inverted" not in summary.flags and "nuclei_lost" not in summary.flags


def test_colour_inverted_image_is_flagged_inverted(real_derived_he, synthetic_he):
    for he in (real_derived_he, synthetic_he[0]):
        _, summary = evaluate_consistency([he], [255 - he])
        assert summary.values["nuclear_correlation"] < -0.3
        assert {"inverted", "nuclei_lost", "glass_lost"} <= set(summary.flags)


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_restained_he_scores_high_and_its_index_matches_the_chosen_share(real_derived_he, share):
    virtual = restained(real_derived_he, share)
    _, summary = evaluate_consistency([real_derived_he], [virtual])
    values = summary.values
    assert values["nuclei_f1"] >= 0.8
    assert values["glass_kept"] >= 0.95
    assert values["eosin_ratio"] <= 0.05
    assert values["dab_outside_nuclei"] <= 0.02
    labels = segment_nuclei(real_derived_he)
    assert labels.max() >= 50
    chosen = np.random.default_rng(0).random(labels.max()) < share
    assert values["virtual_index_he_nuclei"] == pytest.approx(chosen.mean(), abs=0.03)
    assert summary.flags == []


def test_restained_synthetic_he_passes_too(synthetic_he):
    virtual = np.stack([restained(he, 0.25, seed) for seed, he in enumerate(synthetic_he)])
    tiles, summary = evaluate_consistency(synthetic_he, virtual)
    assert len(tiles) == 3 and summary.tiles == 3
    assert summary.values["nuclei_f1"] >= 0.8 and summary.flags == []


def test_positivity_far_above_the_reference_is_flagged_as_hallucination(real_derived_he, reference_ki67):
    all_positive = restained(real_derived_he, 1.0)
    _, summary = evaluate_consistency([real_derived_he], [all_positive], reference_ki67)
    reference = summary.reference.index
    assert reference == pytest.approx(0.2, abs=0.05)
    assert summary.values["index_difference"] == pytest.approx(summary.values["virtual_index_he_nuclei"] - reference)
    assert "hallucinated_positivity" in summary.flags
    assert "not a diagnosis" in summary.verdict() and "hallucinated" in summary.verdict()
    calibrated = restained(real_derived_he, reference)
    _, calibrated_summary = evaluate_consistency([real_derived_he], [calibrated], reference_ki67)
    assert "hallucinated_positivity" not in calibrated_summary.flags
    assert abs(calibrated_summary.values["index_difference"]) < 0.1


def test_brown_stroma_is_flagged(real_derived_he):
    virtual = restained(real_derived_he, 0.2)
    amounts = stain_concentrations(virtual).astype(np.float64)
    tissue = ~glass_mask(real_derived_he, 200, 25)
    amounts[..., 2] = np.where(tissue, 0.12, amounts[..., 2])  # DAB over every tissue pixel
    brown = np.clip(np.rint(hed2rgb(amounts) * 255), 0, 255).astype(np.uint8)
    _, summary = evaluate_consistency([real_derived_he], [brown])
    assert summary.values["dab_outside_nuclei"] > 0.5
    assert "brown_stroma" in summary.flags


def test_blank_virtual_loses_nuclei(synthetic_he):
    blank = np.full_like(synthetic_he[0], 245)
    result = tile_consistency(synthetic_he[0], blank)
    assert result.he_nuclei > 10 and result.virtual_nuclei == 0
    assert result.nuclei_f1 == 0.0 and result.nuclei_recall == 0.0


def test_shifted_nuclei_stop_matching_beyond_the_match_distance():
    points = np.array([[10.0, 10.0], [40.0, 40.0], [70.0, 20.0]])
    assert match_nuclei(points, points + 2.0, max_distance=3.0) == 3
    assert match_nuclei(points, points + 5.0, max_distance=3.0) == 0
    # one-to-one: two candidates for one nucleus count once
    assert match_nuclei(points[:1], np.array([[10.0, 11.0], [11.0, 10.0]]), max_distance=3.0) == 1


def test_match_distance_option_changes_the_score(real_derived_he):
    shifted = np.roll(restained(real_derived_he, 0.2), 4, axis=1)
    loose = tile_consistency(real_derived_he, shifted, ConsistencyOptions(match_distance=8.0))
    strict = tile_consistency(real_derived_he, shifted, ConsistencyOptions(match_distance=2.0))
    assert loose.nuclei_f1 > 0.6 > strict.nuclei_f1


def test_tiles_without_glass_leave_glass_undefined_and_raise_no_glass_flag(synthetic_he):
    tissue_only = synthetic_he[0][:, :, :] * 0 + np.array([200, 120, 170], np.uint8)
    result = tile_consistency(tissue_only, tissue_only)
    assert np.isnan(result.glass_kept)
    assert "glass_lost" not in raise_flags({"glass_kept": result.glass_kept})


def test_thresholds_are_options():
    values = {"nuclei_f1": 0.65, "glass_kept": 0.95, "nuclear_correlation": 0.5, "index_difference": 0.15}
    assert raise_flags(values) == []
    strict = ConsistencyThresholds(min_nuclei_f1=0.7, max_index_excess=0.1)
    assert raise_flags(values, strict) == ["nuclei_lost", "hallucinated_positivity"]


def test_sizes_must_match(synthetic_he):
    with pytest.raises(ValueError, match="differ in size"):
        tile_consistency(synthetic_he[0], synthetic_he[0][:64])
