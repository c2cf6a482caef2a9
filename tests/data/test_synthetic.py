"""The built-in sample data: 20x tissue layouts with known nuclei and Ki-67 status, stained as real tissue reads.

The colour ranges are those measured with ``skimage.color.rgb2hed`` on real 20x tissue
(real H&E: tissue eosin about 0.02-0.04, nuclear hematoxylin about 0.05-0.12; real Ki-67:
positive nuclei DAB about 0.1-0.5, negative nuclei hematoxylin about 0.05-0.1, no eosin).
"""

import numpy as np
import pytest
from scipy import ndimage

from virtual_ihc.data.synthetic import (LYMPHOCYTE, SPINDLE, TUMOUR, TUMOUR_NUCLEUS_RADIUS, make_layout, render_he,
                                        render_ki67, render_pair, sample_tiles, write_sample_dataset)
from virtual_ihc.histology.consistency import default_match_distance, glass_mask, match_nuclei
from virtual_ihc.histology.ki67_index import tile_index
from virtual_ihc.histology.nuclei import mean_per_nucleus, nucleus_centroids, segment_nuclei
from virtual_ihc.histology.stains import stain_concentrations
from virtual_ihc.histology.tissue import saturation


@pytest.fixture(scope="module")
def rendered():
    """Six 128 px layouts at the 20x default, each rendered as H&E and as Ki-67: (layout, he, ki67)."""
    rng = np.random.default_rng(2024)
    layouts = [make_layout(rng, 128) for _ in range(6)]
    return [(layout, render_he(layout, rng), render_ki67(layout, rng)) for layout in layouts]


def nuclei_f1(layouts, images) -> float:
    """Object-level F1 of the layouts' nuclei against those ``segment_nuclei`` finds in the images."""
    matched = expected = found = 0
    for layout, image in zip(layouts, images):
        truth = nucleus_centroids(layout.nucleus_labels)  # of the part inside the tile (edges cut some nuclei)
        detected = nucleus_centroids(segment_nuclei(image))
        matched += match_nuclei(truth, detected, default_match_distance(layout.nucleus_labels))
        expected, found = expected + len(truth), found + len(detected)
    return 2 * matched / (expected + found)


def per_nucleus(amounts: np.ndarray, layout) -> np.ndarray:
    """Mean of one stain amount over each nucleus of the layout."""
    return mean_per_nucleus(amounts, layout.nucleus_labels)


def test_segmentation_finds_the_layout_nuclei_in_rendered_he(rendered):
    layouts, he, _ = zip(*rendered)
    assert sum(len(layout.positive) for layout in layouts) > 150
    assert nuclei_f1(layouts, he) >= 0.7


def test_segmentation_finds_the_layout_nuclei_in_rendered_ki67(rendered):
    layouts, _, ki67 = zip(*rendered)
    assert nuclei_f1(layouts, ki67) >= 0.7


def test_index_of_rendered_ki67_matches_the_layouts(rendered):
    layouts, _, ki67 = zip(*rendered)
    measured = [tile_index(tile) for tile in ki67]
    pooled = sum(tile.positive for tile in measured) / sum(tile.nuclei for tile in measured)
    truth = sum(layout.positive.sum() for layout in layouts) / sum(len(layout.positive) for layout in layouts)
    assert abs(pooled - truth) <= 0.05


def test_he_colours_fall_in_the_ranges_of_real_he(rendered):
    eosin, hematoxylin = [], []
    for layout, he, _ in rendered:
        amounts = stain_concentrations(he)
        eosin.append(amounts[..., 1][~glass_mask(he, 200, 25)])
        hematoxylin.append(per_nucleus(amounts[..., 0], layout))
    hematoxylin = np.concatenate(hematoxylin)
    assert 0.02 <= np.concatenate(eosin).mean() <= 0.04
    assert 0.05 <= hematoxylin.mean() <= 0.12
    assert np.mean((hematoxylin >= 0.04) & (hematoxylin <= 0.14)) >= 0.9


