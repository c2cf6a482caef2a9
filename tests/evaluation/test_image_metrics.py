"""Reconstruction and paired image metrics against scikit-image and closed forms."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from virtual_ihc.evaluation.image_metrics import PSNR_CAP_DB, image_metrics


def _tiles(seed: int, count: int = 3, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A smooth-ish random batch and a noisy copy, ``uint8 (count, size, size, 3)``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (count, size // 4, size // 4, 3)).repeat(4, axis=1).repeat(4, axis=2)
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255)
    return base.astype(np.uint8), noisy.astype(np.uint8)


def test_ssim_matches_scikit_image_gaussian_ssim():
    reference, candidate = _tiles(0)
    ours = image_metrics(reference, candidate)["ssim"]
    expected = [structural_similarity(r / 255.0, c / 255.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0, channel_axis=-1)
                for r, c in zip(reference, candidate)]
    np.testing.assert_allclose(ours, expected, atol=1e-4)  # measured agreement: ~2e-6 (float32)


def test_psnr_matches_scikit_image():
    reference, candidate = _tiles(1)
    expected = [peak_signal_noise_ratio(r / 255.0, c / 255.0, data_range=1.0) for r, c in zip(reference, candidate)]
    np.testing.assert_allclose(image_metrics(reference, candidate)["psnr"], expected, atol=1e-3)


def test_mae_is_mean_absolute_difference_in_unit_range():
    reference = np.zeros((1, 16, 16, 3), np.uint8)
    candidate = np.full((1, 16, 16, 3), 51, np.uint8)
    assert image_metrics(reference, candidate)["mae"][0] == pytest.approx(0.2)


def test_identical_images_score_perfectly():
    reference, _ = _tiles(2)
    metrics = image_metrics(reference, reference)
    np.testing.assert_allclose(metrics["ssim"], 1.0, atol=1e-5)
    np.testing.assert_allclose(metrics["ms_ssim"], 1.0, atol=1e-5)
    np.testing.assert_array_equal(metrics["psnr"], PSNR_CAP_DB)
    np.testing.assert_array_equal(metrics["mae"], 0.0)


def test_ms_ssim_falls_with_more_noise():
    rng = np.random.default_rng(3)
    reference = _tiles(3, count=1, size=96)[0]
    scores = [image_metrics(reference, np.clip(reference + rng.normal(0, sigma, reference.shape), 0, 255)
                            .astype(np.uint8))["ms_ssim"][0] for sigma in (5, 20, 60)]
    assert scores[0] > scores[1] > scores[2]


def test_ms_ssim_of_a_single_scale_tile_is_ssim():
    # 16 px fits only one 11x11 scale: MS-SSIM reduces to SSIM
    reference, candidate = _tiles(4, size=16)
    metrics = image_metrics(reference, candidate)
    np.testing.assert_allclose(metrics["ms_ssim"], metrics["ssim"], atol=1e-5)


def test_rejects_mismatched_or_non_uint8_batches():
    reference, candidate = _tiles(5)
    with pytest.raises(ValueError, match="shapes differ"):
        image_metrics(reference, candidate[:, :40])
    with pytest.raises(ValueError, match="uint8"):
        image_metrics(reference.astype(np.float32), candidate.astype(np.float32))
