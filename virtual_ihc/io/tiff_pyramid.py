"""Pyramidal tiled TIFFs that OpenSlide and tiffslide open, and their downsample rule.

OpenSlide's "generic tiled TIFF" format wants every pyramid level as a top-level
TIFF directory (SubIFD pyramids are only seen by tiffslide), tiled, and takes
µm/px from the X/Y resolution tags when the unit is centimetre. Levels halve
while the short side stays at least a minimum (:func:`pyramid_downsamples`).
Two writers:

- :func:`write_pyramidal_tiff` writes a whole image at once from a tile
  callback (:data:`TileRenderer`), level by level (tifffile);
- :class:`StreamedPyramid` over :class:`TiffPyramidWriter` streams a stained
  slide in as its rows are finished.

:class:`StreamedPyramid` receives the finished rows of level 0 top to bottom
(in bands of any height). Whenever a level has a full row of TIFF tiles
(:data:`TIFF_TILE` rows), the tiles are compressed and appended to the file,
and the rows, halved by 2 x 2 area averaging, go on to the next level, which
does the same. So every level is written while the slide is being stained,
and the pixels waiting for their tile row are at most :data:`TIFF_TILE` rows a
level: memory and the resume state stay a band, whatever the slide's height,
and nothing is stored twice on disk.

:class:`TiffPyramidWriter` writes the container: a BigTIFF whose tile data of
all levels is interleaved in the order it was produced (TIFF readers follow
each tile's offset, so the order does not matter), and whose directories, one
top-level directory per level with the tags ``write_pyramidal_tiff`` writes
(the layout OpenSlide's generic-TIFF reader and tiffslide open), are appended
when the last tile is in. Its :meth:`~TiffPyramidWriter.state` (file length
and tile tables) and the pyramid's pending rows are what a resumed run needs:
the file is cut back to the recorded length and writing goes on.
"""

from __future__ import annotations

import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

#: TIFF tile side of the output
TIFF_TILE = 256
#: reduced levels stop before their short side falls under this
MIN_LEVEL_SIDE = 256
#: --compression -> TIFF Compression tag (7: JPEG, 8: Adobe deflate)
COMPRESSIONS = {"jpeg": 7, "deflate": 8}
#: deflate level of lossless tiles
DEFLATE_LEVEL = 6
WHITE = 255

# TIFF field types: code, struct format of one value
_SHORT, _LONG, _RATIONAL, _ASCII, _LONG8 = (3, "H"), (4, "I"), (5, "II"), (2, "s"), (16, "Q")
_BIGTIFF_HEADER = struct.Struct("<2sHHHQ")  # byte order, 43, offset size 8, 0, first IFD offset


#: render_tile(downsample, y, x, height, width) -> uint8 RGB (height, width, 3);
#: ``y, x`` are in pixels of the level whose downsample is given
TileRenderer = Callable[[int, int, int, int, int], np.ndarray]


def pyramid_downsamples(height: int, width: int, min_side: int = 512) -> list[int]:
    """Power-of-two downsamples ``[1, 2, 4, ...]`` while the level's short side stays >= ``min_side``."""
    downsamples = [1]
    while min(height, width) // (downsamples[-1] * 2) >= min_side:
        downsamples.append(downsamples[-1] * 2)
    return downsamples


def _level_tiles(render_tile: TileRenderer, downsample: int, height: int, width: int,
                 tile_size: int) -> Iterator[np.ndarray]:
    """Full-size tiles of one level in row-major order, edge tiles padded with white."""
    for y in range(0, height, tile_size):
        for x in range(0, width, tile_size):
            tile = np.full((tile_size, tile_size, 3), 255, np.uint8)
            h, w = min(tile_size, height - y), min(tile_size, width - x)
            tile[:h, :w] = render_tile(downsample, y, x, h, w)
            yield tile


