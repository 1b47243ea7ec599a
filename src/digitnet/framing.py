"""Cut the digit out of an ink map and frame it as MNIST framed its digits.

The ink map is what preprocess makes of an image: (H, W) float32, 1 on the strokes and 0 on the paper.
MNIST's digits had their ink box scaled (antialiased) so its longest side is 20 pixels, then were placed
in a 28x28 frame so their center of mass sits at pixel (14, 14) (LeCun et al., "The MNIST database").
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

FRAME = 28  # MNIST's image side, pixels
BOX = 20  # the side of the box each MNIST digit was scaled into, pixels
CENTER = 14.0  # where MNIST puts the center of mass (row and column index; measured mean 14.00 +- 0.29)
PIECE_GRID_SIDE = 128  # long side of the grid on which ink is split into connected pieces, pixels
STROKE_TARGET = 1.9  # MNIST's mean stroke width, pixels of the 28x28 frame (2 x area / outline, 500 test digits)
MAX_THINNING = 0.5  # the largest share of a heavy stroke's width that thinning may take away
MIN_PIECE = 0.1  # pieces with less area than this fraction of the largest one are specks, dropped
FRAME_SPAN = 0.9  # a piece on the border spanning this share of the image is a line or an edge, not ink
MIN_DIGIT_SPAN = 0.05  # ... when a piece clear of the border spans this share of the long side


def _label(mask: np.ndarray) -> np.ndarray:
    """Connected pieces (8-neighbour) of a boolean mask: 0 off the mask, else the piece's number from 1."""
    return ndimage.label(mask, structure=np.ones((3, 3), bool))[0]


