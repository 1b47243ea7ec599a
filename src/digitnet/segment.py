"""Read a number written as several digits side by side: split its ink into digits, left to right.

    from digitnet.preprocess import load_image
    from digitnet.segment import split_digits

    digits = split_digits(load_image("2026.jpg"))          # [Digit, Digit, Digit, Digit]
    pixels = np.stack([d.pixels for d in digits])           # (4, 28, 28), each as to_mnist gives one digit
    boxes = [d.box for d in digits]                         # (left, top, right, bottom) in the image's pixels

The ink is found as to_mnist finds it (polarity, paper, noise, specks and border lines: digitnet.preprocess),
then cut into its connected pieces, and pieces that stand over one another are joined into one digit: the
two strokes of a "4", the bar and the body of a "5", a stroke broken by a faint spot. Each digit is then framed
as to_mnist frames a digit alone. Digits that touch are not split: they come as one, wider than a digit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from digitnet.framing import frame_digit
from digitnet.images import decode
from digitnet.preprocess import ink_map, no_digit

STROKE_LEVEL = 0.5  # ink above this (of 1) makes the pieces; the fainter rims join the piece nearest to them
OVERLAP = 0.5  # pieces are one digit when their columns overlap by this share of the narrower one's width
# The digits of one number are of a size: a group of pieces shorter than this share of the group with the most ink,
# or with less ink than this share of its, is a fragment (of a broken thin stroke, of ruled paper, a speck), not a
# digit; it joins the digit nearest to it.
MIN_DIGIT_HEIGHT = 0.5
MIN_DIGIT_INK = 0.15
BRIDGE = 0.05  # gaps in a stroke narrower than this share of the ink's height are closed before pieces are cut
MAX_HEIGHT_RATIO = 1.6  # the tallest digit of a number is at most this many times the shortest; else it is one digit


@dataclass(frozen=True)
class Digit:
    """One digit of a number: its MNIST-style input and where it stands in the image."""

    pixels: np.ndarray  # (28, 28) float32 in [0, 1], white on black, as to_mnist gives for this digit alone
    # (left, top, right, bottom) of its ink in the image, pixels, right and bottom excluded; None for a whole picture
    box: tuple[int, int, int, int] | None


def read_digits(source: bytes | str | os.PathLike, *, one: bool = False) -> list[Digit]:
    """The digits in an encoded image (bytes or a path), left to right; with `one`, the whole ink as one digit.

    Raises ImageError for what cannot be read, and for an image with no ink: there is nothing to read in it.
    """
    image = decode(source)
    digits = _whole(ink_map(image), _size(image)) if one else split_digits(image)
    if not digits or not any(digit.pixels.any() for digit in digits):
        raise no_digit(source)
    return digits


def split_digits(image: Image.Image | np.ndarray) -> list[Digit]:
    """The digits written side by side in an image, left to right; [] when it shows no ink.

    An image of one digit gives one Digit whose pixels are to_mnist's. Raises ImageError as to_mnist does.
    Takes a Pillow image, or the 8-bit array that digitnet.images.decode gives for a plain PNG.
    """
    size = _size(image)
    ink = ink_map(image)
    groups = _digit_groups(ink)
    if len(groups) <= 1 or not _a_row_of_digits(groups):  # the common case: the whole ink, as to_mnist frames it
        return _whole(ink, size)
    owner = np.where(ink > 0, _owners(ink, groups), 0)
    return [
        Digit(
            frame_digit(np.where(owner == number, ink, 0.0).astype(np.float32)), _box(owner == number, ink.shape, size)
        )
        for number in range(1, len(groups) + 1)
    ]


def _whole(ink: np.ndarray, size: tuple[int, int]) -> list[Digit]:
    """All the ink as one digit, framed as to_mnist frames it; [] when there is none."""
    return [Digit(frame_digit(ink), _box(ink > 0, ink.shape, size))] if ink.any() else []


def _digit_groups(ink: np.ndarray) -> list[np.ndarray]:
    """Label images of the strokes' pieces, joined into digits and sorted left to right: [labels == piece for each
    digit]."""
    strokes = ink > STROKE_LEVEL
    if not strokes.any():
        return []
    rows = np.flatnonzero(strokes.any(axis=1))
    # A thin pen's stroke breaks where it is faintest, cutting an "0" into two arcs: close such gaps first.
    bridge = max(1, round(BRIDGE * (rows[-1] - rows[0] + 1)))
    closed = _closed(strokes, bridge)
    labels, count = ndimage.label(closed | strokes, structure=np.ones((3, 3), bool))
    labels = np.where(strokes, labels, 0)
    columns = [(box[1].start, box[1].stop) for box in ndimage.find_objects(labels)]
    digits: list[list[int]] = []  # piece numbers, from 1
    spans: list[tuple[int, int]] = []
    for piece in sorted(range(1, count + 1), key=lambda p: columns[p - 1]):
        left, right = columns[piece - 1]
        if spans and _overlap(spans[-1], (left, right)) >= OVERLAP:
            digits[-1].append(piece)
            spans[-1] = (min(spans[-1][0], left), max(spans[-1][1], right))
        else:
            digits.append([piece])
            spans.append((left, right))
    return _without_fragments([np.isin(labels, pieces) for pieces in digits], ink)


def _closed(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask closed by a square of side 2 * radius + 1 (nothing outside the image counts as ink).

    Done with separable max and min filters on the box of the ink and a margin, not a 2-D structure over
    the whole image: the ink is a small part of a canvas, and each window's work grows with its area.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    margin = 2 * radius + 1
    top, left = max(rows[0] - margin, 0), max(cols[0] - margin, 0)
    box = (slice(top, rows[-1] + margin + 1), slice(left, cols[-1] + margin + 1))
    size = 2 * radius + 1
    grown = ndimage.maximum_filter(mask[box].astype(np.uint8), size=size, mode="constant", cval=0)
    closed = np.zeros_like(mask)
    closed[box] = ndimage.minimum_filter(grown, size=size, mode="constant", cval=0).astype(bool)
    return closed


def _a_row_of_digits(groups: list[np.ndarray]) -> bool:
    """Whether the groups are of one height, as the digits of a number are: a margin line or a table's edge
    beside one digit is not a second digit."""
    heights = [np.ptp(np.flatnonzero(group.any(axis=1))) + 1 for group in groups]
    return max(heights) <= MAX_HEIGHT_RATIO * min(heights)


def _without_fragments(groups: list[np.ndarray], ink: np.ndarray) -> list[np.ndarray]:
    """The groups that are digits, each with the fragments nearest to it (by the columns of their centres) joined."""
    if len(groups) <= 1:
        return groups
    heights = np.array([np.ptp(np.flatnonzero(group.any(axis=1))) + 1 for group in groups])
    masses = np.array([ink[group].sum() for group in groups])
    centres = np.array([np.flatnonzero(group.any(axis=0)).mean() for group in groups])
    heaviest = int(np.argmax(masses))
    digit = (heights >= MIN_DIGIT_HEIGHT * heights[heaviest]) & (masses >= MIN_DIGIT_INK * masses[heaviest])
    kept = np.flatnonzero(digit)
    joined = {i: groups[i].copy() for i in kept}
    for fragment in np.flatnonzero(~digit):
        nearest = kept[np.argmin(np.abs(centres[kept] - centres[fragment]))]
        joined[nearest] |= groups[fragment]
    return [joined[i] for i in kept]


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> float:
    """How much two column ranges [start, stop) overlap, as a share of the narrower one's width."""
    shared = min(a[1], b[1]) - max(a[0], b[0])
    return max(shared, 0) / max(1, min(a[1] - a[0], b[1] - b[0]))


def _owners(ink: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """For each pixel, the number (from 1) of the digit whose strokes are nearest: rims go with their strokes."""
    strokes = np.zeros(ink.shape, np.int32)
    for number, group in enumerate(groups, start=1):
        strokes[group] = number
    nearest = ndimage.distance_transform_edt(strokes == 0, return_distances=False, return_indices=True)
    return strokes[tuple(nearest)]


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of a Pillow image or of a decoded array."""
    return (image.shape[1], image.shape[0]) if isinstance(image, np.ndarray) else image.size


def _box(mask: np.ndarray, shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The bounding box of a mask of the working copy, in the pixels of the image of size (width, height)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    scale_x, scale_y = size[0] / shape[1], size[1] / shape[0]
    return (
        int(cols[0] * scale_x),
        int(rows[0] * scale_y),
        min(size[0], int(np.ceil((cols[-1] + 1) * scale_x))),
        min(size[1], int(np.ceil((rows[-1] + 1) * scale_y))),
    )
