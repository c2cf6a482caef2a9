"""Slide output: a streamed pyramidal TIFF that OpenSlide and tiffslide open, aligned with the input."""

import cv2
import keras
import numpy as np
import openslide
import pytest
import tiffslide

from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.slides.synthetic_slides import write_image_as_slide
from virtual_ihc.export import export_saved_model
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.pyramid import RawImage, reduce_by_two
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.whole_slide import StainOptions, partial_dir, stain_file

MPP = 0.5


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory):
    generator = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    return StainModel(export_saved_model(generator, tmp_path_factory.mktemp("identity") / "he_to_ki67"))


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 1100 x 1300 px JPEG-compressed H&E slide at 0.5 µm/px with a reduced level, and its pixels."""
    rng = np.random.default_rng(3)
    image = render_he(make_layout(rng, (1100, 1300)), rng)
    return write_image_as_slide(tmp_path_factory.mktemp("slide") / "he.tif", image, mpp=MPP), image


@pytest.fixture(scope="module")
def stained(slide, identity_model, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / "ki67.tif"
    options = StainOptions(StitchOptions(tile_size=256, overlap=64, keep_background=True), compression="deflate")
    return stain_file(slide[0], output, identity_model, options)


def test_raw_image_round_trips_rows(tmp_path):
    raw = RawImage(tmp_path / "x.raw", 10, 7, create=True)
    rows = np.random.default_rng(0).integers(0, 256, (4, 7, 3), dtype=np.uint8)
    raw.write_rows(3, rows)
    np.testing.assert_array_equal(RawImage(tmp_path / "x.raw", 10, 7).read_rows(3, 7), rows)
    assert np.all(raw.read_rows(0, 3) == 0)
    with pytest.raises(ValueError, match="do not fit"):
        raw.write_rows(8, rows)


def test_reduce_by_two_is_2x2_area_average(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    raw = RawImage(tmp_path / "x.raw", 9, 12, create=True)
    raw.write_rows(0, image)
    reduced = reduce_by_two(raw, tmp_path / "y.raw").read_rows(0, 4)
    expected = image[:8].reshape(4, 2, 6, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(reduced - expected).max() <= 0.5 + 1e-9


def test_openslide_opens_output_with_input_size_and_mpp(slide, stained):
    with openslide.OpenSlide(str(stained.output)) as out, openslide.OpenSlide(str(slide[0])) as source:
        assert out.dimensions == source.dimensions == (1300, 1100)
        assert float(out.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP)
        assert float(out.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(MPP)
        assert out.level_count >= 3 and out.level_downsamples[:3] == (1.0, 2.0, 4.0)
        level0 = np.asarray(out.read_region((0, 0), 0, out.dimensions).convert("RGB"))
        source_level0 = np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))
    np.testing.assert_array_equal(level0, source_level0)  # identity model, lossless output
    assert not partial_dir(stained.output).exists()


def test_tiffslide_opens_output_with_the_same_levels(stained):
    with tiffslide.TiffSlide(str(stained.output)) as out, openslide.OpenSlide(str(stained.output)) as reference:
        assert out.level_dimensions == reference.level_dimensions
        assert float(out.properties[tiffslide.PROPERTY_NAME_MPP_X]) == pytest.approx(MPP)


def test_reduced_levels_match_level0(stained):
    with openslide.OpenSlide(str(stained.output)) as out:
        level0 = np.asarray(out.read_region((0, 0), 0, out.dimensions).convert("RGB"))
        for level in range(1, out.level_count):
            width, height = out.level_dimensions[level]
            reduced = np.asarray(out.read_region((0, 0), level, (width, height)).convert("RGB")).astype(float)
            factor = int(out.level_downsamples[level])
            expected = cv2.resize(level0[:height * factor, :width * factor], (width, height),
                                  interpolation=cv2.INTER_AREA).astype(float)
            # levels are reduced 2x at a time, each rounded: at most half a grey level per step
            assert np.abs(reduced - expected).max() <= 0.5 * np.log2(factor) + 1


def test_jpeg_output_stays_close_to_the_input(slide, identity_model, tmp_path):
    options = StainOptions(StitchOptions(tile_size=512, overlap=64, keep_background=True), compression="jpeg")
    result = stain_file(slide[0], tmp_path / "ki67.tiff", identity_model, options)
    with openslide.OpenSlide(str(result.output)) as out:
        level0 = np.asarray(out.read_region((0, 0), 0, out.dimensions).convert("RGB")).astype(float)
    assert np.abs(level0 - slide[1]).mean() < 4  # two JPEG encodings


