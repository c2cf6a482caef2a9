"""Stain optical-density vectors and Beer-Lambert colour mixing.

The stain vectors are the Ruifrok & Johnston (2001) values for hematoxylin, eosin
and DAB, the same rows scikit-image uses in ``skimage.color.rgb_from_hed``, so that
an image rendered here deconvolves exactly with ``skimage.color.rgb2hed``.
Optical density uses the natural logarithm, as scikit-image does.
"""

from __future__ import annotations

import numpy as np

HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])
DAB = np.array([0.27, 0.57, 0.78])

#: rows: hematoxylin, eosin, DAB optical density per unit concentration (R, G, B)
STAIN_MATRIX_HED = np.stack([HEMATOXYLIN, EOSIN, DAB])


def render_beer_lambert(concentrations: np.ndarray, stain_matrix: np.ndarray = STAIN_MATRIX_HED,
                        background: float = 255.0) -> np.ndarray:
    """Mix stains by Beer-Lambert's law: ``I = I0 * exp(-C @ M)``.

    Args:
        concentrations: float array ``(H, W, K)``, stain amounts (>= 0).
        stain_matrix: ``(K, 3)`` optical density of each stain per unit amount.
        background: transmitted intensity of empty glass (``I0``).

    Returns:
        float32 RGB ``(H, W, 3)`` in ``[0, background]``.
    """
    optical_density = np.tensordot(np.maximum(concentrations, 0.0), stain_matrix, axes=([-1], [0]))
    return (background * np.exp(-optical_density)).astype(np.float32)


def stain_concentrations(rgb: np.ndarray) -> np.ndarray:
    """Colour deconvolution of a ``uint8`` RGB image into H, E, DAB amounts ``(H, W, 3)``.

    Thin wrapper over ``skimage.color.rgb2hed`` (Ruifrok & Johnston).
    """
    from skimage.color import rgb2hed

    return rgb2hed(np.asarray(rgb)).astype(np.float32)


def mean_dab_density(rgb: np.ndarray) -> float:
    """Mean DAB amount of an RGB image (or batch): how brown an image is."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 4:
        rgb = rgb.reshape(-1, rgb.shape[-2], 3)
    return float(np.mean(stain_concentrations(rgb)[..., 2]))


def rescale_stains(rgb: np.ndarray, hematoxylin: float = 1.0, eosin: float = 1.0, dab: float = 1.0) -> np.ndarray:
    """The same tissue stained more or less strongly: each stain amount times its factor.

    Colour deconvolution (``rgb2hed``), scaling, Beer-Lambert re-rendering (``hed2rgb``): with all
    factors 1 the image comes back unchanged up to rounding. Shows what another lab's (or another
    day's) staining does to an H&E, e.g. before stain normalisation.

    Args:
        rgb: ``uint8 (H, W, 3)``.
        hematoxylin, eosin, dab: non-negative factors of each stain's amount.

    Returns:
        ``uint8 (H, W, 3)``.
    """
    from skimage.color import hed2rgb

    factors = np.array([hematoxylin, eosin, dab], np.float64)
    if (factors < 0).any():
        raise ValueError(f"stain factors must be >= 0, got {factors.tolist()}")
    amounts = stain_concentrations(rgb).astype(np.float64) * factors
    return np.clip(np.rint(hed2rgb(amounts) * 255), 0, 255).astype(np.uint8)


def restain_he_as_ki67(he: np.ndarray, positive_nuclei: np.ndarray, dab_amount: float = 0.15,
                       hematoxylin_scale: float = 1.0) -> np.ndarray:
    """Re-stain an H&E tile as an ideal Ki-67: hematoxylin kept, eosin dropped, DAB on chosen nuclei.

    ``positive_nuclei`` is a boolean mask of the pixels that get ``dab_amount`` of DAB
    (``rgb2hed`` units): the image a virtual stain of ``he`` should approach, with a known index.
    """
    import cv2
    from skimage.color import hed2rgb

    amounts = stain_concentrations(he).astype(np.float64)
    amounts[..., 0] *= hematoxylin_scale
    amounts[..., 1] = 0.0
    amounts[..., 2] = np.where(positive_nuclei, dab_amount, 0.0)
    smoothed = cv2.GaussianBlur(amounts[..., 2].astype(np.float32), (0, 0), 0.7)
    amounts[..., 2] = smoothed
    return np.clip(np.rint(hed2rgb(amounts) * 255), 0, 255).astype(np.uint8)
