"""The Ki-67 index map of a readout, as a layer over its virtual slide in the viewer.

``virtual-ihc readout`` writes ``index_layer.png`` (one square of colour per region, transparent
where no nucleus was counted) and ``index_layer.json`` (how many regions, how many virtual-slide
pixels a region, the virtual slide's name and size). :func:`open_index_layer` reads both and finds,
among the viewer's slides, the one the readout was made of (that size, and that file name when
several slides have the size: an H&E and the virtual Ki-67 stained from it usually do); the page
draws the layer over that slide's pane with a toggle and an opacity slider.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from virtual_ihc.viewer.deep_zoom import SlideOpenError, ViewerSlide


@dataclasses.dataclass(frozen=True)
class IndexLayer:
    """A readout's index layer and where it lies.

    Attributes:
        png: the layer image (PNG bytes, RGBA).
        slide: index of the slide it covers among the viewer's slides.
        width_fraction: the layer's width over the slide's width (regions at the right edge reach past it).
        folder: the readout folder.
    """

    png: bytes
    slide: int
    width_fraction: float
    folder: Path


def open_index_layer(folder: str | Path, slides: list[ViewerSlide]) -> IndexLayer:
    """The index layer of the readout in ``folder``, over the slide among ``slides`` it was made of.

    Raises:
        SlideOpenError: the folder has no readable layer, or no slide has the readout's virtual-slide size.
    """
    folder = Path(folder)
    try:
        description = json.loads((folder / "index_layer.json").read_text())
        png = (folder / description["image"]).read_bytes() if "/" not in description["image"] else b""
        width, height = (int(value) for value in description["virtual_size"])
        layer_width = float(description["columns"]) * float(description["region_px"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SlideOpenError(f"{folder}: not a virtual-ihc readout folder (index_layer.json / .png: {error})") from None
    if not png.startswith(b"\x89PNG"):
        raise SlideOpenError(f"{folder}: index_layer.png is missing or not a PNG")
    sized = [index for index, slide in enumerate(slides) if tuple(slide.dimensions) == (width, height)]
    named = [index for index in sized if slides[index].name == description.get("slide")]
    if named or sized:
        # the slide of the readout's name, else the last of its size (the virtual slide follows the H&E)
        return IndexLayer(png, (named or sized)[-1], layer_width / width, folder)
    raise SlideOpenError(f"{folder}: the readout is of a {width}x{height} virtual slide, and none of the slides "
                         f"given is that size")
