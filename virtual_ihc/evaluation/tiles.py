"""Tile folders for evaluation: indexing, pairing by file name, and batching.

Tiles are named by their path relative to the folder (``sub/tile_001.png``); a
pair is two tiles with the same relative name in an H&E and a Ki-67 folder
(the layout of registered pairs, ``pairs/he/`` and ``pairs/ki67/``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from virtual_ihc.errors import InputError
from virtual_ihc.io.images import list_images, read_image_rgb


class EvaluationInputError(InputError):
    """Unusable evaluation input (missing folder, no tiles, mismatched pairs); the message names it."""


@dataclasses.dataclass(frozen=True)
class TileFolder:
    """The image files of one folder, by relative name (sorted)."""

    root: Path
    names: tuple[str, ...]

    def read(self, name: str) -> np.ndarray:
        """``uint8 (H, W, 3)`` RGB of the tile ``name``."""
        return read_image_rgb(self.root / name)

    def read_many(self, names: list[str]) -> np.ndarray:
        """``uint8 (N, H, W, 3)`` of tiles of equal size."""
        tiles = [self.read(name) for name in names]
        shapes = {tile.shape for tile in tiles}
        if len(shapes) > 1:
            raise EvaluationInputError(f"{self.root}: tiles {names} differ in size {sorted(shapes)}")
        return np.stack(tiles)


def read_pairs(reference: TileFolder, partner: TileFolder, names: list[str], size: tuple[int, int]) -> np.ndarray:
    """``uint8 (N, H, W, 3)``: the tiles ``names`` of ``reference``, paired with the same-named tiles
    of ``partner``, which are ``size = (H, W)``.

    Raises:
        EvaluationInputError: a pair differs in size (the message names both files and their sizes).
    """
    tiles = []
    for name in names:
        tile = reference.read(name)
        if tile.shape[:2] != tuple(size):
            raise EvaluationInputError(
                f"paired tiles differ in size: {partner.root / name} is {size[0]}x{size[1]} px but "
                f"{reference.root / name} is {tile.shape[0]}x{tile.shape[1]} px; the two tiles of a pair must "
                "have the same size (as data_prep.register_pairs writes them)")
        tiles.append(tile)
    return np.stack(tiles)


def index_tiles(folder: str | Path, option: str, max_tiles: int = 0) -> TileFolder:
    """The image files under ``folder`` (the first ``max_tiles`` by name when > 0).

    Raises:
        EvaluationInputError: the folder is missing, not a folder, or holds no image
            (the message names ``option`` and the folder).
    """
    root = Path(folder)
    try:
        paths = list_images(root)
    except (FileNotFoundError, NotADirectoryError) as error:
        raise EvaluationInputError(f"{option}: {error}") from error
    if not paths:
        raise EvaluationInputError(f"{option}: no image files (.png, .jpg, .tif, ...) in {root}")
    names = tuple(path.relative_to(root).as_posix() for path in paths)
    return TileFolder(root, names[:max_tiles] if max_tiles > 0 else names)


def names_match(he: TileFolder, ki67: TileFolder) -> bool:
    """Whether two folders hold exactly the same tile names (then they are pairs)."""
    return set(he.names) == set(ki67.names)


def check_pairs(he: TileFolder, ki67: TileFolder, option: str) -> None:
    """Require identical names in both folders of a pair set.

    Raises:
        EvaluationInputError: names on one side only (a few of each are listed).
    """
    only_he = sorted(set(he.names) - set(ki67.names))
    only_ki67 = sorted(set(ki67.names) - set(he.names))
    if only_he or only_ki67:
        raise EvaluationInputError(
            f"{option}: H&E and Ki-67 tiles must have identical file names; {len(only_he)} only in {he.root} "
            f"(e.g. {only_he[:3]}), {len(only_ki67)} only in {ki67.root} (e.g. {only_ki67[:3]})")


def batches(folder: TileFolder, batch_size: int, names: tuple[str, ...] | None = None
            ) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(names, uint8 (B, H, W, 3))`` batches in name order; a size change starts a new batch."""
    pending: list[tuple[str, np.ndarray]] = []
    for name in names if names is not None else folder.names:
        tile = folder.read(name)
        if pending and (len(pending) == batch_size or tile.shape != pending[0][1].shape):
            yield [n for n, _ in pending], np.stack([t for _, t in pending])
            pending = []
        pending.append((name, tile))
    if pending:
        yield [n for n, _ in pending], np.stack([t for _, t in pending])
