"""Losses of the improved CycleGAN; each returns one value per example, shape ``(B,)``.

Per-example values let the training step average with
``tf.nn.compute_average_loss`` over the *global* batch, which is the correct
scaling under ``tf.distribute`` (gradients are summed across replicas).

Image conventions: network images are float in [-1, 1]; SSIM is computed on
images rescaled to [0, 1] with ``max_val=1`` (``tf.image.ssim`` defaults: 11x11
Gaussian window, sigma 1.5, k1 0.01, k2 0.03, per channel then averaged).
MS-SSIM is :func:`multiscale_ssim` (the value of ``tf.image.ssim_multiscale``
with a gradient that stays finite; see there).

Total generator objective (paper: lambda = beta = 5)::

    L = L_adv(G_he->ki67) + L_adv(G_ki67->he)
        + lambda * (|he - cycled_he|_1 + |ki67 - cycled_ki67|_1)
        + beta * (2 - SSIM(cycled_he, he) - SSIM(cycled_ki67, ki67))
        + identity_weight * (|G_he->ki67(ki67) - ki67|_1 + |G_ki67->he(he) - he|_1)
        + structure_weight * (2 - r(nuclei(he), nuclei(fake_ki67)) - r(nuclei(ki67), nuclei(fake_he)))
        + positivity_weight * sum_t |F_t(fake_ki67) - F_t(ki67)|

The last two are this project's pathology-consistency terms (off in the paper profile).
``nuclei(x)`` is tanh((n - local mean of n) / 0.03), n the hematoxylin + DAB amount of
colour deconvolution (the nuclear signal :mod:`virtual_ihc.histology.nuclei` segments),
``r`` the per-image Pearson correlation: the nuclei of a translation must sit where the
source's are, and the tanh saturates so that a brown (DAB) nucleus and a blue
(hematoxylin) one count alike - an unsaturated map would reward dropping the DAB.
``F_t(x)`` is the batch's share of pixels whose DAB amount exceeds ``t`` (soft thresholds
at 0.03, 0.06, 0.12 and 0.24, from faint to dark brown): the DAB distribution of the
virtual Ki-67 matches the real Ki-67 it is trained against at four points, which
calibrates positivity to the training set's and leaves no room for the "every nucleus
faintly brown" compromise (one threshold would: many nuclei just above the index
threshold, few pixels above a higher one).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from virtual_ihc.histology.stains import STAIN_MATRIX_HED

#: MS-SSIM weights of the five scales (Wang et al. 2003), as in tf.image.ssim_multiscale
MS_SSIM_POWER_FACTORS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
#: MS-SSIM terms at or below this count as 0 (their gradient is 0): ``x ** w`` has an infinite
#: slope at 0 for the scale weights ``w < 1``
MS_SSIM_EPSILON = 1e-6


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


def _gaussian_window(size: int, sigma: float, channels: int, dtype) -> tf.Tensor:
    """Normalised 2-D Gaussian ``(size, size, channels, 1)`` for a depthwise convolution."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2.0 * sigma ** 2))
    window /= window.sum()
    return tf.constant(np.tile(window[:, :, None, None], (1, 1, channels, 1)), dtype)


def _ssim_and_contrast_structure(a: tf.Tensor, b: tf.Tensor, window: tf.Tensor, max_val: float,
                                 k1: float, k2: float) -> tuple[tf.Tensor, tf.Tensor]:
    """SSIM and its contrast-structure term, each averaged over the image, ``(B, C)``.

    Gaussian-weighted local statistics over ``valid`` windows (as ``tf.image.ssim``).
    """
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2

    def local_mean(x):
        return tf.nn.depthwise_conv2d(x, window, strides=[1, 1, 1, 1], padding="VALID")

    mean_a, mean_b = local_mean(a), local_mean(b)
    mean_ab = mean_a * mean_b
    mean_square = tf.square(mean_a) + tf.square(mean_b)
    luminance = (2.0 * mean_ab + c1) / (mean_square + c1)
    contrast_structure = ((2.0 * (local_mean(a * b) - mean_ab) + c2)
                          / (local_mean(tf.square(a) + tf.square(b)) - mean_square + c2))
    return (tf.reduce_mean(luminance * contrast_structure, axis=[1, 2]),
            tf.reduce_mean(contrast_structure, axis=[1, 2]))


def _halve(images: tf.Tensor) -> tf.Tensor:
    """2x2 average pooling; an odd side is first padded by mirroring its last row or column."""
    shape = tf.shape(images)
    padded = tf.pad(images, [[0, 0], [0, shape[1] % 2], [0, shape[2] % 2], [0, 0]], mode="SYMMETRIC")
    return tf.nn.avg_pool2d(padded, ksize=2, strides=2, padding="VALID")


