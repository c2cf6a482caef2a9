"""Settings of the neural style transfer baseline: the single source of its defaults.

The defaults follow Gatys et al. (2016) and the project's second design
document: content on ``block4_conv2`` with a mean-squared-error loss, style on
the first convolution of each of the five VGG19 blocks with equal weights.
"""

from __future__ import annotations

import dataclasses

from virtual_ihc.errors import InputError

#: Convolution layers of ``keras.applications.VGG19``, shallow to deep.
VGG19_CONV_LAYERS = tuple(
    f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
    for conv in range(1, convs + 1)
)

CONTENT_LOSSES = ("mse", "mae")
OPTIMIZERS = ("adam", "lbfgs")
INITIALISATIONS = ("content", "noise")

DEFAULT_STYLE_LAYERS = tuple((f"block{block}_conv1", 0.2) for block in range(1, 6))


@dataclasses.dataclass(frozen=True)
class NSTConfig:
    """One neural style transfer run.

    Pixel values are in [0, 255] throughout, so ``learning_rate`` is in pixel
    levels per Adam step.

    Attributes:
        content_layers: VGG19 layers whose activations define the content loss
            (averaged over the layers).
        style_layers: ``(layer, weight)`` pairs; the style loss is the weighted
            sum of the per-layer Gram losses.
        content_loss: ``"mse"`` (mean squared error) or ``"mae"`` (mean absolute
            error) between content activations.
        content_weight: alpha, the factor of the content loss.
        style_weight: beta, the factor of the style loss. With the mean-based
            content loss, ``content_weight=1, style_weight=1e-2`` corresponds
            to Gatys' alpha/beta = 1e-4 at 512x512 (``block4_conv2`` has
            64*64*512 activations there).
        tv_weight: factor of the total-variation smoothness loss (0 = off).
        init: start from the ``"content"`` image or from uniform ``"noise"``.
        optimizer: ``"adam"`` (tf.function-compiled step) or ``"lbfgs"``
            (SciPy L-BFGS-B with the pixel bounds [0, 255]).
        iterations: optimisation steps (L-BFGS: maximum iterations; it may stop
            earlier once converged).
        learning_rate: Adam step size in pixel levels (unused by L-BFGS).
        seed: seed of the noise initialisation (and of random VGG weights when
            the caller builds them with ``weights="none"``).
        weights: VGG19 weights option: ``"imagenet"``, ``"none"`` or a ``.h5``
            path (see :mod:`virtual_ihc.weights`).
    """

    content_layers: tuple[str, ...] = ("block4_conv2",)
    style_layers: tuple[tuple[str, float], ...] = DEFAULT_STYLE_LAYERS
    content_loss: str = "mse"
    content_weight: float = 1.0
    style_weight: float = 1e-2
    tv_weight: float = 0.0
    init: str = "content"
    optimizer: str = "adam"
    iterations: int = 300
    learning_rate: float = 5.0
    seed: int = 0
    weights: str = "imagenet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_layers", tuple(self.content_layers))
        object.__setattr__(self, "style_layers",
                           tuple((str(name), float(weight)) for name, weight in self.style_layers))
        unknown = [name for name in self.layer_names if name not in VGG19_CONV_LAYERS]
        if unknown:
            raise InputError(f"unknown VGG19 layer(s) {unknown}; choose from {list(VGG19_CONV_LAYERS)}")
        if not self.content_layers or not self.style_layers:
            raise InputError("at least one content layer and one style layer are needed")
        _check_choice("content_loss", self.content_loss, CONTENT_LOSSES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("init", self.init, INITIALISATIONS)
        if self.iterations < 1:
            raise InputError(f"iterations must be >= 1, got {self.iterations}")
        negative = {name: value for name, value in (
            ("content_weight", self.content_weight), ("style_weight", self.style_weight),
            ("tv_weight", self.tv_weight), ("learning_rate", self.learning_rate),
            *((f"style weight of {layer}", weight) for layer, weight in self.style_layers),
        ) if value < 0}
        if negative:
            raise InputError(f"weights must be >= 0, got {negative}")

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Every layer the losses read, content layers first, without repeats."""
        names = self.content_layers + tuple(name for name, _ in self.style_layers)
        return tuple(dict.fromkeys(names))

    def to_json_dict(self) -> dict:
        """The settings as JSON-ready values (tuples become lists)."""
        return dataclasses.asdict(self)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{field} must be one of {choices}, got {value!r}")
