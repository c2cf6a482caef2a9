"""The JSON record written next to NST outputs: settings and weights provenance."""

from __future__ import annotations

import json
from pathlib import Path

from virtual_ihc.nst.config import NSTConfig
from virtual_ihc.weights import describe_weights

RECORD_NAME = "nst_config.json"


def settings_record(config: NSTConfig, resolved_weights: str | None) -> dict:
    """Settings and weights provenance; ``meaningful`` is false for random weights."""
    return {
        "method": "neural style transfer (Gatys et al. 2016), VGG19",
        "config": config.to_json_dict(),
        "weights": describe_weights(resolved_weights),
        "meaningful": resolved_weights is not None,
    }


def write_record(path: Path, record: dict) -> Path:
    """Write ``record`` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
