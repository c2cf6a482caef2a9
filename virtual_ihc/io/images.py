"""Reading and writing RGB images, whatever their bit depth or channel layout.

Every reader in the project goes through :func:`read_image_rgb`, so grayscale,
RGBA, 16-bit and TIFF inputs are handled in one place and always come out as
``uint8`` RGB arrays of shape ``(H, W, 3)``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from virtual_ihc.errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff")
#: ``.<name>.<pid>.tmp<suffix>``: a file being written by process ``pid`` (or left by a killed one);
#: the older random form ``.<name>.<8 chars>.tmp<suffix>`` is recognised too
_TEMPORARY = re.compile(r"^\..+\.([A-Za-z0-9_]+)\.tmp(\.[A-Za-z0-9]+)?$")


class ImageReadError(InputError):
    """An image file could not be read or decoded; the message names the file."""


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files (by extension) under ``folder``.

    Raises:
        FileNotFoundError: the folder does not exist (message names it).
        NotADirectoryError: the path is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder does not exist: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    pattern = "**/*" if recursive else "*"
    return sorted(
        path for path in folder.glob(pattern)
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def to_rgb_uint8(image: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Convert a decoded array to ``uint8`` RGB ``(H, W, 3)``.

    Accepts grayscale ``(H, W)`` / ``(H, W, 1)``, RGB, RGBA (composited over white,
    the colour of an empty glass slide), ``uint8``, ``uint16`` (scaled by 1/257) and
    float images in [0, 1]. ``source`` only appears in error messages.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ImageReadError(f"{source}: expected a 2-D or 3-D image, got shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0)
    elif image.dtype.kind == "f":
        image = np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{source}: unsupported pixel type {image.dtype}")
    image = np.asarray(image, dtype=np.float32) if image.dtype != np.uint8 else image
    channels = image.shape[2]
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 2:  # grey + alpha
        grey, alpha = image[:, :, :1].astype(np.float32), image[:, :, 1:2].astype(np.float32) / 255.0
        image = np.repeat(grey * alpha + 255.0 * (1.0 - alpha), 3, axis=2)
    elif channels == 4 and image.dtype == np.uint8 and image[:, :, 3].min() == 255:
        image = image[:, :, :3]  # opaque (e.g. every slide region inside the scan): nothing to blend
    elif channels == 4:
        rgb, alpha = image[:, :, :3].astype(np.float32), image[:, :, 3:4].astype(np.float32) / 255.0
        image = rgb * alpha + 255.0 * (1.0 - alpha)
    elif channels != 3:
        raise ImageReadError(f"{source}: unsupported channel count {channels}")
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def read_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8`` RGB ``(H, W, 3)``.

    PNG/JPEG/BMP go through OpenCV, TIFF through ``tifffile`` (first page, level 0).

    Raises:
        ImageReadError: missing, empty, truncated or undecodable file (message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    if path.suffix.lower() in TIFF_EXTENSIONS:
        return to_rgb_uint8(_read_tiff(path), source=str(path))
    return decode_image_rgb(np.fromfile(str(path), dtype=np.uint8), source=str(path))


def decode_image_rgb(data: bytes | np.ndarray, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded PNG/JPEG/BMP bytes as ``uint8`` RGB ``(H, W, 3)``.

    Raises:
        ImageReadError: undecodable bytes (message names ``source``).
    """
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"{source}: not a decodable image")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return to_rgb_uint8(image, source=source)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            page = tif.pages[0]
            image = page.asarray()
            if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
                image = np.iinfo(image.dtype).max - image if image.dtype.kind == "u" else 1.0 - image
    except Exception as error:  # tifffile raises many types for broken files
        raise ImageReadError(f"{path}: unreadable TIFF ({error})") from error
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # planar (C, H, W) storage
    return image


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8`` RGB image."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def temporary_path(path: str | os.PathLike) -> Path:
    """A new, empty hidden sibling of ``path`` to write before renaming it to ``path``.

    Named ``.<name>.<pid>.tmp<suffix>`` (so :func:`remove_orphaned_temporaries`
    can tell a live writer's file from a killed one's) and created with mode
    0666 minus the process umask, so the renamed file has the permissions of
    any other file the user writes (``tempfile.mkstemp`` would make it 0600).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    tmp.unlink(missing_ok=True)  # left by an earlier process with the same pid
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    return tmp


def write_csv_rows(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | tuple[str, ...]) -> Path:
    """Write ``rows`` under a header of ``fieldnames`` atomically (temporary name, then rename)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fieldnames))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_orphaned_temporaries(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete temporary files left under ``folder`` by writers that were killed; returns how many.

    Files of :func:`temporary_path` whose process is still running are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for candidate in (folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")):
        match = _TEMPORARY.match(candidate.name)
        if not match or not candidate.is_file():
            continue
        owner = match.group(1)
        if owner.isdigit() and _process_alive(int(owner)):
            continue
        candidate.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("removed %d temporary file(s) left by interrupted writes under %s", removed, folder)
    return removed


def write_image_rgb(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Write a ``uint8`` RGB image atomically (temporary name, then rename).

    The format follows the extension (PNG, JPEG, TIFF). A crash never leaves a
    half-written file under ``path``; the file gets the user's umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = to_rgb_uint8(np.asarray(image))
    suffix = path.suffix.lower()
    tmp_name = temporary_path(path)
    try:
        if suffix in TIFF_EXTENSIONS:
            import tifffile

            tifffile.imwrite(tmp_name, image, photometric="rgb", compression="zlib")
        else:
            params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
            ok, buffer = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise ValueError(f"{path}: could not encode as {suffix}")
            with open(tmp_name, "wb") as handle_out:
                handle_out.write(buffer.tobytes())
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
        raise
    return path
