"""digitnet.segment: a number written as several digits is split into its digits, left to right."""

from __future__ import annotations

import numpy as np
import pytest
from hardcases import number_picture
from PIL import Image, ImageDraw
from small_model import train_small_model

from digitnet.preprocess import to_mnist
from digitnet.segment import Digit, split_digits


def as_image(picture: np.ndarray) -> Image.Image:
    """An (H, W, 3) float picture in [0, 1] as an 8-bit RGB image."""
    return Image.fromarray(np.round(np.clip(picture, 0, 1) * 255).astype(np.uint8), "RGB")


def number_text(rng: np.random.Generator, length: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=length))


def overlap(a: tuple, b: tuple) -> float:
    """Intersection over union of two boxes (left, top, right, bottom)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    shared = max(width, 0) * max(height, 0)
    return shared / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - shared)


def test_one_digit_gives_exactly_to_mnists_input():
    image = Image.new("L", (300, 260), 255)
    draw = ImageDraw.Draw(image)
    draw.arc((80, 40, 220, 140), start=180, end=30, fill=0, width=22)
    draw.line((205, 110, 80, 220), fill=0, width=22)
    draw.line((80, 220, 225, 220), fill=0, width=22)
    digits = split_digits(image)
    assert len(digits) == 1 and isinstance(digits[0], Digit)
    np.testing.assert_array_equal(digits[0].pixels, to_mnist(image))
    left, top, right, bottom = digits[0].box
    assert 60 <= left <= 80 and 25 <= top <= 40 and 225 <= right <= 245 and 225 <= bottom <= 240


@pytest.mark.parametrize(
    "image", [Image.new("RGB", (200, 120), "white"), Image.new("L", (1, 1), 0)], ids=["white", "one-pixel"]
)
def test_blank_image_gives_no_digits(image):
    assert split_digits(image) == []


@pytest.mark.parametrize("canvas", [False, True], ids=["photo", "canvas"])
@pytest.mark.parametrize("length", [2, 3, 4, 5, 6])
def test_numbers_of_2_to_6_digits_are_split_into_each_digit_left_to_right(length, canvas):
    rng = np.random.default_rng([length, canvas])
    for _ in range(4):
        picture, boxes = number_picture(number_text(rng, length), "tune", rng, canvas=canvas)
        digits = split_digits(as_image(picture))
        assert len(digits) == length
        for digit, box in zip(digits, boxes):
            assert overlap(digit.box, box) > 0.6, f"found {digit.box}, drawn {box}"
            assert digit.pixels.shape == (28, 28) and digit.pixels.dtype == np.float32 and digit.pixels.max() > 0.5


def test_a_four_in_two_strokes_and_a_fives_separate_bar_stay_one_digit_each():
    image = Image.new("L", (420, 200), 255)
    draw = ImageDraw.Draw(image)
    draw.line((110, 30, 50, 120, 150, 120), fill=0, width=12)  # the 4's open angle ...
    draw.line((125, 70, 125, 175), fill=0, width=12)  # ... and its stem, apart from it
    draw.line((260, 32, 340, 32), fill=0, width=12)  # the 5's bar, lifted from the paper ...
    draw.line((262, 40, 255, 95), fill=0, width=12)
    draw.arc((240, 80, 350, 180), start=-100, end=150, fill=0, width=12)  # ... and its body
    digits = split_digits(image)
    assert len(digits) == 2
    assert digits[0].box[2] <= 160 and digits[1].box[0] >= 230


def test_boxes_are_in_the_pixels_of_a_large_photo():
    rng = np.random.default_rng(11)
    picture, boxes = number_picture("2026", "tune", rng)
    large = as_image(picture).resize((picture.shape[1] * 4, picture.shape[0] * 4), Image.Resampling.BICUBIC)
    digits = split_digits(large)
    assert [round(overlap(d.box, tuple(4 * v for v in box)), 1) > 0.6 for d, box in zip(digits, boxes)] == [True] * 4


@pytest.fixture(scope="module")
def predict(mnist):
    return train_small_model(mnist)


@pytest.mark.slow
def test_numbers_are_read_digit_by_digit_by_a_small_mnist_network(predict):
    rng = np.random.default_rng(2026)
    right = total = 0
    for length in range(2, 7):
        for canvas in (False, True):
            for _ in range(3):
                text = number_text(rng, length)
                picture, _ = number_picture(text, "tune", rng, canvas=canvas)
                digits = split_digits(as_image(picture))
                assert len(digits) == length
                guesses = predict(np.stack([d.pixels for d in digits])).argmax(axis=1)
                right += int(sum(str(g) == t for g, t in zip(guesses, text)))
                total += length
    # The network alone reads these fonts' digits about 9 times in 10 (tests/test_realworld.py); split digits must too.
    assert right / total >= 0.8, f"{right}/{total} digits read right"
