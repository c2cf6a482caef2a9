"""Configuration: nested dataclasses, one source of defaults, and named profiles.

The dataclass defaults are the paper's settings (288x288 tiles with 144 overlap,
batch 4, 10 residual blocks, lambda = beta = 5, Adam 2e-4 with lr x 0.9 every 2
epochs). ``PROFILES`` holds named overrides: ``paper`` changes nothing, ``real``
sets the training recipe for real slides (``RECIPE_LOSS``), ``small`` (the default of
``python train.py``) shrinks the model and data so that a run finishes in minutes on a
2-core CPU, with the same recipe.

Precedence when resolving a configuration: dataclass defaults < profile <
config file (YAML/JSON) < command-line options.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import yaml

from virtual_ihc.errors import InputError


def _field(default: Any, help: str, choices: tuple | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its command-line help (and allowed values) attached."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices}, **kwargs)


@dataclasses.dataclass
class GeneratorConfig:
    """ResNet generator with encoder-decoder skip connections (both directions share it)."""

    base_filters: int = _field(32, "filters of the first 7x7 conv; doubled at each downsampling "
                                   "(32 -> 256 at the bottleneck, as in the authors' code)")
    num_downsamplings: int = _field(3, "stride-2 3x3 convs in the encoder (and transposed convs in the decoder)")
    num_residual_blocks: int = _field(10, "residual blocks at the bottleneck")
    skip: bool = _field(True, "concatenate encoder features into the decoder (the paper's +skip)")
    leaky_relu_slope: float = _field(0.2, "negative slope of every LeakyReLU")
    padding: str = _field("reflect", "padding of the 7x7 and residual convs", ("reflect", "zero"))
    kernel_init: str = _field("glorot", "weight init: Xavier/Glorot (paper) or N(0, 0.02) (pix2pix/CycleGAN)",
                              ("glorot", "normal"))
    norm_epsilon: float = _field(1e-5, "instance-norm epsilon (PyTorch InstanceNorm2d's value)")


@dataclasses.dataclass
class DiscriminatorConfig:
    """PatchGAN discriminator (70x70 receptive field with the defaults)."""

    base_filters: int = _field(64, "filters of the first 4x4 conv (64-128-256-512)")
    num_layers: int = _field(3, "4x4 conv layers after the first (the last has stride 1); 3 gives the 70x70 PatchGAN")
    leaky_relu_slope: float = _field(0.2, "negative slope of every LeakyReLU", None)
    kernel_init: str = _field("normal", "weight init", ("glorot", "normal"))
    norm_epsilon: float = _field(1e-5, "instance-norm epsilon")


@dataclasses.dataclass
class LossConfig:
    """L = L_adv + cycle_weight * L1_cycle + ssim_weight * (2 - SSIM_he - SSIM_ki67) + identity + structure + positivity."""

    adversarial: str = _field("bce", "adversarial loss: log-likelihood (paper) or least squares",
                              ("bce", "lsgan"))
    cycle_weight: float = _field(5.0, "lambda: weight of the L1 cycle loss (both directions)")
    ssim_weight: float = _field(5.0, "beta: weight of the structural cycle loss (0 = plain CycleGAN cycle)")
    ssim_kind: str = _field("ssim", "structural similarity for the cycle loss", ("ssim", "ms_ssim"))
    identity_weight: float = _field(0.0, "weight of the identity loss |G(ki67) - ki67| (0 = off)")
    structure_weight: float = _field(0.0, "weight of the nuclear structure loss: 1 - correlation of the nuclear "
                                          "(hematoxylin + DAB) maps of each tile and its translation, both "
                                          "directions (0 = off, the paper)")
    positivity_weight: float = _field(0.0, "weight of the positivity loss: the virtual Ki-67 batch has the real "
                                           "Ki-67 batch's share of pixels above each of four DAB levels, faint to "
                                           "dark brown (0 = off, the paper)")


@dataclasses.dataclass
class DataConfig:
    """Where tiles come from and how they are cut and augmented."""

    he_dir: str | None = _field(None, "H&E training images: tiles or large images (default: built-in sample data)")
    ki67_dir: str | None = _field(None, "Ki-67 training images: tiles or large images (default: built-in sample data)")
    he_val_dir: str | None = _field(None, "H&E validation images (default: the sample data's val split, "
                                          "or val_fraction of the training files)")
    ki67_val_dir: str | None = _field(None, "Ki-67 validation images (default: as for --he-val-dir)")
    val_fraction: float = _field(0.05, "fraction of training files held out for validation when no val dir is given")
    tile_size: int = _field(288, "tile side when large images are tiled on the fly (multiple of 8)")
    tile_overlap: int = _field(144, "overlap of tiles cut from large images")
    crop_size: int = _field(288, "random crop fed to the networks (multiple of 8, <= tile_size)")
    min_tissue: float = _field(0.25, "reject tiles cut from large images with less tissue than this fraction")
    mpp: float | None = _field(None, "micrometres per pixel of the training tiles (0.5 at 20x), recorded in the "
                                     "export so that virtual-ihc stain reads slides at the same resolution "
                                     "(default: unknown)")
    augment: bool = _field(True, "random crop, flips and 90-degree rotations")
    max_val_tiles: int = _field(64, "validation tiles used per epoch")
    sample_train_tiles: int = _field(400, "built-in sample data: tiles per stain for training")
    sample_val_tiles: int = _field(16, "built-in sample data: tiles per stain for validation")
    sample_tile_size: int = _field(288, "built-in sample data: tile side")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, schedule, precision and bookkeeping."""

    epochs: int = _field(100, "number of epochs")
    batch_size: int = _field(4, "global batch size (split across replicas)")
    steps_per_epoch: int = _field(0, "training steps per epoch (0 = one pass over the larger domain)")
    learning_rate: float = _field(2e-4, "Adam learning rate")
    beta_1: float = _field(0.5, "Adam beta_1")
    beta_2: float = _field(0.999, "Adam beta_2")
    lr_schedule: str = _field("exponential", "learning-rate schedule: x decay_rate every decay_epochs (paper), "
                                             "constant then linear to 0 (CycleGAN), or constant",
                              ("exponential", "linear", "constant"))
    lr_decay_rate: float = _field(0.9, "exponential schedule: factor applied every lr_decay_epochs")
    lr_decay_epochs: int = _field(2, "exponential schedule: epochs between decays")
    lr_linear_start_epoch: int = _field(50, "linear schedule: epoch at which the linear decay to 0 starts")
    pool_size: int = _field(50, "replay buffer of generated images for the discriminators (0 = off)")
    mixed_precision: str = _field("none", "mixed precision policy (float16 uses loss scaling)",
                                  ("none", "mixed_float16", "mixed_bfloat16"))
    jit: bool = _field(False, "compile the train step with XLA")
    distribute: str = _field("auto", "auto: MirroredStrategy when more than one GPU is visible; multiworker: "
                                     "MultiWorkerMirroredStrategy over the cluster in TF_CONFIG "
                                     "(docs/distributed.md)",
                             ("auto", "none", "mirrored", "multiworker"))
    seed: int = _field(0, "random seed (weights, data order, augmentation, image pool)")
    keep_checkpoints: int = _field(0, "checkpoints to keep (0 = every epoch, for metric-vs-epoch curves)")
    sample_images: int = _field(2, "examples per direction in samples/epoch_NNN.png")
    export: bool = _field(True, "export SavedModels and .keras generators at the end of training")
    export_precision: str = _field("float32", "precision the exported SavedModels compute in (bfloat16: within "
                                              "40 dB PSNR of float32, faster on AVX512-BF16/AMX CPUs and GPUs; "
                                              "the .keras generators keep their float32 weights)",
                                   ("float32", "bfloat16"))
    pathology_guard: bool = _field(True, "measure nuclei preservation, glass, eosin, brown stroma and the Ki-67 "
                                         "index of the virtual Ki-67 on the validation tiles every epoch, and "
                                         "warn when the stain inverts or hallucinates positivity")
    verbose: str = _field("auto", "progress display: a bar (1) on a terminal and one line per epoch (2) otherwise, "
                                  "or none (0)", ("auto", "0", "1", "2"))


