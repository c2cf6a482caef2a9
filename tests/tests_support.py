"""Helpers shared by tests (importable because ``tests/`` holds the root conftest)."""

from virtual_ihc.config import ExperimentConfig, resolve_config


def tiny_overrides(out, **sections) -> dict:
    """Command-line-style overrides for a tiny, fast run writing to ``out``."""
    values = {
        "out": str(out),
        "generator": {"base_filters": 4, "num_residual_blocks": 1},
        "discriminator": {"base_filters": 8, "num_layers": 1},
        "data": {"sample_train_tiles": 12, "sample_val_tiles": 4, "sample_tile_size": 40, "tile_size": 40,
                 "tile_overlap": 20, "crop_size": 32, "max_val_tiles": 4},
        "train": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "pool_size": 4, "verbose": "0",
                  "sample_images": 1},
        # the paper's losses (the small profile adds the real-tissue recipe's terms; tests that need them say so)
        "loss": {"adversarial": "bce", "identity_weight": 0.0, "structure_weight": 0.0, "positivity_weight": 0.0},
    }
    for section, options in sections.items():
        if isinstance(options, dict):
            values.setdefault(section, {}).update(options)
        else:
            values[section] = options
    return values


def tiny_config_for(out, **sections) -> ExperimentConfig:
    """A resolved tiny configuration writing to ``out`` (sections override the tiny defaults)."""
    return resolve_config(cli_values=tiny_overrides(out, **sections))