def _positive_power(values: tf.Tensor, exponents: tf.Tensor) -> tf.Tensor:
    """``relu(values) ** exponents`` whose gradient is 0, not NaN, where ``values <= MS_SSIM_EPSILON``.

    ``tf.image.ssim_multiscale`` computes ``relu(x) ** w``; at ``x <= 0`` the
    gradient of the power is infinite and the ReLU's zero turns it into NaN
    (inf * 0). Selecting with ``tf.where`` on both sides keeps every gradient
    finite (as PyTorch's ReLU backward does in ``pytorch_msssim``, the authors' loss).
    """
    positive = values > MS_SSIM_EPSILON
    safe = tf.where(positive, values, tf.ones_like(values))
    return tf.where(positive, tf.pow(safe, exponents), tf.zeros_like(values))


def multiscale_ssim(a: tf.Tensor, b: tf.Tensor, power_factors=MS_SSIM_POWER_FACTORS,
                    filter_size: int = SSIM_FILTER_SIZE, filter_sigma: float = SSIM_FILTER_SIGMA,
                    max_val: float = 1.0, k1: float = 0.01, k2: float = 0.03) -> tf.Tensor:
    """Multi-scale SSIM (Wang, Simoncelli and Bovik 2003) per example, ``(B,)``.

    ``prod_j cs_j ** w_j`` over the scales ``j < M`` times ``ssim_M ** w_M`` at
    the coarsest, each scale 2x2-average-pooled from the previous, per channel
    then averaged over channels. The value is that of
    ``tf.image.ssim_multiscale`` (terms at or below 0 count as 0; so do terms in
    ``(0, MS_SSIM_EPSILON]``), but the gradient is finite everywhere (see
    :func:`_positive_power`).

    Args:
        a, b: float ``(B, H, W, C)`` in ``[0, max_val]``; H and W at least
            ``(filter_size - 1) * 2 ** (len(power_factors) - 1) + 1``.
        power_factors: the weight of each scale, finest first.
    """
    dtype = a.dtype
    window = _gaussian_window(filter_size, filter_sigma, a.shape[-1], dtype)
    terms = []
    for scale in range(len(power_factors)):
        if scale > 0:
            a, b = _halve(a), _halve(b)
        ssim, contrast_structure = _ssim_and_contrast_structure(a, b, window, max_val, k1, k2)
        terms.append(contrast_structure if scale < len(power_factors) - 1 else ssim)
    weighted = _positive_power(tf.stack(terms, axis=-1), tf.constant(power_factors, dtype))  # (B, C, scales)
    return tf.reduce_mean(tf.reduce_prod(weighted, axis=-1), axis=-1)


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
        return multiscale_ssim(a, b, ms_ssim_power_factors(size, filter_size), filter_size)
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
#: nuclear contrast at which the nuclear map saturates (a pale blue nucleus is about 0.03-0.06)
NUCLEAR_SATURATION = 0.03
#: DAB amounts at which the positivity loss compares the DAB distributions (faint to dark brown)
DAB_LEVELS = (0.03, 0.06, 0.12, 0.24)


def stain_amounts(images: tf.Tensor) -> tf.Tensor:
    """Differentiable ``rgb2hed``: [-1, 1] RGB ``(B, H, W, 3)`` -> H, E, DAB amounts (not clipped at 0)."""
    rgb = tf.maximum(to_unit_range(images), _OD_FLOOR)
    optical_density = tf.math.log(rgb) / np.log(1e-6)
    return tf.einsum("bhwc,cs->bhws", optical_density, tf.constant(HED_FROM_RGB))


def _local_contrast(channel: tf.Tensor, window: int) -> tf.Tensor:
    return channel - tf.nn.avg_pool2d(channel, ksize=window, strides=1, padding="SAME")


def nuclear_map(images: tf.Tensor, window: int = NUCLEAR_BACKGROUND_WINDOW) -> tf.Tensor:
    """Where the nuclei are, in any stain: tanh of the local contrast of hematoxylin + DAB, ``(B, H, W, 1)``."""
    amounts = stain_amounts(images)
    nuclear = amounts[..., 0:1] + amounts[..., 2:3]
    return tf.tanh(_local_contrast(nuclear, window) / NUCLEAR_SATURATION)


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


def dab_exceedance(images: tf.Tensor, levels: tuple[float, ...] = DAB_LEVELS) -> tf.Tensor:
    """Soft share of the batch's pixels whose DAB amount exceeds each level, ``(len(levels),)`` in [0, 1].

    The step at level ``t`` is a sigmoid of width ``t / 4``.
    """
    dab = stain_amounts(images)[..., 2]
    return tf.stack([tf.reduce_mean(tf.sigmoid((dab - level) / (level / 4.0))) for level in levels])


def positivity_loss(real_ki67: tf.Tensor, fake_ki67: tf.Tensor) -> tf.Tensor:
    """Sum over the DAB levels of |share of the virtual batch above it - share of the real batch above it|.

    The real batch is only a target (no gradient flows into it).
    """
    return tf.reduce_sum(tf.abs(dab_exceedance(fake_ki67) - tf.stop_gradient(dab_exceedance(real_ki67))))


def psnr(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """PSNR in dB per example of two [-1, 1] batches, computed in [0, 1] (``max_val=1``)."""
    return tf.image.psnr(to_unit_range(a), to_unit_range(b), max_val=1.0)
