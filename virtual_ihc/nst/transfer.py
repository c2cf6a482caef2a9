"""Gatys-style neural style transfer: the generated image is the only variable.

The image is optimised in RGB pixel units ([0, 255]) and converted to the VGG19
convention (:func:`~virtual_ihc.nst.features.vgg19_preprocess`) inside the loss,
so clipping (Adam) or bounds (L-BFGS-B) keep it a valid image at every step.

Reference: L. A. Gatys, A. S. Ecker, M. Bethge, "Image Style Transfer Using
Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from virtual_ihc.errors import InputError
from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.nst.features import MIN_IMAGE_SIZE, build_feature_extractor, vgg19_preprocess
from virtual_ihc.nst.losses import content_loss, mean_gram_matrix, style_layer_loss, total_variation_loss

logger = logging.getLogger(__name__)

LOSS_KEYS = ("total_loss", "content_loss", "style_loss", "total_variation_loss")


@dataclasses.dataclass
class NSTResult:
    """Outcome of one style transfer.

    Attributes:
        image: uint8 RGB ``(H, W, 3)``, the content image's shape.
        loss_history: total loss after ``k`` iterations at index ``k``
            (index 0 = the initial image); L-BFGS may stop early, so it can be
            shorter than ``iterations + 1``.
        final_losses: every term of :data:`LOSS_KEYS` for the final image (unweighted
            except ``total_loss``).
        seconds: wall-clock time of the optimisation.
        seconds_per_iteration: median wall-clock time of one iteration (the
            median leaves out the one-off tracing of the compiled step).
    """

    image: np.ndarray
    loss_history: list[float]
    final_losses: dict[str, float]
    seconds: float
    seconds_per_iteration: float


def check_image_size(image: np.ndarray, role: str) -> None:
    """Raise ``ValueError`` unless ``image`` is ``(H, W, 3)`` with H, W >= 32."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{role} image must be RGB (H, W, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < MIN_IMAGE_SIZE:
        raise InputError(f"{role} image is {height}x{width} pixels; VGG19 needs at least "
                         f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")


def is_grayscale(image: np.ndarray) -> bool:
    """True when all three channels of an RGB image are equal (no colour)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))


def initial_image(content: np.ndarray, init: str, seed: int) -> np.ndarray:
    """Starting point of the optimisation: float32 ``(H, W, 3)`` in [0, 255].

    ``"content"`` copies the content image; ``"noise"`` draws uniform white noise.
    """
    if init == "content":
        return content.astype(np.float32)
    if init == "noise":
        return np.random.default_rng(seed).uniform(0.0, 255.0, content.shape).astype(np.float32)
    raise ValueError(f"init must be 'content' or 'noise', got {init!r}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round a float image in pixel units to uint8 (values outside [0, 255] clipped)."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


class StyleTransfer:
    """Content and style losses of one :class:`NSTConfig` on a shared VGG19.

    Args:
        config: the loss and optimiser settings.
        vgg: the frozen VGG19 from :func:`~virtual_ihc.nst.features.build_vgg19`;
            several ``StyleTransfer`` objects (e.g. a sweep) can share it.

    Example:
        >>> transfer = StyleTransfer(NSTConfig(iterations=100), build_vgg19("imagenet"))
        >>> result = transfer.run(he_tile, transfer.style_targets([ki67_tile]))
    """

    def __init__(self, config: NSTConfig, vgg: keras.Model):
        self.config = config
        self.extractor = build_feature_extractor(vgg, config.layer_names)
        self._adam_states: dict[tuple[int, ...], tuple] = {}

    def features(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """``{layer: (B, h, w, N) activations}`` of float32 RGB images ``(B, H, W, 3)`` in [0, 255]."""
        return self.extractor(vgg19_preprocess(images), training=False)

    def content_targets(self, content: np.ndarray) -> dict[str, tf.Tensor]:
        """Activations of the content layers for a uint8 RGB ``(H, W, 3)`` content image."""
        check_image_size(content, "content")
        features = self.features(tf.constant(content[None], tf.float32))
        return {name: features[name] for name in self.config.content_layers}

    def style_targets(self, style_images: Sequence[np.ndarray]) -> dict[str, tf.Tensor]:
        """Per-position Gram matrices ``{layer: (1, N, N)}`` averaged over the style images.

        Each style image (uint8 RGB ``(H, W, 3)``, any size >= 32x32) keeps its own
        size, hence its magnification; one image or a set of Ki-67 tiles both work.
        A grayscale style image is accepted but logged, because the result then
        has no colour to take on.
        """
        if not style_images:
            raise InputError("at least one style image is needed")
        names = [name for name, _ in self.config.style_layers]
        sums = {name: 0.0 for name in names}
        for index, style in enumerate(style_images):
            check_image_size(style, f"style #{index}")
            if is_grayscale(style):
                logger.warning("style image #%d is grayscale: the output will have no stain colour", index)
            features = self.features(tf.constant(style[None], tf.float32))
            for name in names:
                sums[name] = sums[name] + mean_gram_matrix(features[name])
        return {name: total / len(style_images) for name, total in sums.items()}

    def loss_terms(self, image: tf.Tensor, content_targets: dict[str, tf.Tensor],
                   style_targets: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Every term of :data:`LOSS_KEYS` (float32 scalars) for float32 ``(1, H, W, 3)`` in [0, 255]."""
        config = self.config
        features = self.features(image)
        content = tf.add_n([content_loss(features[name], content_targets[name], config.content_loss)
                            for name in config.content_layers]) / len(config.content_layers)
        style = tf.add_n([weight * style_layer_loss(features[name], style_targets[name])
                          for name, weight in config.style_layers])
        smoothness = total_variation_loss(image)
        total = config.content_weight * content + config.style_weight * style + config.tv_weight * smoothness
        return dict(zip(LOSS_KEYS, (total, content, style, smoothness)))

    def run(self, content: np.ndarray, style_targets: dict[str, tf.Tensor]) -> NSTResult:
        """Stylise one content image.

        Args:
            content: uint8 RGB ``(H, W, 3)``, H and W >= 32.
            style_targets: from :meth:`style_targets`.

        Returns:
            :class:`NSTResult` with a uint8 image of the content's shape.
        """
        content_targets = self.content_targets(content)
        start = initial_image(content, self.config.init, self.config.seed)
        started = time.perf_counter()
        optimise = self._optimise_adam if self.config.optimizer == "adam" else self._optimise_lbfgs
        final, history, iteration_seconds = optimise(start, content_targets, style_targets)
        seconds = time.perf_counter() - started
        terms = self.loss_terms(tf.constant(final[None]), content_targets, style_targets)
        final_losses = {key: float(value) for key, value in terms.items()}
        per_iteration = float(np.median(iteration_seconds)) if iteration_seconds else float("nan")
        logger.info("style transfer done in %.1f s (%.3f s/iteration): %s", seconds, per_iteration,
                    ", ".join(f"{key}={value:.4g}" for key, value in final_losses.items()))
        return NSTResult(to_uint8(final), history, final_losses, seconds, per_iteration)

    def _optimise_adam(self, start: np.ndarray, content_targets,
                       style_targets) -> tuple[np.ndarray, list[float], list[float]]:
        """Adam from ``start``; returns the final float image, the loss history and each iteration's seconds."""
        image, optimizer, step = self._adam_state(start.shape)
        image.assign(start[None])
        # Fresh moments and step count for every image; the traced step is reused.
        for variable in optimizer.variables:
            variable.assign(tf.zeros_like(variable))
        optimizer.learning_rate = self.config.learning_rate
        history, iteration_seconds = [], []
        for iteration in range(self.config.iterations):
            started = time.perf_counter()
            history.append(float(step(content_targets, style_targets)))
            iteration_seconds.append(time.perf_counter() - started)
            _log_progress(iteration, self.config.iterations, history[-1])
        history.append(float(self.loss_terms(image, content_targets, style_targets)["total_loss"]))
        return image.numpy()[0], history, iteration_seconds

    def _adam_state(self, shape: tuple[int, ...]) -> tuple[tf.Variable, keras.optimizers.Optimizer, Callable]:
        """The image variable, Adam and the compiled step for images of ``shape``, built once."""
        if shape not in self._adam_states:
            image = tf.Variable(tf.zeros((1,) + shape))
            optimizer = keras.optimizers.Adam(learning_rate=self.config.learning_rate)
            optimizer.build([image])  # moments created eagerly, so the step is traced once

            @tf.function(autograph=False)  # see _value_and_gradient
            def step(content_targets: dict, style_targets: dict) -> tf.Tensor:
                with tf.GradientTape() as tape:
                    total = self.loss_terms(image, content_targets, style_targets)["total_loss"]
                optimizer.apply_gradients([(tape.gradient(total, image), image)])
                image.assign(tf.clip_by_value(image, 0.0, 255.0))
                return total

            self._adam_states[shape] = (image, optimizer, step)
        return self._adam_states[shape]

    # No tensor-dependent Python control flow here, and AutoGraph-converting the
    # whole VGG19 call would cost seconds per trace.
    @tf.function(autograph=False)
    def _value_and_gradient(self, image: tf.Tensor, content_targets: dict,
                            style_targets: dict) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(image)
            total = self.loss_terms(image, content_targets, style_targets)["total_loss"]
        return total, tape.gradient(total, image)

    def _optimise_lbfgs(self, start: np.ndarray, content_targets,
                        style_targets) -> tuple[np.ndarray, list[float], list[float]]:
        """L-BFGS-B within [0, 255]; returns the final float image, the loss history and each iteration's seconds."""
        shape = (1,) + start.shape

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            image = tf.constant(flat.reshape(shape), tf.float32)
            total, gradient = self._value_and_gradient(image, content_targets, style_targets)
            return float(total), gradient.numpy().ravel().astype(np.float64)

        history = [objective(start.ravel())[0]]
        finished_at = [time.perf_counter()]

        def record(intermediate_result: scipy.optimize.OptimizeResult) -> None:
            history.append(float(intermediate_result.fun))
            finished_at.append(time.perf_counter())
            _log_progress(len(history) - 2, self.config.iterations, history[-1])

        result = scipy.optimize.minimize(
            objective, start.ravel().astype(np.float64), jac=True, method="L-BFGS-B",
            bounds=scipy.optimize.Bounds(0.0, 255.0), callback=record,
            options={"maxiter": self.config.iterations},
        )
        logger.info("L-BFGS-B stopped after %d iterations: %s", result.nit, result.message)
        return result.x.reshape(start.shape).astype(np.float32), history, list(np.diff(finished_at))


def _log_progress(iteration: int, iterations: int, total: float) -> None:
    every = max(1, iterations // 10)
    if (iteration + 1) % every == 0:
        logger.info("iteration %d/%d: total_loss=%.4g", iteration + 1, iterations, total)