@dataclasses.dataclass
class ExperimentConfig:
    """A whole training run."""

    name: str = _field("virtual_ihc", "run name (run directory is runs/<name> unless --out is given)")
    out: str | None = _field(None, "run directory (default: runs/<name>)")
    profile: str = _field("small", "named preset applied before the config file and options",
                          ("small", "paper", "real"))
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ExperimentConfig":
        config = cls()
        apply_overrides(config, values, source="config")
        return config

    def save(self, path: str | Path) -> None:
        """Write the resolved config as JSON (atomically)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


#: the sections of ExperimentConfig that hold options, by attribute name
SECTIONS = ("generator", "discriminator", "loss", "data", "train")

#: the training recipe for real slides: least-squares GAN and the authors' identity loss, plus the
#: pathology-consistency terms (nuclei stay where the source has them; the DAB distribution matches the
#: real Ki-67's). benchmarks/real_tissue.py measures it against the paper's losses (README "Real tissue").
RECIPE_LOSS: dict[str, Any] = {"adversarial": "lsgan", "identity_weight": 5.0, "structure_weight": 2.0,
                               "positivity_weight": 10.0}

#: named presets: overrides of the dataclass defaults (which are the paper's settings)
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "small": {
        "generator": {"base_filters": 8, "num_residual_blocks": 3},
        "discriminator": {"base_filters": 16, "num_layers": 2},
        "data": {"tile_size": 72, "tile_overlap": 36, "crop_size": 64, "sample_train_tiles": 160,
                 "sample_val_tiles": 8, "sample_tile_size": 72, "max_val_tiles": 8},
        "train": {"epochs": 10, "batch_size": 4, "pool_size": 50},
        "loss": dict(RECIPE_LOSS),  # the paper's losses invert the (tissue-like) sample data, as they do real slides
    },
    # real slides: the recipe; model size and crop stay the paper's unless overridden
    "real": {"loss": dict(RECIPE_LOSS)},
}


class ConfigError(InputError):
    """An invalid option; the message names it."""


def apply_overrides(config: ExperimentConfig, values: dict, source: str) -> ExperimentConfig:
    """Set nested values (``{"train": {"epochs": 3}, "name": ...}``) on ``config`` in place.

    Unknown keys are errors, so a typo in a config file never passes silently.
    """
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section '{key}' must be a mapping, got {value!r}")
            section = getattr(config, key)
            names = {f.name for f in dataclasses.fields(section)}
            for option, option_value in value.items():
                if option not in names:
                    raise ConfigError(f"{source}: unknown option '{key}.{option}'")
                setattr(section, option, option_value)
        elif key in {f.name for f in dataclasses.fields(config)}:
            setattr(config, key, value)
        else:
            raise ConfigError(f"{source}: unknown option '{key}'")
    return config


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into nested dicts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    text = path.read_text()
    values = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping at the top level")
    return values


def resolve_config(profile: str = "small", file_values: dict | None = None,
                   cli_values: dict | None = None) -> ExperimentConfig:
    """Defaults < profile < config file < command line, then validated."""
    config = ExperimentConfig()
    file_values = dict(file_values or {})
    cli_values = dict(cli_values or {})
    profile = cli_values.get("profile", file_values.get("profile", profile))
    if profile not in PROFILES:
        raise ConfigError(f"--profile: unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    apply_overrides(config, PROFILES[profile], source=f"profile {profile}")
    config.profile = profile
    apply_overrides(config, file_values, source="config file")
    apply_overrides(config, cli_values, source="command line")
    validate_config(config)
    return config


#: command-line prefix of each section's options (discriminator options would clash with the generator's)
CLI_PREFIX = {"generator": "", "discriminator": "disc-", "loss": "", "data": "", "train": ""}


def _option(section: str, name: str) -> str:
    """The command-line flag of an option, e.g. ``--disc-base-filters``."""
    return f"--{CLI_PREFIX.get(section, '')}{name.replace('_', '-')}"


def validate_config(config: ExperimentConfig, num_replicas: int = 1) -> None:
    """Reject invalid values with a message naming the option."""
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for field in dataclasses.fields(section):
            value = getattr(section, field.name)
            choices = field.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{_option(section_name, field.name)}: {value!r} is not one of {list(choices)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{_option(section_name, field.name)} must be a finite number, got {value}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{_option(section_name, field.name)} must not be negative, got {value}")
    generator, data, train = config.generator, config.data, config.train
    factor = 2 ** generator.num_downsamplings
    for name in ("tile_size", "crop_size", "sample_tile_size"):
        if getattr(data, name) % factor or getattr(data, name) == 0:
            raise ConfigError(f"{_option('data', name)} must be a positive multiple of {factor} "
                              f"(2 ** num_downsamplings), got {getattr(data, name)}")
    if data.crop_size > data.tile_size:
        raise ConfigError(f"--crop-size ({data.crop_size}) must not exceed --tile-size ({data.tile_size})")
    if data.tile_overlap >= data.tile_size:
        raise ConfigError(f"--tile-overlap ({data.tile_overlap}) must be smaller than --tile-size ({data.tile_size})")
    if data.mpp is not None and data.mpp <= 0:
        raise ConfigError(f"--mpp must be positive, got {data.mpp}")
    if not 0.0 <= data.min_tissue <= 1.0:
        raise ConfigError(f"--min-tissue must be in [0, 1], got {data.min_tissue}")
    if not 0.0 <= data.val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {data.val_fraction}")
    if (data.he_dir is None) != (data.ki67_dir is None):
        raise ConfigError("--he-dir and --ki67-dir must be given together (or neither, for the sample data)")
    for name in ("base_filters", "num_downsamplings"):
        if getattr(generator, name) < 1:
            raise ConfigError(f"{_option('generator', name)} must be at least 1")
    if config.discriminator.base_filters < 1 or config.discriminator.num_layers < 1:
        raise ConfigError("--disc-base-filters and --disc-num-layers must be at least 1")
    if train.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {train.epochs}")
    if train.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {train.batch_size}")
    if train.batch_size % num_replicas:
        raise ConfigError(f"--batch-size ({train.batch_size}) must be a multiple of the number of "
                          f"replicas ({num_replicas})")
    if train.distribute == "multiworker" and train.mixed_precision == "mixed_float16":
        raise ConfigError("--mixed-precision mixed_float16 is not supported with --distribute multiworker (its loss "
                          "scaling skips a step only on the workers that overflowed); use mixed_bfloat16")
    if train.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {train.learning_rate}")
    if not 0 < train.lr_decay_rate <= 1:
        raise ConfigError(f"--lr-decay-rate must be in (0, 1], got {train.lr_decay_rate}")
    if train.lr_schedule == "exponential" and train.lr_decay_epochs < 1:
        raise ConfigError("--lr-decay-epochs must be at least 1")
    if not 0 <= train.beta_1 < 1 or not 0 <= train.beta_2 < 1:
        raise ConfigError("--beta-1 and --beta-2 must be in [0, 1)")