def write_pyramidal_tiff(path: str | os.PathLike, shape: tuple[int, int], render_tile: TileRenderer,
                         mpp: float | None = None, tile_size: int = 256, min_level_side: int = 512,
                         compression: str = "jpeg") -> Path:
    """Write a tiled pyramidal RGB TIFF, one top-level directory per level.

    Args:
        path: output file (its folder is created).
        shape: ``(height, width)`` of level 0.
        render_tile: pixel source, called once per tile and level.
        mpp: µm per level-0 pixel written to the resolution tags (``None`` = no metadata).
        tile_size: TIFF tile side (multiple of 16).
        min_level_side: smallest short side of a reduced level.
        compression: TIFF compression (``"jpeg"``, ``"zlib"``, ``None``).
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = shape
    with tifffile.TiffWriter(path, bigtiff=height * width * 3 > 2**31) as tif:
        for index, downsample in enumerate(pyramid_downsamples(height, width, min_level_side)):
            level_height, level_width = height // downsample, width // downsample
            options = {}
            if mpp is not None:
                pixels_per_cm = 1e4 / (mpp * downsample)
                options = dict(resolution=(pixels_per_cm, pixels_per_cm), resolutionunit="CENTIMETER")
            tif.write(_level_tiles(render_tile, downsample, level_height, level_width, tile_size),
                      shape=(level_height, level_width, 3), dtype=np.uint8, tile=(tile_size, tile_size),
                      photometric="rgb", compression=compression, subfiletype=1 if index else 0,
                      **options)
    return path


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """``(height, width)`` of every pyramid level: level 0, then halves while the short side stays >= 256."""
    return [(height // downsample, width // downsample)
            for downsample in pyramid_downsamples(height, width, MIN_LEVEL_SIDE)]


def halve(rows: np.ndarray) -> np.ndarray:
    """``uint8 (n, w, 3)`` -> ``(n // 2, w // 2, 3)``: each pixel the rounded mean of a 2 x 2 block."""
    height, width = len(rows) // 2, rows.shape[1] // 2
    if height == 0:
        return np.empty((0, width, 3), np.uint8)
    return cv2.resize(np.ascontiguousarray(rows[:2 * height, :2 * width]), (width, height),
                      interpolation=cv2.INTER_AREA)


def encode_tile(tile: np.ndarray, compression: str) -> bytes:
    """A ``uint8`` RGB tile as TIFF tile data, encoded as tifffile encodes it.

    JPEG: a JFIF stream in YCbCr with 2 x 2 chroma subsampling at libjpeg's
    default quality; deflate: zlib of the raw RGB bytes.
    """
    if compression == "jpeg":
        import imagecodecs

        return imagecodecs.jpeg_encode(tile, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2))
    if compression == "deflate":
        return zlib.compress(np.ascontiguousarray(tile).tobytes(), DEFLATE_LEVEL)
    raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")


