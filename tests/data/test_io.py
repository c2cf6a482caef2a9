import cv2
import numpy as np
import pytest
import tifffile

from virtual_ihc.data.io import ImageReadError, read_image_rgb, to_rgb_uint8, write_image_rgb


def test_png_round_trip_keeps_rgb_order(tmp_path):
    image = np.zeros((8, 10, 3), np.uint8)
    image[..., 0] = 200  # red
    path = write_image_rgb(tmp_path / "red.png", image)
    np.testing.assert_array_equal(read_image_rgb(path), image)
    assert not list(tmp_path.glob(".*tmp*"))


def test_grayscale_rgba_and_16_bit_become_rgb_uint8(tmp_path):
    gray = np.full((6, 6), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA
    rgba[..., 3] = 0  # fully transparent -> white
    rgba[0, 0, 3] = 255  # one opaque red pixel
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    deep = np.full((6, 6, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    tifffile.imwrite(tmp_path / "deep.tif", np.full((6, 6, 3), 257 * 10, np.uint16))

    assert read_image_rgb(tmp_path / "gray.png").tolist() == np.full((6, 6, 3), 77).tolist()
    converted = read_image_rgb(tmp_path / "rgba.png")
    assert converted[0, 0].tolist() == [255, 0, 0] and converted[1, 1].tolist() == [255, 255, 255]
    assert read_image_rgb(tmp_path / "deep.png").max() == 255
    tiff = read_image_rgb(tmp_path / "deep.tif")
    assert tiff.dtype == np.uint8 and tiff.shape == (6, 6, 3) and tiff[0, 0, 0] == 10


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_unreadable_files_raise_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_image_rgb(path)


def test_unsupported_shapes_are_rejected():
    with pytest.raises(ImageReadError, match="channel"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))


def test_opaque_rgba_regions_take_the_fast_path_with_the_same_pixels():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgba[..., :3])
    rgba[0, 0, 3] = 0  # one transparent pixel: composited over white
    blended = to_rgb_uint8(rgba)
    assert blended[0, 0].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(blended[1:], rgba[1:, :, :3])
