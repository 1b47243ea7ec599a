"""Open and decode an image that a user sent: bytes or a path, any format Pillow reads, nothing trusted.

Refuses with a one-line ImageError what is not a whole, readable image of a supported mode and size
(decompression bombs included), and turns phone photos upright as their EXIF orientation says.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

try:  # an optional dependency (see pyproject.toml): without it, Pillow decodes every PNG, to the same pixels
    import pyspng
except ImportError:
    pyspng = None

from digitnet.errors import DigitnetError

# 50 million pixels: a 48-megapixel phone photo (8064 x 6048) still passes, and decoded as RGB it takes
# at most 150 MB. Pillow's own guard only warns from 89 million and refuses from 179 million, which
# lets a 100-byte PNG claiming 13,000 x 13,000 pixels make a server allocate half a gigabyte.
MAX_PIXELS = 50_000_000

RGB_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV")
ALPHA_MODES = ("LA", "PA", "RGBA", "RGBa")
DEEP_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # 16/32-bit greyscale (scientific scans, TIFF)
MODES = RGB_MODES + ALPHA_MODES + DEEP_MODES


class ImageError(DigitnetError, ValueError):
    """The input is not an image digitnet can read; the message says what is wrong and what to do."""


def load_image(source: bytes | str | os.PathLike) -> Image.Image:
    """Open and fully decode an image from bytes or a path, upright as its EXIF orientation says.

    Animated images give their first frame. Raises ImageError, with a one-line message, for anything
    that is not a whole, readable image of at most MAX_PIXELS pixels in a supported mode.
    """
    image = decode(source)
    return Image.fromarray(image) if isinstance(image, np.ndarray) else image


def decode(source: bytes | str | os.PathLike) -> Image.Image | np.ndarray:
    """As load_image, but a plain PNG comes as libspng decoded it: an 8-bit (H, W), (H, W, 3) or (H, W, 4) array.

    (Copying those pixels into a Pillow image and out again, as load_image does, costs 0.05 ms: 2% of
    preprocessing a canvas.)
    """
    fp, name = as_file(source)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 89 and 179 million pixels; treat that as the bomb it may be.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as opened:
                _check_size(opened.size, name)
                data = fp.getvalue() if isinstance(fp, io.BytesIO) else None
                if data is not None and pyspng is not None and _plain_png(opened, data):
                    return pyspng.load(data)
                else:
                    opened.load()
                    # A decoded copy, turned upright; the file (kept open by animated images) closes here.
                    image = ImageOps.exif_transpose(opened)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name} is too large to decode safely; scale it down to at most {MAX_PIXELS:,} pixels"
        ) from None
    except FileNotFoundError:
        raise ImageError(f"cannot read {name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"cannot read {name}: it is a folder, not an image file") from None
    except Image.UnidentifiedImageError:
        raise ImageError(
            f"{name} is not an image Pillow can read; use a PNG, JPEG, GIF, BMP, TIFF or WebP file"
        ) from None
    except Exception as err:  # noqa: BLE001 - decoders of untrusted bytes raise many types (OSError, SyntaxError, struct.error ...)
        raise ImageError(
            f"{name} is truncated or corrupt ({_one_line(err)}); save it again or send another file"
        ) from None
    if image.mode not in MODES:
        raise ImageError(
            f"{name} has unsupported image mode {image.mode!r}; save it as an RGB or greyscale PNG or JPEG"
        )
    return image


def as_file(source: bytes | str | os.PathLike) -> tuple[io.BytesIO | str | os.PathLike, str]:
    """A file Pillow can open, and a name for it in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("the file is empty (0 bytes); use a PNG or JPEG file")
        return io.BytesIO(source), "the file"
    if isinstance(source, (str, os.PathLike)):
        name = f"image {os.fspath(source)!r}"
        if os.path.isfile(source) and os.path.getsize(source) == 0:
            raise ImageError(f"{name} is empty (0 bytes); use a PNG or JPEG file")
        return source, name
    raise TypeError(f"source must be bytes or a path, not {type(source).__name__}")


def _plain_png(opened: Image.Image, data: bytes) -> bool:
    """Whether the bytes of an opened image are a PNG that libspng decodes to exactly Pillow's pixels, in half the time.

    That is a still, 8-bit greyscale, RGB or RGBA PNG (a canvas export is one), with no
    colour key to turn into alpha nor an EXIF block (its orientation), which only Pillow applies.
    """
    return (
        opened.format == "PNG"
        and data[24] == 8  # bit depth, in the IHDR chunk that every PNG starts with
        and opened.mode in ("L", "RGB", "RGBA")  # (libspng refuses grey with alpha)
        and "transparency" not in opened.info
        and not getattr(opened, "is_animated", False)
        and b"eXIf" not in data  # also where Pillow looks only once decoding: after the pixels
    )


def _check_size(size: tuple[int, int], name: str) -> None:
    """Refuse, before decoding, an image whose header claims more than MAX_PIXELS pixels."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"{name} is empty ({width}x{height} pixels); send an image with a digit in it")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name} is too large: {width}x{height} is {width * height / 1e6:.0f} million pixels, over the "
            f"limit of {MAX_PIXELS / 1e6:.0f} million; scale it down first"
        )


def _one_line(err: Exception) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
