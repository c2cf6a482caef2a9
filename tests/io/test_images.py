import os
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile

from virtual_ihc.io.images import (ImageReadError, read_image_rgb, remove_orphaned_temporaries, to_rgb_uint8,
                                   write_image_rgb)


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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("name", ["tile.png", "tile.jpg", "tile.tif"])
def test_written_images_get_the_users_umask(tmp_path, umask, mode, name):
    previous = os.umask(umask)
    try:
        path = write_image_rgb(tmp_path / name, np.zeros((8, 8, 3), np.uint8))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_orphaned_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "sub").mkdir()
    orphans = [tmp_path / f".a.png.{dead_pid}.tmp.png", tmp_path / "sub" / f".b.tif.{dead_pid}.tmp.tif",
               tmp_path / ".c.png.x8_k2abq.tmp.png"]  # the last: tempfile.mkstemp form of older versions
    live = tmp_path / f".d.png.{os.getpid()}.tmp.png"
    kept = [tmp_path / "e.png", tmp_path / ".hidden.png", live]
    for path in orphans + kept:
        path.write_bytes(b"x")
    assert remove_orphaned_temporaries(tmp_path) == len(orphans)
    assert not any(path.exists() for path in orphans)
    assert all(path.exists() for path in kept)
