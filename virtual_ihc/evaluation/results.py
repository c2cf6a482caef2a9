"""What an evaluation produces: aggregated rows, per-tile values and one result per model.

:mod:`~virtual_ihc.evaluation.evaluator` fills them; :mod:`~virtual_ihc.evaluation.report`
and :mod:`~virtual_ihc.evaluation.figures` read them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from virtual_ihc.evaluation.models import ModelEntry
from virtual_ihc.histology.consistency import ConsistencySummary

#: the model name of rows describing the real Ki-67 tiles themselves
REAL_KI67 = "real_ki67"
#: per-tile metric of paired sets: the Ki-67 index of the registered real Ki-67 tile
REFERENCE_INDEX = "reference_ki67_index"


@dataclasses.dataclass
class MetricRow:
    """One aggregated value: ``mean`` +- ``std`` over ``n`` tiles (or ``n`` samples for FID/KID)."""

    model: str
    variant: str
    epoch: int | None
    tile_set: str
    metric: str
    mean: float
    std: float
    n: int
    note: str = ""


@dataclasses.dataclass
class TileValue:
    """One metric of one tile."""

    model: str
    epoch: int | None
    tile_set: str
    tile: str
    metric: str
    value: float


@dataclasses.dataclass
class ModelResult:
    """Everything measured for one model entry, plus example images for the figures.

    ``examples``: ``uint8 (H, W, 3)`` images keyed ``he``, ``virtual_ki67``,
    ``reconstructed_he`` (cycle models only) and ``reference_ki67`` (paired sets only),
    all of the first tile of the first H&E set.
    """

    entry: ModelEntry
    rows: list[MetricRow]
    tiles: list[TileValue]
    examples: dict[str, np.ndarray]
    consistency: dict[str, ConsistencySummary] = dataclasses.field(default_factory=dict)  # tile set -> summary