def _resolution(pixels_per_cm: float) -> list[int]:
    """A TIFF RATIONAL ``[numerator, denominator]`` close to ``pixels_per_cm``, both fitting 32 bits."""
    fraction = Fraction(pixels_per_cm).limit_denominator(max(1, min(10_000, int(0xFFFFFFFF // (pixels_per_cm + 1)))))
    return [fraction.numerator, fraction.denominator]


class TiffPyramidWriter:
    """A pyramidal tiled RGB BigTIFF written a tile at a time, the levels' tiles in any order.

    Args:
        path: the file (created, or continued from ``state``).
        shapes: ``(height, width)`` of each level, level 0 first (see :func:`level_shapes`).
        compression: ``"jpeg"`` or ``"deflate"``.
        mpp: µm per level-0 pixel for the resolution tags (``None`` = none).
        state: :meth:`state` of an earlier writer of the same file, to continue it.
        description: ASCII text for level 0's ImageDescription tag (``None`` = none).
    """

    def __init__(self, path: str | os.PathLike, shapes: list[tuple[int, int]], compression: str,
                 mpp: float | None, state: dict | None = None, description: str | None = None):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
        self.path, self.shapes, self.compression, self.mpp = Path(path), list(shapes), compression, mpp
        self.description = description
        self.grids = [(-(-height // TIFF_TILE), -(-width // TIFF_TILE)) for height, width in self.shapes]
        if state is None:
            self.offsets = [np.zeros(rows * cols, np.uint64) for rows, cols in self.grids]
            self.bytecounts = [np.zeros(rows * cols, np.uint64) for rows, cols in self.grids]
            self._file = open(self.path, "w+b")
            self._file.write(_BIGTIFF_HEADER.pack(b"II", 43, 8, 0, 0))  # first IFD offset: set by finish()
        else:
            self.offsets = [np.array(state[f"offsets_{level}"], np.uint64) for level in range(len(self.shapes))]
            self.bytecounts = [np.array(state[f"bytecounts_{level}"], np.uint64)
                               for level in range(len(self.shapes))]
            self._file = open(self.path, "r+b")
            self._file.truncate(int(state["length"]))  # drops what was written after the state was taken
            self._file.seek(0, os.SEEK_END)

    def write_tile(self, level: int, row: int, col: int, data: bytes) -> None:
        """Append the encoded tile ``(row, col)`` of ``level``."""
        offset = self._file.seek(0, os.SEEK_END)
        if offset % 2:  # TIFF data starts on a word boundary
            offset = self._file.write(b"\0") + offset
        self._file.write(data)
        index = row * self.grids[level][1] + col
        self.offsets[level][index], self.bytecounts[level][index] = offset, len(data)

    def state(self) -> dict[str, np.ndarray]:
        """File length and tile tables (the file flushed first): what continuing the file needs."""
        self._file.flush()
        state = {"length": np.uint64(self._file.seek(0, os.SEEK_END))}
        for level in range(len(self.shapes)):
            state[f"offsets_{level}"], state[f"bytecounts_{level}"] = self.offsets[level], self.bytecounts[level]
        return state

    def finish(self) -> Path:
        """Append one directory per level (chained, level 0 first), point the header at them, close.

        Raises:
            ValueError: a tile was never written.
        """
        for level, counts in enumerate(self.bytecounts):
            if not counts.all():
                raise ValueError(f"{self.path}: {int((counts == 0).sum())} tiles of level {level} were not written")
        end = self._file.seek(0, os.SEEK_END)
        first = position = end + end % 2
        directories = []
        for level in range(len(self.shapes)):
            size = len(self._directory(level, position, 0))
            following = 0 if level + 1 == len(self.shapes) else position + size + size % 2
            directories.append(self._directory(level, position, following) + b"\0" * (size % 2))
            position += size + size % 2
        self._file.seek(first)
        self._file.write(b"".join(directories))
        self._file.seek(0)
        self._file.write(_BIGTIFF_HEADER.pack(b"II", 43, 8, 0, first))
        self._file.close()
        return self.path

    def close(self) -> None:
        """Close without finishing: the file can be continued from a :meth:`state`."""
        self._file.close()

    def _directory(self, level: int, position: int, following: int) -> bytes:
        """The IFD of ``level`` at file offset ``position``: count, entries, next IFD, then the long values."""
        height, width = self.shapes[level]
        tags = [(254, _LONG, [1 if level else 0]),  # NewSubfileType: 1 = reduced-resolution image
                (256, _LONG, [width]), (257, _LONG, [height]), (258, _SHORT, [8, 8, 8]),
                (259, _SHORT, [COMPRESSIONS[self.compression]]),
                (262, _SHORT, [6 if self.compression == "jpeg" else 2]),  # YCbCr (JPEG) or RGB
                (277, _SHORT, [3]), (284, _SHORT, [1]), (305, _ASCII, [b"virtual_ihc\0"]),
                (322, _LONG, [TIFF_TILE]), (323, _LONG, [TIFF_TILE]),
                (324, _LONG8, self.offsets[level].tolist()), (325, _LONG8, self.bytecounts[level].tolist())]
        if self.description is not None and level == 0:
            tags.append((270, _ASCII, [self.description.encode("ascii") + b"\0"]))
        if self.mpp is not None:
            resolution = _resolution(1e4 / (self.mpp * 2 ** level))
            tags += [(282, _RATIONAL, resolution), (283, _RATIONAL, resolution), (296, _SHORT, [3])]  # per cm
        if self.compression == "jpeg":
            tags += [(530, _SHORT, [2, 2]), (532, _RATIONAL, [0, 1, 255, 1, 128, 1, 255, 1, 128, 1, 255, 1])]
        tags.sort()
        entries, values = [], b""
        values_start = position + 8 + 20 * len(tags) + 8
        for tag, (code, fmt), data in tags:
            if code == _ASCII[0]:
                payload, count = data[0], len(data[0])
            else:
                payload, count = struct.pack(f"<{len(data)}{fmt[0]}", *data), len(data) // len(fmt)
            if len(payload) <= 8:
                field = payload.ljust(8, b"\0")
            else:
                values += b"\0" * (len(values) % 2)
                field = struct.pack("<Q", values_start + len(values))
                values += payload
            entries.append(struct.pack("<HHQ", tag, code, count) + field)
        return struct.pack("<Q", len(tags)) + b"".join(entries) + struct.pack("<Q", following) + values


class StreamedPyramid:
    """Writes all pyramid levels of an image whose level-0 rows arrive top to bottom.

    Args:
        writer: the TIFF, with the levels of :func:`level_shapes`.
        state: :meth:`state` of an interrupted run (the pending rows), to continue it.
    """

    def __init__(self, writer: TiffPyramidWriter, state: dict | None = None):
        self.writer = writer
        levels = range(len(writer.shapes))
        if state is None:
            self.pending = [np.empty((0, width, 3), np.uint8) for _, width in writer.shapes]
            self.rows_written = [0] * len(writer.shapes)
        else:
            self.pending = [np.array(state[f"pending_{level}"], np.uint8) for level in levels]
            self.rows_written = [int(state[f"rows_written_{level}"]) for level in levels]

    def add_rows(self, rows: np.ndarray, level: int = 0) -> None:
        """Take the next ``uint8 (n, width, 3)`` rows of ``level``; write the tile rows they complete."""
        height, width = self.writer.shapes[level]
        if rows.shape[1:] != (width, 3) or self.rows_written[level] + len(self.pending[level]) + len(rows) > height:
            raise ValueError(f"rows {rows.shape} do not continue level {level} ({width}x{height}, "
                             f"{self.rows_written[level] + len(self.pending[level])} rows in)")
        pending = np.concatenate([self.pending[level], rows]) if len(self.pending[level]) else rows
        while len(pending) >= TIFF_TILE:
            self._write_tile_row(level, pending[:TIFF_TILE])
            pending = pending[TIFF_TILE:]
        self.pending[level] = np.array(pending)  # a copy: the caller's band is not kept alive

    def state(self) -> dict[str, np.ndarray]:
        """The writer's state with every level's pending rows: what continuing needs."""
        state = self.writer.state()
        for level, pending in enumerate(self.pending):
            state[f"pending_{level}"], state[f"rows_written_{level}"] = pending, np.int64(self.rows_written[level])
        return state

    def finish(self) -> Path:
        """Write every level's last (partial) tile row and the TIFF's directories.

        Raises:
            ValueError: level 0 did not receive all its rows.
        """
        for level, (height, _) in enumerate(self.writer.shapes):
            if self.rows_written[level] + len(self.pending[level]) != height:
                raise ValueError(f"level {level} got {self.rows_written[level] + len(self.pending[level])} "
                                 f"of its {height} rows")
            if len(self.pending[level]):
                self._write_tile_row(level, self.pending[level])
                self.pending[level] = self.pending[level][:0]
        return self.writer.finish()

    def _write_tile_row(self, level: int, band: np.ndarray) -> None:
        """Encode and write ``band`` (at most ``TIFF_TILE`` rows) as the next tile row; pass it on halved."""
        row = self.rows_written[level] // TIFF_TILE
        width = self.writer.shapes[level][1]
        for col, x in enumerate(range(0, width, TIFF_TILE)):
            tile = np.full((TIFF_TILE, TIFF_TILE, 3), WHITE, np.uint8)  # edge tiles are padded with white
            piece = band[:, x:x + TIFF_TILE]
            tile[:len(band), :piece.shape[1]] = piece
            self.writer.write_tile(level, row, col, encode_tile(tile, self.writer.compression))
        self.rows_written[level] += len(band)
        if level + 1 < len(self.writer.shapes):
            self.add_rows(halve(band), level + 1)
