"""Turn a photo of a garment, shoe or bag into a Fashion-MNIST-style 28x28 input, as the data set was made.

Fashion-MNIST's images are Zalando's product photos (objects on white) put through one pipeline (Xiao, Rasul and
Vollgraf 2017): trim the edges of the corners' colour, resize so the longest side is 28 pixels, sharpen, extend
the shorter side to 28 with the object centred, negate, and keep 8-bit grey. So the object fills the frame on its
long side (28 pixels in 98% of the 10,000 test images), light on a black background, and the brightest pixel of
every test image is 255. `to_fashion` does the same to a user's photo, with none of the steps digitnet.preprocess
takes for handwriting (ink found against the paper, strokes thinned, a 20-pixel box, centring by mass).

    pixels = prepare_clothing("sneaker.jpg")   # (28, 28) float32 in [0, 1], light object on black
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy import ndimage

from digitnet.images import ALPHA_MODES, DEEP_MODES, ImageError, load_image

FRAME = 28  # Fashion-MNIST's image side, pixels
WORK_SIDE = 512  # photos are box-averaged down to about this long side first: the 28x28 result needs no more
CLOSENESS = 0.05 * 255  # a pixel within this RMS distance of the corners' colour is background (the data set's 5%)
CORNER = 0.03  # corner patches this share of the shorter side wide give the background's colour
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow makes grey of RGB

# What `digitnet predict` says it does for a Fashion-MNIST model, instead of the handwriting steps.
NOTE = (
    "a Fashion-MNIST model: each image is made grey, trimmed to the object (the edges of the corners' colour), "
    "fitted to 28 pixels on its longest side, centred in 28x28 and turned light on black, as the data set was "
    "made; none of the handwriting steps for digits are taken"
)


def prepare_clothing(source: bytes | str | os.PathLike) -> np.ndarray:
    """The (28, 28) float32 image in [0, 1] that a Fashion-MNIST network reads, from image bytes or a path.

    Raises ImageError, with a one-line message, for anything that is not a readable image or that holds no object.
    """
    return to_fashion(load_image(source))


def to_fashion(image: Image.Image) -> np.ndarray:
    """A decoded photo as Fashion-MNIST's were made: trimmed, fitted to 28 on its long side, centred, light on black."""
    rgb = working_copy(image)
    background = corner_colour(rgb)
    distance = np.sqrt(np.mean((rgb - background) ** 2, axis=2))
    rows, cols = object_box(distance)
    strength = contrast(rgb[rows, cols] @ LUMA, float(background @ LUMA))
    strength[distance[rows, cols] <= CLOSENESS] = 0.0  # as near the background as trimming allows: background
    fitted = fit_long_side(strength)
    if fitted.max() <= 0:
        raise ImageError("no object found: it is as light as the background once fitted to 28x28; photograph it larger")
    return centred(fitted / fitted.max())  # stretched so the brightest pixel is 1, as in every image of the data set


def working_copy(image: Image.Image) -> np.ndarray:
    """The photo as float32 RGB (H, W, 3) in 0..255, at most about WORK_SIDE on its long side.

    Transparency is laid on white, the background of the product photos; 16- and 32-bit grey is scaled to 8 bits.
    """
    if image.mode in DEEP_MODES:
        grey = np.asarray(image, np.float32)
        top = float(grey.max())
        image = Image.fromarray(
            np.round(grey * (255 / (65535 if top > 255 else 255 if top > 1 else 1))).clip(0, 255).astype(np.uint8)
        )
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    factor = max(1, max(image.size) // WORK_SIDE)
    if factor > 1:
        image = image.reduce(factor)  # averages factor x factor blocks: no aliasing, and fast on 50-megapixel photos
    return np.asarray(image, np.float32)


def corner_colour(rgb: np.ndarray) -> np.ndarray:
    """The background's colour: the median of four small corner patches (a lone odd corner pixel does not count)."""
    side = max(1, round(CORNER * min(rgb.shape[:2])))
    patches = [rgb[:side, :side], rgb[:side, -side:], rgb[-side:, :side], rgb[-side:, -side:]]
    return np.median(np.concatenate([patch.reshape(-1, 3) for patch in patches]), axis=0)


def object_box(distance: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the object: the image with its edges of the corners' colour trimmed off.

    Specks (JPEG noise, dust) are ignored: a pixel counts only if its 3x3 neighbourhood's median is off the
    background too.
    """
    mask = ndimage.median_filter(distance, size=3, mode="nearest") > CLOSENESS
    if not mask.any():
        raise ImageError(
            "no object found: the image is one flat colour; photograph the garment against a plain "
            "background that differs from it"
        )
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def contrast(grey: np.ndarray, background: float) -> np.ndarray:
    """How far each pixel's grey is from the background's, toward the object: negated on a light background (as the
    data set's product photos on white were), kept on a dark one; 0 for the background itself."""
    return np.maximum(background - grey if background >= 128 else grey - background, 0.0)


def fit_long_side(strength: np.ndarray) -> np.ndarray:
    """The object resized so its longest side is FRAME pixels, its proportions kept."""
    height, width = strength.shape
    scale = FRAME / max(height, width)
    size = (max(1, min(FRAME, round(width * scale))), max(1, min(FRAME, round(height * scale))))
    # Area averaging to shrink (the usual case), bicubic to enlarge a small crop; neither lets values leave the range.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    resized = Image.fromarray(strength.astype(np.float32)).resize(size, resample)  # mode F: floats
    return np.clip(np.asarray(resized, np.float32), 0.0, float(strength.max()))


def centred(obj: np.ndarray) -> np.ndarray:
    """The object in the middle of a black FRAME x FRAME image (the shorter side extended equally on both sides)."""
    frame = np.zeros((FRAME, FRAME), np.float32)
    # An odd margin puts its extra pixel before the object, as in the data set: so placed are the rows of 98.8% and the
    # columns of 99.8% of its test images (against 80.7% and 67.7% with the extra pixel after).
    top, left = (FRAME - obj.shape[0] + 1) // 2, (FRAME - obj.shape[1] + 1) // 2
    frame[top : top + obj.shape[0], left : left + obj.shape[1]] = obj
    return frame
