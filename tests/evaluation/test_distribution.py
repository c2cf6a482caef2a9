"""FID and KID: closed forms, a brute-force reference, and their behaviour on InceptionV3 features."""

import numpy as np
import pytest
import scipy.linalg

from virtual_ihc.evaluation.distribution import (FID_MIN_SAMPLES, InceptionFeatures, fid_warning, frechet_distance,
                                                 kernel_inception_distance, polynomial_mmd2)


def _fid_with_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2)
                 + np.trace(cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b))))


@pytest.mark.parametrize("n, m, dims", [(10, 14, 32), (300, 250, 16)])  # fewer / more samples than dims
def test_fid_matches_the_matrix_square_root_formula(n, m, dims):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, dims))
    b = rng.normal(0.5, 1.0, size=(m, dims)) * rng.uniform(0.5, 2.0, dims)
    assert frechet_distance(a, b) == pytest.approx(_fid_with_sqrtm(a, b), rel=1e-6)


def test_fid_of_independent_axes_is_the_closed_form():
    # diagonal covariances: FID = |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, 3))
    z = (z - z.mean(0)) / z.std(0, ddof=1)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # exactly white sample covariance
    a = z * [1.0, 2.0, 0.5] + [0.0, 1.0, 0.0]
    b = z * [2.0, 2.0, 1.5] + [3.0, 1.0, 0.0]
    assert frechet_distance(a, b) == pytest.approx(9.0 + 1.0 + 0.0 + 1.0, rel=1e-6)


def test_polynomial_mmd_matches_a_brute_force_sum():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 4)), rng.normal(1.0, 1.0, size=(6, 4))
    k = lambda u, v: (u @ v / 4 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 8))
    same, _ = kernel_inception_distance(real, rng.normal(size=(200, 8)), subset_size=50, subsets=20)
    shifted, spread = kernel_inception_distance(real, rng.normal(0.7, 1.0, size=(200, 8)), subset_size=50,
                                                subsets=20)
    assert abs(same) < 0.05 < shifted
    assert spread > 0


def test_fid_warning_only_for_small_sets():
    assert "prefer KID" in fid_warning(50, 60)
    assert fid_warning(FID_MIN_SAMPLES, FID_MIN_SAMPLES + 1) is None


def test_too_few_samples_are_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((4, 3)))


@pytest.mark.slow
def test_inception_features_rank_a_colour_shifted_set_worse():
    rng = np.random.default_rng(3)
    tiles = rng.integers(60, 200, (6, 40, 40, 3)).astype(np.uint8)
    shifted = np.clip(tiles.astype(int) + [90, -60, -60], 0, 255).astype(np.uint8)
    inception = InceptionFeatures(weights=None, image_size=75)
    real, again, moved = inception(tiles), inception(tiles[::-1]), inception(shifted)
    assert real.shape == (6, 2048)
    assert frechet_distance(real, again) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(real, moved) > frechet_distance(real, again)
    assert kernel_inception_distance(real, moved)[0] > kernel_inception_distance(real, again)[0]


def test_inception_rejects_tiny_inputs():
    with pytest.raises(ValueError, match="at least 75"):
        InceptionFeatures(weights=None, image_size=32)


def test_unloadable_weights_file_is_an_os_error_naming_the_options(tmp_path):
    broken = tmp_path / "inception.h5"
    broken.write_bytes(b"not an h5 file")
    with pytest.raises(OSError, match="--fid-weights PATH"):
        InceptionFeatures(weights=str(broken), image_size=75)