def digit_pieces(ink: np.ndarray) -> np.ndarray:
    """Keep the digit's connected pieces of ink; drop specks, and lines or edges that run across the image.

    A piece touching the image's border and spanning most of its width or height is a notebook's
    margin line, a table's edge or a shadow, when the image also holds a digit-sized piece clear of
    the border; a piece with under MIN_PIECE of the largest remaining piece's area is a speck.
    """
    if not ink.any():
        return ink
    height, width = ink.shape
    block = max(1, -(-max(height, width) // PIECE_GRID_SIDE))
    # Pieces are found on a coarse grid (max-pooled, so thin strokes stay joined) to keep this cheap.
    padded = np.zeros((-(-height // block) * block, -(-width // block) * block), ink.dtype)  # as np.pad, but quicker
    padded[:height, :width] = ink
    # (Each block's maximum, over rows, then columns: as reshape(...).max(axis=(1, 3)), which numpy runs 10 times
    # slower.)
    rows_pooled = np.maximum.reduce([padded[dy::block] for dy in range(block)])
    coarse = np.maximum.reduce([rows_pooled[:, dx::block] for dx in range(block)])
    labels = _label(coarse > 0.5)
    pieces, area, top, bottom, left, right = _piece_boxes(labels)
    if pieces.size == 0:
        return np.zeros_like(ink)
    rows, cols = labels.shape
    on_border = (top == 0) | (left == 0) | (bottom == rows - 1) | (right == cols - 1)
    spans = (bottom - top + 1 >= FRAME_SPAN * rows) | (right - left + 1 >= FRAME_SPAN * cols)
    digit_sized = np.maximum(bottom - top, right - left) + 1 >= MIN_DIGIT_SPAN * max(rows, cols)
    candidate = ~(on_border & spans) if (~on_border & digit_sized).any() else np.ones_like(on_border)
    kept = pieces[candidate & (area >= MIN_PIECE * area[candidate].max())]
    is_kept = np.zeros(len(pieces) + 1, bool)
    is_kept[kept] = True
    # Let the antialiased rim of a kept piece through: grow the mask by one coarse cell.
    keep = _window_extreme(is_kept[labels], 3, np.maximum)
    full = np.repeat(np.repeat(keep, block, axis=0), block, axis=1)[:height, :width]
    return ink * full


def frame_digit(ink: np.ndarray) -> np.ndarray:
    """The digit of an ink map (pieces already chosen) in MNIST's 28x28 frame; all zeros when there is no ink."""
    if not ink.any():
        return np.zeros((FRAME, FRAME), np.float32)
    return _place_by_mass(_fit_box(_normalise_stroke(_crop(ink))))


def _piece_boxes(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each piece's label, area and bounding box (top, bottom, left, right, inclusive) as arrays."""
    boxes = ndimage.find_objects(labels)  # one pair of slices per label 1, 2, ..., in order
    pieces = np.arange(1, len(boxes) + 1)
    area = np.bincount(labels.ravel(), minlength=len(boxes) + 1)[1:]
    top, bottom, left, right = (
        np.array([getattr(box[axis], end) for box in boxes], int)
        for axis, end in ((0, "start"), (0, "stop"), (1, "start"), (1, "stop"))
    )
    return pieces, area, top, bottom - 1, left, right - 1


def _crop(ink: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding all the ink."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the inked area over its outline's length (a stroke is a long thin band)."""
    mask = ink > 0.5
    outline = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    outline += np.count_nonzero(mask[[0, -1]]) + np.count_nonzero(mask[:, [0, -1]])
    return 2.0 * np.count_nonzero(mask) / max(outline, 1)


def _normalise_stroke(digit: np.ndarray) -> np.ndarray:
    """Thicken hairlines and thin heavy strokes towards MNIST's width, as it will be once scaled to the box.

    A network trained on MNIST reads a fine-pen digit, 1 pixel wide after scaling, far worse than the
    same digit at MNIST's 2 pixels; a marker's or an 8x8 thumbnail's blobs read worse too.
    """
    width = _stroke_width(digit)
    change = STROKE_TARGET * max(digit.shape) / BOX - width  # pixels of width to add, or remove, at this scale
    if change < 0:
        change = max(change, -MAX_THINNING * width)  # thin no more than this, or narrow parts vanish
    # A max (min) filter of size k adds (removes) k - 1 pixels: within half a pixel of the target, none. (An
    # even k moves the digit by half a pixel, which centring by mass undoes.)
    size = round(abs(change)) + 1
    if size < 2:
        return digit
    # A square max (min) filter, as Pillow's MaxFilter (MinFilter), on a frame wide enough to hold a thickened digit.
    changed = _window_extreme(
        digit.astype(np.float32, copy=False), size, np.maximum if change > 0 else np.minimum, margin=size
    )
    return _crop(changed) if changed.max() > 0.5 else digit


def _window_extreme(image: np.ndarray, size: int, extreme: np.ufunc, margin: int = 0) -> np.ndarray:
    """The maximum (extreme=np.maximum) or minimum of each size x size square around each pixel, 0 beyond the
    edges, for the image in a frame of zeros `margin` pixels wide.

    As scipy.ndimage's maximum_filter (minimum_filter) with mode="constant" of np.pad(image, margin), to
    the bit, for odd sizes, and 5 to 7 times faster on a 205x163 image: the square's extreme is the extreme
    along its rows of the extremes along its columns, and each of those is made by doubling: of 2
    neighbours, of 4, and so on. An even size has no centre pixel: the result is then one pixel taller
    and wider, the squares reaching half a pixel further on one side than on the other.
    """
    out = _framed(image, margin + size // 2)
    for axis in (0, 1):
        span = 1  # each element of `out` holds the extreme of `span` consecutive pixels along the axis
        while 2 * span <= size:
            out = extreme(_slice(out, axis, 0, -span), _slice(out, axis, span, None))
            span *= 2
        if span < size:  # two overlapping runs of `span` cover the `size` pixels
            out = extreme(_slice(out, axis, 0, span - size), _slice(out, axis, size - span, None))
    return out


def _framed(image: np.ndarray, width: int) -> np.ndarray:
    """The image in a frame of zeros `width` pixels wide: np.pad(image, width), at a fraction of its cost on small
    images."""
    height, image_width = image.shape
    out = np.zeros((height + 2 * width, image_width + 2 * width), image.dtype)
    out[width : width + height, width : width + image_width] = image
    return out


def _slice(array: np.ndarray, axis: int, start: int, stop: int | None) -> np.ndarray:
    """array[start:stop] along axis 0 or 1."""
    return array[start:stop] if axis == 0 else array[:, start:stop]


def _fit_box(digit: np.ndarray) -> np.ndarray:
    """Scale so the longest side is BOX pixels, keeping the aspect ratio, antialiased."""
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    scaled = Image.fromarray(digit.astype(np.float32, copy=False), "F").resize(
        size, resample, reducing_gap=2.0 if scale < 1 else None
    )
    return np.clip(np.asarray(scaled, np.float32), 0.0, 1.0)


def _place_by_mass(digit: np.ndarray) -> np.ndarray:
    """Put the digit in a 28x28 frame so its center of mass lands on (14, 14), as MNIST did.

    The shift is rounded to whole pixels (MNIST's centers spread +-0.3 pixel) and limited so that no
    ink leaves the frame.
    """
    height, width = digit.shape
    mass = float(digit.sum())
    if mass <= 0:
        return np.zeros((FRAME, FRAME), np.float32)
    center_row = float((digit.sum(axis=1) * np.arange(height)).sum() / mass)
    center_col = float((digit.sum(axis=0) * np.arange(width)).sum() / mass)
    top = min(max(round(CENTER - center_row), 0), FRAME - height)
    left = min(max(round(CENTER - center_col), 0), FRAME - width)
    frame = np.zeros((FRAME, FRAME), np.float32)
    frame[top : top + height, left : left + width] = digit
    return frame
