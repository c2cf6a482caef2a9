"""QuPath's GeoJSON: the cells we write (detections) and the regions of interest we read (annotations).

QuPath exports and imports objects as a GeoJSON ``FeatureCollection`` in the pixel frame of
the image's full resolution (origin at the top-left corner). Each cell is written as QuPath
writes a detection::

    {"type": "Feature", "id": "<uuid>", "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...]]},
     "properties": {"objectType": "detection",
                    "classification": {"name": "Positive", "color": [200, 50, 50]},
                    "measurements": {"DAB: Mean": 0.12, "Area px^2": 118}}}

(File > Import objects in QuPath 0.4+ reads them onto the H&E slide.) :class:`CellWriter`
streams the features into the file, so the cells of a whole slide are never all in memory;
:func:`read_roi` reads the annotations a pathologist drew (Polygon or MultiPolygon features,
a FeatureCollection, a list of features or one feature) into one shapely geometry.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.readout.cells import Cells

#: classification colours (RGB): red positive, blue negative nuclei
CLASS_COLOURS = {"Positive": [200, 50, 50], "Negative": [112, 112, 225]}
#: decimals kept of each coordinate (level-0 pixels)
COORDINATE_DECIMALS = 2


class RoiError(InputError):
    """A region-of-interest file cannot be used; the message names it."""


def cell_features(cells: Cells, id_prefix: str = "") -> list[dict]:
    """One QuPath detection feature per cell (coordinates already in the H&E's level-0 frame)."""
    features = []
    for ring, positive, mean_dab, area in zip(cells.outlines, cells.positive, cells.mean_dab, cells.areas):
        name = "Positive" if positive else "Negative"
        features.append({
            "type": "Feature", "id": str(uuid.uuid4()),
            "geometry": {"type": "Polygon", "coordinates": [np.round(ring, COORDINATE_DECIMALS).tolist()]},
            "properties": {"objectType": "detection",
                           "classification": {"name": name, "color": CLASS_COLOURS[name]},
                           "measurements": {"DAB: Mean": round(float(mean_dab), 4), "Area px^2": int(area)}}})
    return features


class CellWriter:
    """Streams cell features into a GeoJSON FeatureCollection, written under a temporary name and renamed.

    Use as a context manager; the file appears under its name only if the block finishes.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.count = 0
        self._file = None

    def __enter__(self) -> "CellWriter":
        self._file = open(self.tmp, "w", encoding="utf-8")
        self._file.write('{"type": "FeatureCollection", "features": [')
        return self

    def write(self, cells: Cells) -> None:
        for feature in cell_features(cells):
            self._file.write(("\n" if not self.count else ",\n") + json.dumps(feature, separators=(",", ":")))
            self.count += 1

    def __exit__(self, kind, value, traceback) -> None:
        self._file.write("\n]}\n")
        self._file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def read_roi(path: str | os.PathLike):
    """The union of the Polygon / MultiPolygon features of a QuPath GeoJSON file, as one shapely geometry.

    Raises:
        RoiError: the file is missing, is not JSON, or holds no polygon; the message names it.
    """
    from shapely.geometry import shape
    from shapely.ops import unary_union

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RoiError(f"{path}: no such region-of-interest file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RoiError(f"{path}: not a GeoJSON file ({error})") from None
    if isinstance(data, dict):
        features = data.get("features", [data] if data.get("type") == "Feature" else [])
    else:
        features = data if isinstance(data, list) else []
    polygons = []
    for feature in features:
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if geometry and geometry.get("type") in ("Polygon", "MultiPolygon"):
            try:
                polygons.append(shape(geometry).buffer(0))  # buffer(0) mends self-touching rings
            except (ValueError, TypeError, AttributeError) as error:
                raise RoiError(f"{path}: a {geometry.get('type')} cannot be read ({error})") from None
    if not polygons:
        raise RoiError(f"{path}: no Polygon or MultiPolygon annotation in the file")
    return unary_union(polygons)
