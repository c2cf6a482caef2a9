"""Consecutive-section registration on a synthetic pair with a known affine + elastic deformation."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from virtual_ihc.cli import main
from virtual_ihc.data.synthetic import make_layout, render_he, render_ki67, smooth_deformation
from virtual_ihc.slides.registered_pairs import load_registration
from virtual_ihc.slides.registration import Registration, checkerboard, mutual_information, normalized_cross_correlation


def register_main(argv: list[str]) -> int:
    """``python -m data_prep.register_pairs ARGV`` (``virtual-ihc register``)."""
    return main(["register", *argv])


SIZE = 640
#: the Ki-67 section is rotated 4 degrees, scaled 3 %, sheared, shifted and elastically deformed
ANGLE, SCALE, SHEAR, SHIFT, ELASTIC = np.deg2rad(4.0), 1.03, 0.02, np.array([-25.0, 18.0]), 6.0


class KnownDeformation:
    """Ki-67 pixel ``q`` shows the aligned layout at ``G(q) = B q + c + e(q)``."""

    def __init__(self, rng: np.random.Generator, size: int):
        rotation = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
        self.matrix = SCALE * rotation + np.array([[0.0, SHEAR], [0.0, 0.0]])
        self.shift = SHIFT
        self.elastic = smooth_deformation(rng, (size, size), max_shift=ELASTIC)[..., ::-1].copy()  # (dx, dy)

    def _elastic_at(self, points: np.ndarray) -> np.ndarray:
        grid = points.astype(np.float32).reshape(-1, 1, 2)
        return cv2.remap(self.elastic, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE).reshape(-1, 2)

    def apply_to_image(self, aligned: np.ndarray) -> np.ndarray:
        grid_y, grid_x = np.mgrid[0:aligned.shape[0], 0:aligned.shape[1]].astype(np.float32)
        points = np.stack([grid_x, grid_y], axis=-1) @ self.matrix.T.astype(np.float32) + self.shift
        points = points + self.elastic
        return cv2.remap(aligned, points[..., 0].astype(np.float32), points[..., 1].astype(np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))

    def true_positions(self, he_points: np.ndarray) -> np.ndarray:
        """Ki-67 positions of H&E points: solve ``G(q) = p`` by fixed-point iteration."""
        inverse = np.linalg.inv(self.matrix)
        positions = (he_points - self.shift) @ inverse.T
        for _ in range(50):
            positions = (he_points - self.shift - self._elastic_at(positions)) @ inverse.T
        return positions


@pytest.fixture(scope="module")
def synthetic_pair():
    rng = np.random.default_rng(0)
    layout = make_layout(rng, (SIZE, SIZE), nucleus_radius=5.0)
    he, ki67_aligned = render_he(layout, rng), render_ki67(layout, rng)
    deformation = KnownDeformation(rng, SIZE)
    landmarks = layout.centers[:, ::-1].astype(np.float64)  # nucleus centres as (x, y)
    return he, deformation.apply_to_image(ki67_aligned), landmarks, deformation.true_positions(landmarks), ki67_aligned


@pytest.fixture(scope="module")
def registered(synthetic_pair, tmp_path_factory):
    from virtual_ihc.slides.synthetic_slides import write_image_as_slide

    he, ki67, _, _, _ = synthetic_pair
    folder = tmp_path_factory.mktemp("registration")
    write_image_as_slide(folder / "case01_he.tif", he, mpp=0.5)
    write_image_as_slide(folder / "case01_ki67.tif", ki67, mpp=0.5)
    code = register_main([str(folder / "case01_he.tif"), str(folder / "case01_ki67.tif"), "--out",
                          str(folder / "out"), "--target-mpp", "0.5", "--tile-size", "128", "--pair-id", "case01"])
    assert code == 0
    return folder / "out"


@pytest.mark.slow
def test_landmark_error_is_within_two_pixels_median_and_five_at_95th_percentile(synthetic_pair, registered):
    _, _, landmarks, truth, _ = synthetic_pair
    inside = ((truth > 16) & (truth < SIZE - 16)).all(axis=1)
    registration = load_registration(registered / "transforms" / "case01.npz")
    errors = np.linalg.norm(registration.map_points(landmarks[inside]) - truth[inside], axis=1)
    assert inside.sum() > 300
    assert np.median(errors) <= 2.0
    assert np.percentile(errors, 95) <= 5.0


@pytest.mark.slow
def test_dense_step_improves_on_affine_which_improves_on_nothing(registered):
    with open(registered / "registration.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["pair_id"] == "case01"
    assert float(row["ncc_before"]) < 0.2 < float(row["ncc_affine"]) < float(row["ncc_after"])
    assert float(row["mi_before"]) < float(row["mi_after"])
    assert float(row["affine_a"]) == pytest.approx(np.cos(ANGLE) / SCALE, abs=0.03)


@pytest.mark.slow
def test_paired_tiles_share_names_and_show_the_same_nuclei(synthetic_pair, registered):
    from virtual_ihc.io.images import read_image_rgb
    from virtual_ihc.slides.registration import nuclear_density

    he_names = sorted(path.name for path in (registered / "pairs" / "he").glob("*.png"))
    ki67_names = sorted(path.name for path in (registered / "pairs" / "ki67").glob("*.png"))
    assert he_names == ki67_names and len(he_names) >= 20
    assert (registered / "qc" / "case01_checkerboard.png").exists()
    assert (registered / "qc" / "case01_overlay.png").exists()
    name = "case01_x256_y256.png"
    he, ki67 = (read_image_rgb(registered / "pairs" / stain / name) for stain in ("he", "ki67"))
    registered_ncc = normalized_cross_correlation(nuclear_density(he), nuclear_density(ki67))
    # against the same tile perfectly aligned (the ceiling: a Ki-67 tile's brown positive and blue
    # negative nuclei never correlate fully with an H&E's) and an unrelated tile of the same slide
    aligned = synthetic_pair[4]
    perfect = normalized_cross_correlation(nuclear_density(he), nuclear_density(aligned[256:384, 256:384]))
    unrelated = normalized_cross_correlation(nuclear_density(he), nuclear_density(aligned[0:128, 0:128]))
    assert registered_ncc > 0.85 * perfect and perfect > 0.3 > 10 * abs(unrelated)


def test_rotation_search_recovers_a_quarter_turn():
    from virtual_ihc.slides.registration import register_images

    rng = np.random.default_rng(3)
    layout = make_layout(rng, (320, 320), nucleus_radius=4.0)
    he, ki67 = render_he(layout, rng), render_ki67(layout, rng)
    rotation = cv2.getRotationMatrix2D((160, 160), 90, 1.0)  # H&E (x, y) -> Ki-67 (x, y)
    ki67 = cv2.warpAffine(ki67, rotation, (320, 320), borderValue=(255, 255, 255))
    landmarks = layout.centers[:, ::-1].astype(np.float64)
    truth = landmarks @ rotation[:, :2].T + rotation[:, 2]
    errors = np.linalg.norm(register_images(he, ki67).registration.map_points(landmarks) - truth, axis=1)
    assert np.median(errors) <= 1.0


def test_missing_mpp_ends_with_a_message_naming_file_and_option(tmp_path, capsys):
    from virtual_ihc.slides.synthetic_slides import write_image_as_slide

    image = np.full((256, 256, 3), 200, np.uint8)
    he = write_image_as_slide(tmp_path / "he_nompp.tif", image)
    ki67 = write_image_as_slide(tmp_path / "ki67_nompp.tif", image)
    code = register_main([str(he), str(ki67), "--out", str(tmp_path / "out"), "--target-mag", "20"])
    message = capsys.readouterr().err
    assert code == 2
    assert "he_nompp.tif" in message and "--mpp" in message


def test_identity_registration_maps_points_to_themselves():
    registration = Registration(np.hstack([np.eye(2), np.zeros((2, 1))]), np.zeros((4, 4, 2), np.float32), 8.0)
    points = np.array([[0.0, 0.0], [10.5, 20.25], [31.0, 3.0]])
    np.testing.assert_allclose(registration.map_points(points), points, atol=1e-5)


def test_flow_is_scaled_to_working_pixels_before_the_affine():
    flow = np.zeros((4, 4, 2), np.float32)
    flow[..., 0] = 1.5  # 1.5 flow px = 3 working px along x
    affine = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, -5.0]])
    mapped = Registration(affine, flow, 2.0).map_points(np.array([[2.0, 2.0]]))
    np.testing.assert_allclose(mapped, [[15.0, -3.0]], atol=1e-5)


def test_grid_and_point_mappings_agree():
    rng = np.random.default_rng(1)
    flow = rng.normal(0, 2, (6, 8, 2)).astype(np.float32)
    registration = Registration(np.array([[0.98, 0.05, 12.0], [-0.04, 1.02, -7.0]]), flow, 4.0)
    map_x, map_y = registration.map_grid(3, 5, 20, 10)
    grid_y, grid_x = np.mgrid[5:15, 3:23]
    points = registration.map_points(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1))
    np.testing.assert_allclose(np.stack([map_x.ravel(), map_y.ravel()], axis=1), points, atol=1e-3)


def test_similarity_measures_tell_aligned_from_unrelated():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 2)
    other = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 2)
    assert normalized_cross_correlation(image, 2 * image + 1) == pytest.approx(1.0)
    assert abs(normalized_cross_correlation(image, other)) < 0.3
    assert mutual_information(image, image) > 3 * mutual_information(image, other)


def test_checkerboard_alternates_squares():
    board = checkerboard(np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8), squares=2)
    np.testing.assert_array_equal(board[[0, 0, 4, 4], [0, 4, 0, 4]], [0, 1, 1, 0])
