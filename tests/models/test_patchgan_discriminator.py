import numpy as np
import tensorflow as tf

from virtual_ihc.config import DiscriminatorConfig
from virtual_ihc.models.patchgan_discriminator import build_patchgan_discriminator


def test_default_is_a_70x70_patchgan_with_64_to_512_filters():
    discriminator = build_patchgan_discriminator(DiscriminatorConfig())
    filters = [layer.filters for layer in discriminator.layers if hasattr(layer, "filters")]
    assert filters == [64, 128, 256, 512, 1]
    assert tuple(discriminator(np.zeros((1, 288, 288, 3), "float32")).shape) == (1, 34, 34, 1)
    # receptive field of one logit, from the conv kernels and strides (instance norm aside,
    # which mixes in global statistics, each logit sees a 70x70 patch)
    receptive_field = 1
    for layer in reversed([layer for layer in discriminator.layers if hasattr(layer, "kernel_size")]):
        receptive_field = (receptive_field - 1) * layer.strides[0] + layer.kernel_size[0]
    assert receptive_field == 70


def test_depth_is_configurable():
    shallow = build_patchgan_discriminator(DiscriminatorConfig(base_filters=8, num_layers=1))
    filters = [layer.filters for layer in shallow.layers if hasattr(layer, "filters")]
    assert filters == [8, 16, 1]
    logits = shallow(np.zeros((2, 32, 32, 3), "float32"))
    assert logits.dtype == tf.float32 and logits.shape[0] == 2
