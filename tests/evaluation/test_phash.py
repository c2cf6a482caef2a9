"""The paper's P-hash (ResNet-18 layer2 channel means) and the ResNet-18 weight loading."""

import numpy as np
import pytest

from virtual_ihc.evaluation.phash import PerceptualHash, phash_bits, phash_scores
from virtual_ihc.evaluation.resnet18 import build_resnet18, load_torchvision_weights
from virtual_ihc.evaluation.tiles import EvaluationInputError


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    """Four textured pink tiles, ``uint8 (4, 64, 64, 3)``."""
    rng = np.random.default_rng(0)
    base = np.array([225, 150, 200]) + rng.normal(0, 25, (4, 64, 64, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def phash() -> PerceptualHash:
    return PerceptualHash(weights=None)


def test_score_is_the_fraction_of_channels_under_the_threshold():
    virtual = np.array([[0.0, 0.0, 0.0, 0.0]])
    reference = np.array([[0.005, 0.02, -0.5, 0.01]])
    np.testing.assert_array_equal(phash_bits(virtual, reference), [[False, True, True, False]])
    np.testing.assert_allclose(phash_scores(virtual, reference), [0.5])
    np.testing.assert_allclose(phash_scores(virtual, reference, threshold=0.1), [0.75])


def test_identical_images_score_one(phash, tiles):
    np.testing.assert_array_equal(phash(tiles, tiles), 1.0)


def test_colour_shifted_images_score_lower(phash, tiles):
    brown = np.clip(tiles.astype(int) + [-40, -60, -120], 0, 255).astype(np.uint8)
    scores = phash(brown, tiles)
    assert scores.shape == (4,)
    assert scores.max() < 0.9


def test_layer2_hashes_128_channels_and_the_layer_is_an_option(tiles):
    assert PerceptualHash(weights=None).means(tiles[:1]).shape == (1, 128)
    assert PerceptualHash(weights=None, layer="layer1").means(tiles[:1]).shape == (1, 64)
    with pytest.raises(ValueError, match="stage"):
        PerceptualHash(weights=None, layer="layer9")


def test_resnet18_layer2_downsamples_by_eight():
    model = build_resnet18("layer2")
    assert model(np.zeros((1, 64, 48, 3), np.float32)).shape == (1, 8, 6, 128)


def _torchvision_state(model, rng) -> dict[str, np.ndarray]:
    """A random state_dict in torchvision's names and PyTorch layouts for the layers of ``model``."""
    state = {"fc.weight": rng.normal(size=(10, 512))}  # entries the model lacks are ignored
    for layer in model.layers:
        key = layer.name.replace("_", ".")
        if layer.__class__.__name__ == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            state[f"{key}.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
        elif layer.__class__.__name__ == "BatchNormalization":
            for part in ("weight", "bias", "running_mean"):
                state[f"{key}.{part}"] = rng.normal(size=layer.gamma.shape).astype(np.float32)
            state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, layer.gamma.shape).astype(np.float32)
    return state


def test_torchvision_weights_load_with_the_kernel_layout_converted(tmp_path):
    model = build_resnet18("layer1")
    state = _torchvision_state(model, np.random.default_rng(1))
    np.savez(tmp_path / "resnet18.npz", **state)
    reloaded = build_resnet18("layer1", weights=str(tmp_path / "resnet18.npz"))
    kernel = reloaded.get_layer("layer1_0_conv2").kernel.numpy()
    np.testing.assert_array_equal(kernel[1, 2, 3, 4], state["layer1.0.conv2.weight"][4, 3, 1, 2])
    np.testing.assert_array_equal(reloaded.get_layer("bn1").moving_variance.numpy(), state["bn1.running_var"])


def test_missing_weights_explain_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m virtual_ihc.evaluation.resnet18"):
        build_resnet18("layer2", weights="imagenet")
    np.savez(tmp_path / "partial.npz", **{"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
    with pytest.raises(EvaluationInputError, match="bn1.weight"):
        load_torchvision_weights(build_resnet18("layer1"), tmp_path / "partial.npz")
