import numpy as np

from virtual_ihc.histology.stains import stain_concentrations
from virtual_ihc.data.synthetic import make_layout, render_pair, sample_tiles, write_sample_dataset


def test_stains_show_in_the_right_domain():
    pair = render_pair(np.random.default_rng(0), 128, positive_fraction=0.5)
    he, ki67 = stain_concentrations(pair.he), stain_concentrations(pair.ki67)
    assert he[..., 1].mean() > 3 * ki67[..., 1].mean()  # eosin only in H&E
    assert ki67[..., 2].mean() > 3 * he[..., 2].mean()  # DAB only in Ki-67
    # DAB sits on the positive nuclei of the layout
    positive = np.isin(pair.layout.nucleus_labels, np.flatnonzero(pair.layout.positive) + 1)
    assert ki67[..., 2][positive].mean() > 5 * ki67[..., 2][~positive].mean()


def test_labelling_index_follows_the_requested_fraction():
    rng = np.random.default_rng(1)
    statuses = np.concatenate([make_layout(rng, 128, positive_fraction=0.3).positive for _ in range(60)])
    assert len(statuses) > 500
    # binomial: 3 standard deviations of the pooled fraction
    assert abs(statuses.mean() - 0.3) < 3 * np.sqrt(0.3 * 0.7 / len(statuses))


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
