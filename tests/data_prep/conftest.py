"""Shared builders for the data_prep tests: small synthetic slides written as pyramidal TIFFs."""

from __future__ import annotations

import numpy as np
import pytest

from virtual_ihc.data.synthetic_slides import write_image_as_slide

GLASS = 245
TISSUE = (200, 110, 160)


def rectangle_slide_image(height: int, width: int, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """``uint8`` RGB glass with one textured pink tissue rectangle ``box = (x0, y0, x1, y1)``."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), GLASS, np.uint8)
    x0, y0, x1, y1 = box
    noise = rng.integers(-12, 13, (y1 - y0, x1 - x0, 1))
    image[y0:y1, x0:x1] = np.clip(np.array(TISSUE) + noise, 0, 255).astype(np.uint8)
    return image


@pytest.fixture
def rectangle_image():
    """:func:`rectangle_slide_image` (a fixture, so test modules need not import this conftest)."""
    return rectangle_slide_image


@pytest.fixture
def make_slide(tmp_path):
    """``make_slide(name, image, mpp=0.25)`` writes a pyramidal tiled TIFF under ``tmp_path``."""

    def make(name: str, image: np.ndarray, mpp: float | None = 0.25, **kwargs):
        return write_image_as_slide(tmp_path / name, image, mpp=mpp, **kwargs)

    return make
