"""Losses of the improved CycleGAN; each returns one value per example, shape ``(B,)``.

Per-example values let the training step average with
``tf.nn.compute_average_loss`` over the *global* batch, which is the correct
scaling under ``tf.distribute`` (gradients are summed across replicas).

Image conventions: network images are float in [-1, 1]; SSIM is computed on
images rescaled to [0, 1] with ``max_val=1`` (``tf.image.ssim`` defaults: 11x11
Gaussian window, sigma 1.5, k1 0.01, k2 0.03, per channel then averaged).

Total generator objective (paper: lambda = beta = 5)::

    L = L_adv(G_he->ki67) + L_adv(G_ki67->he)
        + lambda * (|he - cycled_he|_1 + |ki67 - cycled_ki67|_1)
        + beta * (2 - SSIM(cycled_he, he) - SSIM(cycled_ki67, ki67))
        + identity_weight * (|G_he->ki67(ki67) - ki67|_1 + |G_ki67->he(he) - he|_1)
        + structure_weight * (2 - r(nuclei(he), nuclei(fake_ki67)) - r(nuclei(ki67), nuclei(fake_he)))
        + stain_moment_weight * (dab_share(fake_ki67) - dab_share(ki67))^2

The last two are this project's pathology-consistency terms (off in the paper profile):
``nuclei(x)`` is the hematoxylin + DAB amount of colour deconvolution (the same
definition :mod:`virtual_ihc.histology.nuclei` segments) minus its local mean, ``r`` the
per-image Pearson correlation, so the nuclei of a translation must sit where the
source's are whatever their colour; ``dab_share`` is the batch's DAB share of the
nuclear stain, so the virtual Ki-67 is as brown, on average, as the real Ki-67 batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from virtual_ihc.histology.stains import STAIN_MATRIX_HED

#: MS-SSIM weights of the five scales (Wang et al. 2003), as in tf.image.ssim_multiscale
MS_SSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_FILTER_SIZE = 11


def _per_example_mean(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.reshape(tf.cast(values, tf.float32), [tf.shape(values)[0], -1]), axis=1)


def to_unit_range(images: tf.Tensor) -> tf.Tensor:
    """[-1, 1] -> [0, 1] float32, clipped."""
    return tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) * 0.5, 0.0, 1.0)


def generator_adversarial_loss(fake_logits: tf.Tensor, kind: str = "bce") -> tf.Tensor:
    """The generator wants its fakes called real.

    ``bce``: -log sigmoid(D(fake)) (the paper's log-likelihood form);
    ``lsgan``: (D(fake) - 1)^2. Averaged over patches.
    """
    fake_logits = tf.cast(fake_logits, tf.float32)
    if kind == "bce":
        return _per_example_mean(tf.nn.softplus(-fake_logits))
    if kind == "lsgan":
        return _per_example_mean(tf.square(fake_logits - 1.0))
    raise ValueError(f"adversarial loss must be 'bce' or 'lsgan', got {kind!r}")


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor, kind: str = "bce") -> tf.Tensor:
    """Half the sum of the real and fake terms, as in CycleGAN (slows D relative to G).

    ``bce``: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake)));
    ``lsgan``: (D(real) - 1)^2 + D(fake)^2.
    """
    real_logits = tf.cast(real_logits, tf.float32)
    fake_logits = tf.cast(fake_logits, tf.float32)
    if kind == "bce":
        real_term, fake_term = tf.nn.softplus(-real_logits), tf.nn.softplus(fake_logits)
    elif kind == "lsgan":
        real_term, fake_term = tf.square(real_logits - 1.0), tf.square(fake_logits)
    else:
        raise ValueError(f"adversarial loss must be 'bce' or 'lsgan', got {kind!r}")
    return 0.5 * (_per_example_mean(real_term) + _per_example_mean(fake_term))


def l1_loss(real: tf.Tensor, reconstructed: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference per example (cycle and identity losses)."""
    return _per_example_mean(tf.abs(tf.cast(real, tf.float32) - tf.cast(reconstructed, tf.float32)))


def ms_ssim_power_factors(image_size: int, filter_size: int = SSIM_FILTER_SIZE) -> tuple[float, ...]:
    """The MS-SSIM scale weights that fit an image of ``image_size`` pixels.

    ``tf.image.ssim_multiscale`` needs ``(filter_size - 1) * 2 ** (scales - 1) + 1``
    pixels; small tiles drop the coarsest scales and the remaining weights are
    renormalised to sum to 1 (288-pixel tiles keep all five).
    """
    scales = len(MS_SSIM_POWER_FACTORS)
    while scales > 1 and (filter_size - 1) * 2 ** (scales - 1) + 1 > image_size:
        scales -= 1
    factors = MS_SSIM_POWER_FACTORS[:scales]
    total = sum(factors)
    return tuple(factor / total for factor in factors)


