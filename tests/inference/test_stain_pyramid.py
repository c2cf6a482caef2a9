"""Slide output: a streamed pyramidal TIFF that OpenSlide and tiffslide open, aligned with the input."""

import cv2
import keras
import numpy as np
import openslide
import pytest
import tifffile
import tiffslide

from virtual_ihc.data.synthetic import make_layout, render_he
from virtual_ihc.export import export_saved_model
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.stitching import StitchOptions
from virtual_ihc.inference.whole_slide import StainOptions, partial_dir, stain_file
from virtual_ihc.io.tiff_pyramid import TIFF_TILE, StreamedPyramid, TiffPyramidWriter, halve, level_shapes
from virtual_ihc.slides.synthetic_slides import write_image_as_slide

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
    options = StainOptions(StitchOptions(tile_size=256, overlap=64, keep_background=True), compression="deflate",
                           glass_colour=None)  # the identity model's output compared with the input
    return stain_file(slide[0], output, identity_model, options)


def test_halve_is_the_2x2_area_average():
    image = np.random.default_rng(1).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    expected = image[:8].reshape(4, 2, 6, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(halve(image) - expected).max() <= 0.5 + 1e-9


def stream(image, path, bands, compression="deflate", mpp=0.5):
    """Write ``image`` through a :class:`StreamedPyramid`, in bands of the given heights (cycled)."""
    pyramid = StreamedPyramid(TiffPyramidWriter(path, level_shapes(*image.shape[:2]), compression, mpp))
    y, index = 0, 0
    while y < len(image):
        pyramid.add_rows(image[y:y + bands[index % len(bands)]])
        y, index = y + bands[index % len(bands)], index + 1
    return pyramid.finish()


@pytest.mark.parametrize("bands", [[1000], [448], [100, 37, 300], [7]])
def test_streamed_pyramid_equals_the_image_and_its_halvings_whatever_the_bands(tmp_path, bands):
    image = np.random.default_rng(2).integers(0, 256, (1031, 777, 3), dtype=np.uint8)
    path = stream(image, tmp_path / "out.tif", bands)
    with tifffile.TiffFile(path) as tif:
        levels = [page.asarray() for page in tif.pages]
        assert tif.is_bigtiff and [page.tilewidth for page in tif.pages] == [TIFF_TILE] * len(levels)
    expected = [image]
    for _ in level_shapes(*image.shape[:2])[1:]:
        expected.append(halve(expected[-1]))
    assert [level.shape[:2] for level in levels] == level_shapes(1031, 777) == [(1031, 777), (515, 388)]
    for level, reference in zip(levels, expected, strict=True):
        np.testing.assert_array_equal(level, reference)


def test_streamed_jpeg_tiles_decode_like_tifffiles_own(tmp_path):
    image = render_he(make_layout(np.random.default_rng(4), (600, 530)), np.random.default_rng(4))
    ours = stream(image, tmp_path / "ours.tif", [300], compression="jpeg")
    theirs = write_image_as_slide(tmp_path / "theirs.tif", image, mpp=0.5)  # tifffile, JPEG
    with openslide.OpenSlide(str(ours)) as a, openslide.OpenSlide(str(theirs)) as b:
        assert a.level_dimensions == b.level_dimensions
        np.testing.assert_array_equal(np.asarray(a.read_region((0, 0), 0, a.dimensions)),
                                      np.asarray(b.read_region((0, 0), 0, b.dimensions)))


def test_a_writer_continued_from_its_state_drops_later_tiles_and_finishes(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (700, 600, 3), dtype=np.uint8)
    path = tmp_path / "out.tif"
    pyramid = StreamedPyramid(TiffPyramidWriter(path, level_shapes(700, 600), "deflate", None))
    pyramid.add_rows(image[:300])
    state = {key: np.array(value) for key, value in pyramid.state().items()}
    pyramid.add_rows(image[300:600])  # work lost in a crash: written after the state was taken
    pyramid.writer.close()
    resumed = StreamedPyramid(TiffPyramidWriter(path, level_shapes(700, 600), "deflate", None, state), state)
    resumed.add_rows(image[300:])
    resumed.finish()
    np.testing.assert_array_equal(tifffile.imread(path), image)
    assert path.stat().st_size < 1.1 * stream(image, tmp_path / "reference.tif", [700]).stat().st_size


def test_rows_past_the_level_height_are_an_error(tmp_path):
    pyramid = StreamedPyramid(TiffPyramidWriter(tmp_path / "out.tif", [(300, 300)], "deflate", None))
    with pytest.raises(ValueError, match="do not continue level 0"):
        pyramid.add_rows(np.zeros((301, 300, 3), np.uint8))
    pyramid.add_rows(np.zeros((299, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="got 299 of its 300 rows"):
        pyramid.finish()


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
    options = StainOptions(StitchOptions(tile_size=512, overlap=64, keep_background=True), compression="jpeg",
                           glass_colour=None)
    result = stain_file(slide[0], tmp_path / "ki67.tiff", identity_model, options)
    with openslide.OpenSlide(str(result.output)) as out:
        level0 = np.asarray(out.read_region((0, 0), 0, out.dimensions).convert("RGB")).astype(float)
    assert np.abs(level0 - slide[1]).mean() < 4  # two JPEG encodings


