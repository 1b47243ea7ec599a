"""Properties of digitnet.preprocess on any image at all (Hypothesis): random sizes, modes, bit depths and contents.

Whatever it is given, to_mnist and preprocess either return MNIST's input, a (28, 28) float32 array of finite
values in [0, 1], or raise digitnet's own ImageError; never any other exception.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from digitnet.preprocess import ImageError, preprocess, to_mnist
from digitnet.segment import split_digits

MODES = [
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "RGBX",
    "LA",
    "PA",
    "La",
    "RGBa",
    "I;16",
    "I;16B",
    "I",
    "F",
    "CMYK",
    "YCbCr",
    "HSV",
    "LAB",
]
CONTENTS = ["noise", "constant", "gradient", "strokes", "strokes-on-noise"]
# Formats that store the mode as it is, or as a close one (PNG keeps 16-bit grey; TIFF keeps F and CMYK).
FORMATS = ["PNG", "TIFF", "BMP", "GIF", "JPEG", "WEBP"]
BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def content(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 4) floats in [0, 1]: the channels an image of any mode is made from."""
    if kind == "noise":
        return rng.random((height, width, 4))
    if kind == "constant":
        return np.broadcast_to(rng.random(4), (height, width, 4)).copy()
    if kind == "gradient":
        rows, cols = np.mgrid[0:height, 0:width]
        ramp = (rows * rng.uniform(-1, 1) + cols * rng.uniform(-1, 1)) / max(height, width, 1)
        return np.clip(ramp[:, :, None] + rng.random(4), 0, 1)
    canvas = Image.new("F", (width, height), float(rng.random()))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 6))):
        points = [
            tuple(p) for p in rng.integers(-5, max(width, height) + 5, size=(int(rng.integers(2, 6)), 2)).tolist()
        ]
        draw.line(points, fill=float(rng.random()), width=int(rng.integers(1, max(2, min(width, height) // 4 + 2))))
    strokes = np.asarray(canvas, np.float64)[:, :, None] * np.ones(4)
    if kind == "strokes-on-noise":
        strokes = np.clip(strokes + rng.normal(0, 0.1, strokes.shape), 0, 1)
    return strokes


def make_image(mode: str, values: np.ndarray, rng: np.random.Generator, wild: bool = True) -> Image.Image:
    """An image of the mode from (H, W, 4) floats in [0, 1], in that mode's own range of values; with wild,
    32-bit images take any offset and scale."""
    grey = values[:, :, 0]
    if mode in ("I;16", "I;16B"):
        return (
            Image.fromarray((grey * 65535).astype(np.uint16)).convert(mode)
            if mode == "I;16"
            else Image.frombytes(mode, grey.shape[::-1], (grey * 65535).astype(">u2").tobytes())
        )
    if mode == "I" and not wild:
        return Image.fromarray((grey * 65535).astype(np.int32), "I")
    if mode == "I":  # 32-bit signed: any range, negative too
        return Image.fromarray(((grey - rng.random()) * 10 ** rng.integers(0, 9)).astype(np.int32), "I")
    if mode == "F":  # 32-bit float: 0..1, 0..255 or wild
        return Image.fromarray(
            (grey * [1.0, 255.0, 1e30][rng.integers(3)] - wild * rng.random() * 2).astype(np.float32), "F"
        )
    rgba = Image.fromarray(np.round(values * 255).astype(np.uint8), "RGBA")
    if mode in ("P", "PA"):
        return (
            rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=int(rng.integers(2, 256)))
            if mode == "P"
            else rgba.convert("PA")
        )
    return (
        rgba.convert(mode)
        if mode not in ("La", "RGBa")
        else rgba.convert("LA" if mode == "La" else "RGBA").convert(mode)
    )


def assert_mnist_input(pixels: np.ndarray) -> None:
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0


images = st.builds(
    lambda mode, kind, height, width, seed: (mode, kind, height, width, seed),
    st.sampled_from(MODES),
    st.sampled_from(CONTENTS),
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
)


@BOUNDED
@given(images)
def test_to_mnist_gives_mnists_input_or_an_image_error_for_any_image(case):
    mode, kind, height, width, seed = case
    rng = np.random.default_rng(seed)
    image = make_image(mode, content(kind, height, width, rng), rng)
    try:
        pixels = to_mnist(image)
    except ImageError:
        return
    assert_mnist_input(pixels)
    for digit in split_digits(image):
        assert_mnist_input(digit.pixels)


@BOUNDED
@given(images, st.sampled_from(FORMATS))
def test_preprocess_of_any_saved_image_gives_mnists_input_or_an_image_error(case, fmt):
    mode, kind, height, width, seed = case
    rng = np.random.default_rng(seed)
    image = make_image(mode, content(kind, height, width, rng), rng)
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return  # a format that cannot store this mode: nothing a user could send
    try:
        pixels = preprocess(buffer.getvalue())
    except ImageError:
        return
    assert_mnist_input(pixels)


@BOUNDED
@given(st.binary(min_size=0, max_size=4096))
def test_random_bytes_give_an_image_error_or_mnists_input(data):
    try:
        pixels = preprocess(data)
    except ImageError:
        return
    assert_mnist_input(pixels)


@BOUNDED
@given(st.sampled_from(FORMATS), st.integers(0, 2**32 - 1), st.floats(0.0, 1.0), st.booleans())
def test_truncated_or_corrupted_files_give_an_image_error_or_mnists_input(fmt, seed, keep, flip):
    rng = np.random.default_rng(seed)
    image = make_image("RGB", content("strokes", 64, 80, rng), rng)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = bytearray(buffer.getvalue()[: max(1, int(len(buffer.getvalue()) * keep))])
    if flip:  # a few damaged bytes in the rest
        for at in rng.integers(0, len(data), size=min(8, len(data))):
            data[at] ^= 1 << int(rng.integers(8))
    try:
        pixels = preprocess(bytes(data))
    except ImageError:
        return
    assert_mnist_input(pixels)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_of_a_clear_digit_is_read_or_refused_as_unsupported(mode):
    rng = np.random.default_rng(0)
    values = np.ones((120, 100, 4))
    values[20:100, 45:55, :3] = 0.0  # a dark "1" on white, opaque
    image = make_image(mode, values, rng, wild=False)
    if mode in ("LAB", "La"):  # Pillow converts neither to RGB; no file format stores La
        with pytest.raises(ImageError, match="unsupported image mode"):
            to_mnist(image)
        return
    assert to_mnist(image).max() > 0.5