def structural_similarity(a: tf.Tensor, b: tf.Tensor, kind: str = "ssim") -> tf.Tensor:
    """SSIM (or MS-SSIM) per example of two [-1, 1] image batches, computed in [0, 1]."""
    a, b = to_unit_range(a), to_unit_range(b)
    if kind == "ssim":
        return tf.image.ssim(a, b, max_val=1.0, filter_size=SSIM_FILTER_SIZE)
    if kind == "ms_ssim":
        size = min(a.shape[1], a.shape[2])
        if size is None:
            raise ValueError("MS-SSIM needs a static image size")
        filter_size = min(SSIM_FILTER_SIZE, size)
        return tf.image.ssim_multiscale(a, b, max_val=1.0, filter_size=filter_size,
                                        power_factors=ms_ssim_power_factors(size, filter_size))
    raise ValueError(f"ssim kind must be 'ssim' or 'ms_ssim', got {kind!r}")


def structural_cycle_loss(real_he: tf.Tensor, cycled_he: tf.Tensor, real_ki67: tf.Tensor,
                          cycled_ki67: tf.Tensor, kind: str = "ssim") -> tf.Tensor:
    """The paper's structural cycle loss per example: ``2 - SSIM(he) - SSIM(ki67)``, in [0, 4]."""
    return (2.0 - structural_similarity(real_he, cycled_he, kind)
            - structural_similarity(real_ki67, cycled_ki67, kind))


#: colour deconvolution matrix of ``skimage.color.rgb2hed`` (optical density -> H, E, DAB amounts)
HED_FROM_RGB = np.linalg.inv(STAIN_MATRIX_HED).astype(np.float32)
#: optical-density floor: 1 grey level, so that black pixels keep finite gradients
_OD_FLOOR = 1.0 / 255.0
#: side of the local mean removed from the nuclear map (about three nucleus diameters at 20x)
NUCLEAR_BACKGROUND_WINDOW = 31


def stain_amounts(images: tf.Tensor) -> tf.Tensor:
    """Differentiable ``rgb2hed``: [-1, 1] RGB ``(B, H, W, 3)`` -> H, E, DAB amounts (not clipped at 0)."""
    rgb = tf.maximum(to_unit_range(images), _OD_FLOOR)
    optical_density = tf.math.log(rgb) / np.log(1e-6)
    return tf.einsum("bhwc,cs->bhws", optical_density, tf.constant(HED_FROM_RGB))


def nuclear_map(images: tf.Tensor, window: int = NUCLEAR_BACKGROUND_WINDOW) -> tf.Tensor:
    """Hematoxylin + DAB minus its local mean, ``(B, H, W, 1)``: where the nuclei are, in any stain."""
    amounts = stain_amounts(images)
    nuclear = amounts[..., 0:1] + amounts[..., 2:3]
    return nuclear - tf.nn.avg_pool2d(nuclear, ksize=window, strides=1, padding="SAME")


def _pearson_per_example(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    a = tf.reshape(a, [tf.shape(a)[0], -1])
    b = tf.reshape(b, [tf.shape(b)[0], -1])
    a = a - tf.reduce_mean(a, axis=1, keepdims=True)
    b = b - tf.reduce_mean(b, axis=1, keepdims=True)
    covariance = tf.reduce_mean(a * b, axis=1)
    scale = tf.sqrt(tf.reduce_mean(tf.square(a), axis=1) * tf.reduce_mean(tf.square(b), axis=1) + 1e-12)
    return covariance / scale


def nuclear_structure_loss(source: tf.Tensor, translated: tf.Tensor) -> tf.Tensor:
    """``1 - r`` per example between the nuclear maps of a source tile and its translation, in [0, 2]."""
    return 1.0 - _pearson_per_example(nuclear_map(source), nuclear_map(translated))


def dab_share(images: tf.Tensor) -> tf.Tensor:
    """Batch DAB share of the nuclear stain: sum(DAB+) / sum(H+ + DAB+), a scalar in [0, 1]."""
    amounts = tf.nn.relu(stain_amounts(images))
    dab = tf.reduce_sum(amounts[..., 2])
    return dab / (dab + tf.reduce_sum(amounts[..., 0]) + 1e-6)


def stain_moment_loss(real_ki67: tf.Tensor, fake_ki67: tf.Tensor) -> tf.Tensor:
    """Squared difference of the batch DAB shares of real and virtual Ki-67 (the real side is a target, no gradient)."""
    return tf.square(dab_share(fake_ki67) - tf.stop_gradient(dab_share(real_ki67)))


def psnr(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """PSNR in dB per example of two [-1, 1] batches, computed in [0, 1] (``max_val=1``)."""
    return tf.image.psnr(to_unit_range(a), to_unit_range(b), max_val=1.0)
