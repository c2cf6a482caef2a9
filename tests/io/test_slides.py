"""Slide reader: backends, metadata, level choice and region reading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from virtual_ihc.io.images import write_image_rgb
from virtual_ihc.io.slides import (SlideMetadataError, SlideReadError, choose_level, open_slide, output_size,
                                   read_downsampled, read_scaled_region, target_downsample)


@pytest.fixture
def slide_image(rectangle_image):
    return rectangle_image(1024, 1536, (256, 128, 1024, 768))


def test_openslide_reads_levels_and_mpp_of_written_pyramid(make_slide, slide_image):
    path = make_slide("pyramid.tif", slide_image, mpp=0.25, min_level_side=256)
    with open_slide(path) as slide:
        assert slide.backend == "openslide"
        assert slide.dimensions == (1536, 1024)
        assert slide.level_dimensions == [(1536, 1024), (768, 512), (384, 256)]
        assert slide.level_downsamples == pytest.approx([1.0, 2.0, 4.0])
        assert slide.mpp == pytest.approx(0.25)


def test_subifd_pyramid_is_read_with_tiffslide(tmp_path, slide_image):
    path = tmp_path / "subifd.tif"
    half = cv2.resize(slide_image, (768, 512), interpolation=cv2.INTER_AREA)
    resolution = dict(resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(slide_image, tile=(256, 256), photometric="rgb", subifds=1, **resolution)
        tif.write(half, tile=(256, 256), photometric="rgb", subfiletype=1)
    with open_slide(path) as slide:
        assert slide.backend == "tiffslide"
        assert slide.level_count == 2
        assert slide.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(slide.read_region(300, 200, 0, 16, 8), slide_image[200:208, 300:316])


def test_stripped_tiff_that_openslide_refuses_opens_with_tiffslide(tmp_path, slide_image):
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(path, slide_image, photometric="rgb", rowsperstrip=64)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.backend == "tiffslide"
        np.testing.assert_array_equal(slide.read_region(10, 700, 0, 5, 3), slide_image[700:703, 10:15])


def test_plain_png_is_a_one_level_slide_padded_with_white(tmp_path, slide_image):
    path = write_image_rgb(tmp_path / "plain.png", slide_image)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.backend == "image"
        assert slide.level_count == 1 and slide.mpp == 0.5
        region = slide.read_region(1530, 1020, 0, 10, 10)
    np.testing.assert_array_equal(region[:4, :6], slide_image[1020:, 1530:])
    assert (region[4:] == 255).all() and (region[:, 6:] == 255).all()


def test_read_region_matches_pixels_at_every_level(make_slide, slide_image):
    path = make_slide("levels.tif", slide_image, min_level_side=256)
    with open_slide(path) as slide:
        full = slide.read_region(200, 100, 0, 128, 64)
        half = slide.read_region(200, 100, 1, 64, 32)
    assert full.shape == (64, 128, 3) and full.dtype == np.uint8
    assert np.abs(full.astype(int) - slide_image[100:164, 200:328]).mean() < 4  # JPEG tiles
    expected_half = cv2.resize(slide_image, (768, 512), interpolation=cv2.INTER_AREA)[50:82, 100:164]
    assert np.abs(half.astype(int) - expected_half).mean() < 4


@pytest.mark.parametrize("target, expected_level, expected_downsample, expected_scale", [
    (dict(target_mag=40), 0, 1.0, 1.0),
    (dict(target_mag=20), 1, 2.0, 1.0),
    (dict(target_mpp=1.0), 2, 4.0, 1.0),
    (dict(target_mpp=0.8), 1, 3.2, 0.625),
    (dict(target_mpp=2.0), 2, 8.0, 0.5),
])
def test_choose_level_takes_coarsest_level_not_coarser_than_target(make_slide, slide_image, target,
                                                                   expected_level, expected_downsample,
                                                                   expected_scale):
    path = make_slide("choice.tif", slide_image, mpp=0.25, min_level_side=256)
    with open_slide(path) as slide:
        choice = choose_level(slide, **target)
    assert choice.level == expected_level
    assert choice.downsample == pytest.approx(expected_downsample)
    assert choice.scale == pytest.approx(expected_scale)


def test_objective_power_override_sets_magnification(make_slide, slide_image):
    path = make_slide("nompp.tif", slide_image, mpp=None)
    with open_slide(path, objective_power=40) as slide:
        assert target_downsample(slide, target_mag=10) == pytest.approx(4.0)
        assert target_downsample(slide, target_mpp=0.5) == pytest.approx(2.0)  # via mpp = 10 / magnification


def test_missing_mpp_without_override_names_file_and_option(make_slide, slide_image):
    path = make_slide("nompp.tif", slide_image, mpp=None)
    with open_slide(path) as slide:
        assert slide.mpp is None
        assert target_downsample(slide) == 1.0  # native resolution needs no metadata
        with pytest.raises(SlideMetadataError, match="nompp.tif") as error:
            choose_level(slide, target_mpp=0.5)
    assert "--mpp" in str(error.value)


def test_read_scaled_region_resizes_from_the_chosen_level(make_slide, slide_image):
    path = make_slide("scaled.tif", slide_image, mpp=0.25, min_level_side=256)
    with open_slide(path) as slide:
        choice = choose_level(slide, target_mpp=0.75)  # downsample 3 from level 1
        assert output_size(slide, choice) == (512, 341)
        tile = read_scaled_region(slide, choice, 100, 50, 40, 30)
    expected = cv2.resize(slide_image, (512, 341), interpolation=cv2.INTER_AREA)[50:80, 100:140]
    assert tile.shape == (30, 40, 3)
    assert np.abs(tile.astype(int) - expected).mean() < 6


def test_read_downsampled_reads_in_chunks(make_slide, slide_image, monkeypatch):
    monkeypatch.setattr("virtual_ihc.io.slides.READ_CHUNK", 100)
    path = make_slide("chunks.tif", slide_image, mpp=0.25, min_level_side=256)
    with open_slide(path) as slide:
        overview = read_downsampled(slide, 8)
    expected = cv2.resize(slide_image, (192, 128), interpolation=cv2.INTER_AREA)
    assert overview.shape == (128, 192, 3)
    assert np.abs(overview.astype(int) - expected).mean() < 4


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"slide,notes\n1,2\n", "not a readable")])
def test_unreadable_files_raise_slide_read_error_naming_file(tmp_path, content, reason):
    path = tmp_path / "broken.svs"
    path.write_bytes(content)
    with pytest.raises(SlideReadError, match=reason) as error:
        open_slide(path)
    assert "broken.svs" in str(error.value)


def test_truncated_tiff_fails_when_opened_or_read(make_slide, slide_image):
    path = make_slide("truncated.tif", slide_image)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(SlideReadError, match="truncated.tif"):
        with open_slide(path) as slide:
            slide.read_region(0, 0, 0, *slide.dimensions)
