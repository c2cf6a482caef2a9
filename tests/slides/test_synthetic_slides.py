"""Synthetic consecutive sections: tissue on glass, and a Ki-67 section moved by the map it reports."""

import numpy as np
import pytest

from virtual_ihc.histology.tissue import tissue_mask
from virtual_ihc.io.slides import open_slide
from virtual_ihc.slides.registration import normalized_cross_correlation, nuclear_density
from virtual_ihc.slides.synthetic_slides import (consecutive_sections, elastic_field, section_mask,
                                                 write_consecutive_section_slides)


def _centroid_xy(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def test_section_is_one_piece_of_tissue_inside_a_frame_of_glass():
    mask = section_mask(np.random.default_rng(3), 200, tissue_fraction=0.4)
    assert mask.mean() == pytest.approx(0.4, abs=0.03)
    frame = np.ones_like(mask)
    frame[12:-12, 12:-12] = False
    assert not (mask & frame).any()


def test_he_shows_tissue_only_on_the_section():
    sections = consecutive_sections(256, seed=1)
    tissue = tissue_mask(sections.he)
    assert tissue[~sections.section].mean() < 0.02
    assert tissue[sections.section].mean() > 0.6


def test_ki67_to_he_maps_the_moved_section_back_onto_the_aligned_one():
    sections = consecutive_sections(256, seed=2, rotation=8.0, shift=(20.0, -12.0), elastic=0.0, tissue_fraction=0.3)
    moved, aligned = _centroid_xy(tissue_mask(sections.ki67)), _centroid_xy(tissue_mask(sections.ki67_aligned))
    assert np.linalg.norm(moved - aligned) > 15  # the section did move
    assert np.linalg.norm(sections.ki67_to_he(moved[None])[0] - aligned) < 1.0  # an affine map keeps centroids


def test_the_elastic_part_moves_each_neighbourhood_by_the_reported_shift():
    sections = consecutive_sections(320, seed=5, rotation=0.0, shift=(0.0, 0.0), elastic=10.0, tissue_fraction=0.6)
    moved, aligned = nuclear_density(sections.ki67), nuclear_density(sections.ki67_aligned)
    largest = 0.0
    for y in (120, 160, 200):
        for x in (120, 160, 200):
            window = moved[y - 24:y + 24, x - 24:x + 24]
            scores = {(dx, dy): normalized_cross_correlation(window, aligned[y + dy - 24:y + dy + 24,
                                                                             x + dx - 24:x + dx + 24])
                      for dy in range(-12, 13) for dx in range(-12, 13)}
            best = np.array(max(scores, key=scores.get), float)  # where the window's tissue lies on the H&E
            expected = sections.ki67_to_he(np.array([[x, y]]))[0] - [x, y]
            largest = max(largest, float(np.linalg.norm(expected)))
            assert np.linalg.norm(best - expected) < 2.0, (x, y, best, expected)  # the field bends in a window
    assert largest > 4.0


def test_the_aligned_ki67_lies_on_the_he_and_the_moved_one_does_not():
    sections = consecutive_sections(256, seed=2)
    he = nuclear_density(sections.he)
    aligned = normalized_cross_correlation(he, nuclear_density(sections.ki67_aligned))
    moved = normalized_cross_correlation(he, nuclear_density(sections.ki67))
    assert aligned > 0.5 and aligned > moved + 0.2


def test_without_motion_the_ki67_section_lies_on_the_he():
    sections = consecutive_sections(128, seed=0, rotation=0.0, shift=(0.0, 0.0), elastic=0.0)
    np.testing.assert_array_equal(sections.ki67, sections.ki67_aligned)


def test_elastic_field_reaches_its_largest_shift():
    field = elastic_field(np.random.default_rng(0), 64, 5.0)
    assert field.shape == (64, 64, 2)
    assert np.linalg.norm(field, axis=-1).max() == pytest.approx(5.0, rel=1e-4)


def test_written_slides_are_pyramids_with_their_resolution(tmp_path):
    he_path, ki67_path = write_consecutive_section_slides(tmp_path / "new" / "folder", 600, seed=0, mpp=0.5)
    for path in (he_path, ki67_path):
        with open_slide(path) as slide:
            assert slide.dimensions == (600, 600)
            assert slide.mpp == pytest.approx(0.5)
            assert slide.level_count >= 2


def test_a_slide_is_written_into_a_folder_that_does_not_exist_yet(tmp_path):
    from virtual_ihc.slides.synthetic_slides import write_image_as_slide

    path = write_image_as_slide(tmp_path / "slides" / "one.tif", np.full((64, 64, 3), 240, np.uint8))
    with open_slide(path) as slide:
        assert slide.dimensions == (64, 64)
