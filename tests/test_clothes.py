"""Photos of clothes made into Fashion-MNIST's 28x28 images: synthetic product photos, and the data set's own images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitnet.clothes import FRAME, prepare_clothing, to_fashion
from digitnet.preprocess import ImageError

SHIRT = [
    (0.30, 0.10),
    (0.70, 0.10),
    (0.95, 0.30),
    (0.80, 0.42),
    (0.72, 0.35),
    (0.72, 0.95),
    (0.28, 0.95),
    (0.28, 0.35),
    (0.20, 0.42),
    (0.05, 0.30),
]  # a T-shirt's outline, as fractions of its box


def photo(size=(300, 400), box=(40, 30, 260, 370), colour=(40, 60, 150), background=(255, 255, 255), mode="RGB"):
    """A product photo: a flat-coloured T-shirt filling `box` on a plain background."""
    image = Image.new(mode, size, background)
    left, top, right, bottom = box
    outline = [(left + x * (right - left), top + y * (bottom - top)) for x, y in SHIRT]
    ImageDraw.Draw(image).polygon(outline, fill=colour)
    return image


def box_of(image: np.ndarray) -> tuple[int, int, int, int]:
    """First row, last row, first column, last column of the pixels that are not black."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_a_garment_on_white_becomes_light_on_black_filling_the_frame_on_its_long_side():
    seen = to_fashion(photo())
    assert seen.shape == (FRAME, FRAME) and seen.dtype == np.float32
    top, bottom, left, right = box_of(seen)
    assert (top, bottom) == (0, FRAME - 1)  # the taller side is fitted to 28
    width = right - left + 1
    assert round(28 * 220 / 340) - 1 <= width <= round(28 * 220 / 340) + 1
    assert left == (FRAME - width + 1) // 2  # centred, the odd pixel before it, as in the data set
    assert seen.max() == pytest.approx(1.0) and seen[0, 0] == 0 and seen[14, 14] > 0.9  # a dark shirt: bright


def test_a_wide_object_is_fitted_by_its_width_and_centred_in_height():
    sneaker = Image.new("RGB", (600, 300), "white")
    ImageDraw.Draw(sneaker).rectangle((50, 120, 550, 220), fill=(90, 90, 90))
    top, bottom, left, right = box_of(to_fashion(sneaker))
    height = bottom - top + 1
    assert (left, right) == (0, FRAME - 1) and 5 <= height <= 7 and top == (FRAME - height + 1) // 2


def test_a_light_garment_is_dimmer_than_a_dark_one_as_in_the_data_set():
    dark, light = to_fashion(photo(colour=(20, 20, 20))), to_fashion(photo(colour=(200, 200, 200)))
    # Each is stretched to a brightest pixel of 1, so only its shape shows; both are the same shirt.
    assert box_of(dark) == box_of(light)
    np.testing.assert_allclose(dark, light, atol=0.02)


def test_an_off_white_noisy_jpeg_background_stays_black():
    rng = np.random.default_rng(0)
    pixels = np.asarray(photo(background=(232, 228, 220)), np.float32) + rng.normal(0, 3, (400, 300, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    clean, noisy = to_fashion(photo()), prepare_clothing(buffer.getvalue())
    assert abs(np.array(box_of(noisy)) - np.array(box_of(clean))).max() <= 1
    assert noisy[clean == 0].mean() < 0.02 and np.abs(noisy - clean).mean() < 0.05


def test_a_transparent_png_is_laid_on_white_like_a_product_photo():
    cut_out = photo(background=(0, 0, 0, 0), colour=(40, 60, 150, 255), mode="RGBA")
    np.testing.assert_allclose(to_fashion(cut_out), to_fashion(photo()), atol=0.02)


def test_a_light_garment_on_a_dark_background_is_kept_light():
    seen = to_fashion(photo(colour=(230, 230, 230), background=(15, 15, 15)))
    assert seen[0, 0] == 0 and seen[14, 14] > 0.9
    assert box_of(seen) == box_of(to_fashion(photo()))


def test_a_large_photo_and_a_16_bit_scan_are_read():
    big = photo(size=(3000, 4000), box=(400, 300, 2600, 3700))
    big_seen, seen = to_fashion(big), to_fashion(photo())
    assert box_of(big_seen) == box_of(seen) and np.abs(big_seen - seen).mean() < 0.02  # edges differ, by coverage
    grey16 = Image.fromarray((np.asarray(photo().convert("L"), np.uint16) * 257))
    assert grey16.mode.startswith("I")
    assert box_of(to_fashion(grey16)) == box_of(to_fashion(photo()))


@pytest.mark.parametrize("colour", [(255, 255, 255), (128, 30, 30)])
def test_an_image_of_one_colour_holds_no_object(colour):
    with pytest.raises(ImageError, match="no object found"):
        to_fashion(Image.new("RGB", (200, 200), colour))


def test_not_an_image_is_a_one_line_error():
    with pytest.raises(ImageError) as info:
        prepare_clothing(b"not an image at all")
    assert "\n" not in str(info.value)


def test_the_data_sets_own_images_photographed_on_white_come_back(fashion):
    """Negated, enlarged eightfold and laid on a white page, a test image is made back into itself."""
    correlations = []
    for image in fashion.test_images[:60]:
        product = Image.fromarray(255 - image).resize((224, 224), Image.Resampling.BICUBIC)
        page = Image.new("L", (300, 260), 255)
        page.paste(product, (40, 20))
        seen = to_fashion(page)
        correlations.append(np.corrcoef(seen.ravel(), image.ravel())[0, 1])
    assert np.mean(correlations) > 0.92 and min(correlations) > 0.75
