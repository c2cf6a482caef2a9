"""The default demo (``python train.py``: small profile, built-in sample data) stains like a Ki-67.

Measured on the sample data's held-out validation tiles by the pathology guard, with the
same measures as real tissue: the nuclei of the H&E are found again in the virtual Ki-67,
glass stays glass, the stain is not inverted and the eosin is gone. The run is the
default configuration cut to 3 epochs of 20 steps (the full demo trains 10 x 40).
"""

import pytest

from virtual_ihc.config import resolve_config
from virtual_ihc.training.trainer import run_training

pytestmark = pytest.mark.slow


def test_default_demo_keeps_the_nuclei_and_the_glass_of_the_held_out_he(tmp_path):
    config = resolve_config(cli_values={"out": str(tmp_path / "demo"), "train": {
        "epochs": 3, "steps_per_epoch": 20, "export": False, "verbose": "0"}})
    assert config.profile == "small" and config.data.he_dir is None  # the default demo, shortened
    result = run_training(config)
    summary = result.consistency
    values = summary.values
    print(f"\ndefault demo after 60 steps: {summary.verdict()}")
    assert values["nuclei_f1"] >= 0.7
    assert values["glass_kept"] >= 0.9
    assert values["eosin_ratio"] <= 0.25
    assert "inverted" not in summary.flags and "nuclei_lost" not in summary.flags