def test_ki67_colours_fall_in_the_ranges_of_real_ki67(rendered):
    positive_dab, negative_dab, negative_hematoxylin, eosin = [], [], [], []
    for layout, _, ki67 in rendered:
        amounts = stain_concentrations(ki67)
        dab, hematoxylin = per_nucleus(amounts[..., 2], layout), per_nucleus(amounts[..., 0], layout)
        positive_dab.append(dab[layout.positive])
        negative_dab.append(dab[~layout.positive])
        negative_hematoxylin.append(hematoxylin[~layout.positive])
        eosin.append(amounts[..., 1][~glass_mask(ki67, 200, 25)])
    positive_dab, negative_dab = np.concatenate(positive_dab), np.concatenate(negative_dab)
    assert 0.1 <= positive_dab.mean() <= 0.5
    assert 0.05 <= np.concatenate(negative_hematoxylin).mean() <= 0.1
    assert np.concatenate(eosin).mean() < 0.005
    # the index threshold (0.04) separates the two kinds of nuclei
    assert np.mean(positive_dab > 0.06) >= 0.9 and np.mean(negative_dab < 0.03) >= 0.95


def test_glass_is_white_in_he_and_nearly_white_in_ki67(rendered):
    seen = 0
    for layout, he, ki67 in rendered:
        empty = (layout.stroma + layout.cytoplasm + layout.blood == 0) & (layout.nucleus_labels == 0)
        glass = ndimage.binary_erosion(empty, iterations=3)  # away from the blurred tissue edge
        if glass.sum() < 20:
            continue
        seen += 1
        assert he[glass].mean() > 225 and saturation(he)[glass].mean() < 25
        assert ki67[glass].mean() > 215 and saturation(ki67)[glass].mean() < 25  # a faint beige tint
    assert seen >= 2


def test_stains_show_in_the_right_domain():
    pair = render_pair(np.random.default_rng(0), 128, positive_fraction=0.5)
    he, ki67 = stain_concentrations(pair.he), stain_concentrations(pair.ki67)
    assert he[..., 1].mean() > 3 * ki67[..., 1].mean()  # eosin only in H&E
    # dark brown only in Ki-67 (real eosin reads as some DAB in rgb2hed, as in real H&E, but never this dark)
    assert (ki67[..., 2] > 0.1).mean() > 0.01 and (he[..., 2] > 0.1).mean() < 0.001
    # DAB sits on the positive nuclei of the layout
    positive = np.isin(pair.layout.nucleus_labels, np.flatnonzero(pair.layout.positive) + 1)
    assert ki67[..., 2][positive].mean() > 5 * ki67[..., 2][~positive].mean()


def test_layout_holds_tumour_lymphocytes_and_spindle_cells_of_20x_sizes():
    rng = np.random.default_rng(3)
    layouts = [make_layout(rng, 128) for _ in range(20)]
    kinds, radii = np.concatenate([l.kinds for l in layouts]), np.concatenate([l.radii for l in layouts])
    assert {TUMOUR, LYMPHOCYTE, SPINDLE} <= set(kinds.tolist())
    assert np.median(radii[kinds == TUMOUR]) == pytest.approx(TUMOUR_NUCLEUS_RADIUS, rel=0.1)
    assert radii[kinds == LYMPHOCYTE].min() >= 3.5 and radii[kinds == LYMPHOCYTE].max() <= 4.5
    assert np.median(radii[kinds == SPINDLE]) > 6.0  # elongated: semi-major axis 6-10 px


def test_nucleus_radius_sets_the_tumour_nuclei():
    rng = np.random.default_rng(4)
    for radius in (5.0, 8.0):
        layouts = [make_layout(rng, 128, nucleus_radius=radius) for _ in range(6)]
        tumour = np.concatenate([l.radii[l.kinds == TUMOUR] for l in layouts])
        assert np.median(tumour) == pytest.approx(radius, rel=0.1)


def test_nuclei_keep_their_size_whatever_the_tile_size():
    areas = {}
    for size in (64, 256):
        tiles = sample_tiles("he", 48 if size == 64 else 3, size, seed=1)
        labels = [segment_nuclei(tile) for tile in tiles]
        areas[size] = np.median(np.concatenate([np.bincount(label.ravel())[1:] for label in labels]))
    assert areas[64] == pytest.approx(areas[256], rel=0.25)


