"""Reading and writing single DAVIS images: RGB JPEG frames and palette PNG annotations.

Every failure becomes a :class:`DavisError` that names the file, so a broken download points
at the file to replace instead of ending in a bare Pillow traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DavisError

#: Pillow's decoders raise these for truncated or corrupt files.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


def davis_palette() -> list[int]:
    """The 256-colour palette DAVIS annotations use (PASCAL VOC's bit-interleaved colour map)."""
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette.extend((red, green, blue))
    return palette


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image, read from its header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DavisError(f"{path}: file not found") from None
    except _DECODE_ERRORS as error:
        raise DavisError(f"{path}: unreadable image ({error})") from None
    return height, width


def read_rgb(path: Path) -> np.ndarray:
    """A frame as uint8 H×W×3 (greyscale JPEGs are expanded to RGB)."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DavisError(f"{path}: file not found") from None
    except _DECODE_ERRORS as error:
        raise DavisError(f"{path}: unreadable image ({error})") from None


def read_ids(path: Path) -> np.ndarray:
    """An annotation as uint8 H×W object ids.

    Palette PNGs (DAVIS 2017) are read as their indices: 0 background, 1..K objects, 255 void.
    Greyscale PNGs (the original DAVIS 2016 release, 0/255) become one object: id 1 where the
    value is at least 128. Colour (RGB) annotations are refused: their colours are not ids.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                return np.asarray(image, dtype=np.uint8)
            if mode in ("L", "1", "I", "I;16"):
                values = np.asarray(image.convert("L"), dtype=np.uint8)
                return (values >= 128).astype(np.uint8)
    except FileNotFoundError:
        raise DavisError(f"{path}: file not found") from None
    except _DECODE_ERRORS as error:
        raise DavisError(f"{path}: unreadable image ({error})") from None
    raise DavisError(
        f"{path}: annotation has image mode {mode!r}; expected a palette ('P') PNG of object ids "
        "or a greyscale ('L') 0/255 PNG"
    )


def write_ids(path: Path | BinaryIO, ids: np.ndarray) -> None:
    """Save H×W object ids (uint8) as a DAVIS palette PNG."""
    array = np.asarray(ids)
    if array.ndim != 2:
        raise ValueError(f"object ids must be H×W, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("object ids must lie in 0..255")
        array = array.astype(np.uint8)
    image = Image.fromarray(array)  # mode "L"; putpalette turns it into "P"
    image.putpalette(davis_palette())
    image.save(path, format="PNG")


def write_rgb(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    """Save a uint8 H×W×3 frame as JPEG."""
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8 H×W×3, got {array.dtype} {array.shape}")
    Image.fromarray(array).save(path, format="JPEG", quality=quality)