def test_a_64_px_tile_shows_10_to_30_nuclei_on_average():
    rng = np.random.default_rng(5)
    counts = [len(make_layout(rng, 64).positive) for _ in range(30)]
    assert 10 <= np.mean(counts) <= 30


def test_labelling_index_follows_the_requested_fraction():
    rng = np.random.default_rng(1)
    statuses = np.concatenate([make_layout(rng, 128, positive_fraction=0.3).positive for _ in range(30)])
    assert len(statuses) > 500
    # binomial: 3 standard deviations of the pooled fraction (per-nucleus probabilities differ: less spread)
    assert abs(statuses.mean() - 0.3) < 3 * np.sqrt(0.3 * 0.7 / len(statuses))


def test_tumour_nuclei_are_positive_more_often_than_lymphocytes_and_spindle_cells():
    layout = make_layout(np.random.default_rng(7), 512, positive_fraction=0.3)  # a tile of all three
    rates = {kind: layout.positive[layout.kinds == kind].mean() for kind in (TUMOUR, LYMPHOCYTE, SPINDLE)}
    assert min(np.sum(layout.kinds == kind) for kind in rates) >= 30
    assert rates[TUMOUR] > 2 * rates[LYMPHOCYTE] and rates[TUMOUR] > 2 * rates[SPINDLE]


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_extreme_fractions_give_no_or_only_positive_nuclei(fraction):
    layout = make_layout(np.random.default_rng(7), 96, positive_fraction=fraction)
    assert len(layout.positive) > 0 and np.all(layout.positive == bool(fraction))


@pytest.mark.parametrize("option", [{"positive_fraction": 1.5}, {"nucleus_radius": 0.0}])
def test_bad_layout_options_are_refused(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        make_layout(np.random.default_rng(0), 32, **option)


def test_layout_arrays_agree():
    layout = make_layout(np.random.default_rng(8), (80, 112))
    count = len(layout.positive)
    assert layout.nucleus_labels.shape == layout.stroma.shape == layout.cytoplasm.shape == (80, 112)
    assert layout.centers.shape == (count, 2) and layout.radii.shape == layout.kinds.shape == (count,)
    # every listed nucleus shows in the tile, numbered 1..N
    np.testing.assert_array_equal(np.unique(layout.nucleus_labels[layout.nucleus_labels > 0]),
                                  np.arange(1, count + 1))


def test_paired_mode_deforms_the_ki67_side_by_at_most_max_shift():
    pair = render_pair(np.random.default_rng(2), 64, max_shift=3.0)
    assert np.abs(pair.displacement).max() <= 3.0 + 1e-6
    assert np.abs(pair.displacement).max() > 1.0


def test_sample_tiles_are_deterministic_and_unpaired():
    first = sample_tiles("he", 3, 40, seed=5)
    np.testing.assert_array_equal(first, sample_tiles("he", 3, 40, seed=5))
    assert not np.array_equal(first, sample_tiles("he", 3, 40, seed=6))
    assert first.shape == (3, 40, 40, 3) and first.dtype == np.uint8


def test_sample_dataset_layout_and_reuse(tmp_path):
    root = write_sample_dataset(tmp_path / "data", num_train=3, num_val=2, tile_size=40, seed=0)
    for stain in ("he", "ki67"):
        assert len(list((root / stain / "train").glob("*.png"))) == 3
        assert len(list((root / stain / "val").glob("*.png"))) == 2
    stamp = (root / "he" / "train" / "he_00000.png").stat().st_mtime_ns
    write_sample_dataset(tmp_path / "data", num_train=3, num_val=2, tile_size=40, seed=0)
    assert (root / "he" / "train" / "he_00000.png").stat().st_mtime_ns == stamp
    paired = write_sample_dataset(tmp_path / "paired", 2, 1, 40, seed=0, paired=True)
    names = sorted(path.name for path in (paired / "he" / "train").glob("*.png"))
    assert names == sorted(path.name for path in (paired / "ki67" / "train").glob("*.png"))
    assert (paired / "train_nuclei.json").is_file()
