"""digitnet.preprocess: photos, scans and canvas drawings become MNIST's 28x28 white-on-black inputs."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from digitnet import framing, images
from digitnet import preprocess as pipeline
from digitnet.errors import DigitnetError
from digitnet.preprocess import MAX_PIXELS, ImageError, load_image, preprocess, to_mnist

BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def draw_two(size=(200, 200), ink=BLACK, paper=WHITE, mode="RGB", box=(0.25, 0.15, 0.75, 0.85)) -> Image.Image:
    """A thick, asymmetric '2' (an arc, a diagonal and a base) drawn inside a fraction of the image."""
    width, height = size
    left, top, right, bottom = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    pen = max(1, round(0.12 * (bottom - top)))
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    mid = top + 0.45 * (bottom - top)
    draw.arc((left, top, right, mid + 0.1 * (bottom - top)), start=180, end=30, fill=ink, width=pen)
    draw.line((right - 0.05 * (right - left), mid - 0.05 * (bottom - top), left, bottom - pen / 2), fill=ink, width=pen)
    draw.line((left, bottom - pen / 2, right, bottom - pen / 2), fill=ink, width=pen)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def center_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
    return float((pixels * rows).sum() / pixels.sum()), float((pixels * cols).sum() / pixels.sum())


def ink_box(pixels: np.ndarray) -> tuple[int, int]:
    """Height and width of the smallest rectangle holding every pixel above zero."""
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def assert_same_digit(
    a: np.ndarray, b: np.ndarray, mean_tol: float = 0.03, max_tol: float = 0.35, shift: int = 0
) -> None:
    """Two 28x28 inputs agree pixel by pixel up to antialiasing differences along the strokes, and with
    shift=1, up to a one-pixel move: centring by mass rounds to whole pixels, as MNIST's did, so one
    drawing at two sizes can land on either side of a rounding."""
    moved = [np.roll(a, (dy, dx), axis=(0, 1)) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]
    difference = min((np.abs(m - b) for m in moved), key=np.mean)
    assert difference.mean() < mean_tol, f"mean difference {difference.mean():.3f}"
    assert difference.max() < max_tol, f"largest difference {difference.max():.3f}"


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The clean drawing, black on white: what every variant below should come close to."""
    return to_mnist(draw_two())


# The MNIST convention ---------------------------------------------------------------------------------


def test_output_is_28x28_float32_white_on_black(reference):
    assert reference.shape == (28, 28) and reference.dtype == np.float32
    assert reference.min() == 0.0 and reference.max() == pytest.approx(1.0, abs=0.05)
    assert reference[[0, -1]].max() == 0 and reference[:, [0, -1]].max() == 0  # black margins
    assert 60 < reference.sum() < 180  # MNIST digits carry about 100 (0 to 1 scale)


@pytest.mark.parametrize("box", [(0.25, 0.15, 0.75, 0.85), (0.02, 0.02, 0.3, 0.4), (0.6, 0.5, 0.98, 0.98)])
def test_center_of_mass_at_14_14_and_longest_side_20(box):
    pixels = to_mnist(draw_two((640, 480), box=box))
    row, col = center_of_mass(pixels)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1
    assert max(ink_box(pixels)) == 20


def test_aspect_ratio_is_kept():
    image = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(image).line((150, 40, 150, 260), fill=0, width=24)  # a '1': tall and narrow
    height, width = ink_box(to_mnist(image))
    assert height == 20 and width <= 6


def test_mnist_digits_pass_through_almost_unchanged(mnist):
    digits = mnist.test_images[:30].astype(np.float32) / 255
    # MNIST's own 28x28 images are white on black, already boxed and centred: preprocessing them again
    # (after enlarging to a photo-like size) must give back nearly the same picture.
    differences = []
    for image in digits:
        enlarged = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((280, 280), Image.Resampling.BILINEAR)
        differences.append(np.abs(to_mnist(enlarged) - image).mean())
    # A one-pixel shift of the center, or a heavy stroke thinned, costs up to 0.1 on one image.
    assert np.mean(differences) < 0.04 and max(differences) < 0.12


# Polarity, colour, transparency, lighting -------------------------------------------------------------


def test_light_ink_on_dark_matches_dark_ink_on_light(reference):
    assert_same_digit(to_mnist(draw_two(ink=WHITE, paper=BLACK)), reference)
    chalk_on_board = draw_two(ink=(225, 230, 215), paper=(40, 70, 50))
    assert_same_digit(to_mnist(chalk_on_board), reference)


@pytest.mark.parametrize(
    "ink", [(20, 40, 170), (190, 20, 30), (20, 130, 50), (250, 220, 0)], ids=["blue", "red", "green", "yellow"]
)
def test_coloured_ink_survives(reference, ink):
    assert_same_digit(to_mnist(draw_two(ink=ink, paper=(250, 248, 240))), reference)


def test_yellow_ink_on_black_survives(reference):
    assert_same_digit(to_mnist(draw_two(ink=(240, 200, 0), paper=BLACK)), reference)


@pytest.mark.parametrize("stroke", [BLACK, (30, 60, 200), WHITE], ids=["black", "blue", "white"])
def test_canvas_export_with_transparent_background(reference, stroke):
    # Canvas exports store transparent pixels as (0, 0, 0, 0): a plain convert("L") turns them black.
    canvas = draw_two(mode="RGBA", ink=stroke + (255,), paper=(0, 0, 0, 0))
    assert_same_digit(preprocess(encode(canvas)), reference)


def test_transparent_border_takes_the_paper_colour(reference):
    photo = draw_two((200, 200), paper=(235, 235, 225)).convert("RGBA")
    framed = Image.new("RGBA", (260, 260), (0, 0, 0, 0))
    framed.paste(photo, (30, 30))
    assert_same_digit(to_mnist(framed), reference)


def test_greyscale_palette_and_16_bit_images(reference):
    grey = draw_two().convert("L")
    assert_same_digit(to_mnist(grey), reference)
    assert_same_digit(to_mnist(draw_two().convert("P")), reference)
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit, 0..65535
    assert_same_digit(preprocess(encode(deep)), reference)


def test_uneven_lighting_tint_and_noise(reference):
    rng = np.random.default_rng(0)
    clean = np.asarray(draw_two((640, 480), paper=(235, 225, 200)), np.float32) / 255
    rows, cols = np.mgrid[0:480, 0:640] / 640
    light = 1.05 - 0.45 * cols - 0.4 * ((rows - 0.4) ** 2 + (cols - 0.5) ** 2)  # a gradient and a vignette
    photo = clean * light[:, :, None] + rng.normal(0, 0.03, clean.shape)
    image = Image.fromarray(np.round(np.clip(photo, 0, 1) * 255).astype(np.uint8))
    assert_same_digit(preprocess(encode(image, "JPEG", quality=70)), to_mnist(draw_two((640, 480))))


def test_specks_are_dropped():
    rng = np.random.default_rng(1)
    image = draw_two((400, 400))
    draw = ImageDraw.Draw(image)
    for x, y in rng.integers(0, 400, size=(25, 2)):
        draw.ellipse((x, y, x + 3, y + 3), fill=BLACK)  # dust: each under 0.5% of the digit's ink
    assert_same_digit(to_mnist(image), to_mnist(draw_two((400, 400))), mean_tol=0.02)


def test_margin_line_and_table_edge_are_dropped():
    clean = to_mnist(draw_two((600, 450), box=(0.35, 0.2, 0.6, 0.8)))
    notebook = draw_two((600, 450), box=(0.35, 0.2, 0.6, 0.8), paper=(250, 250, 245))
    ImageDraw.Draw(notebook).line((80, 0, 80, 450), fill=(230, 120, 120), width=4)  # the red margin
    assert_same_digit(to_mnist(notebook), clean)
    on_table = draw_two((600, 450), box=(0.35, 0.2, 0.6, 0.8), paper=(235, 235, 230))
    ImageDraw.Draw(on_table).rectangle((0, 0, 60, 450), fill=(60, 45, 35))  # the table beside the sheet
    assert_same_digit(to_mnist(on_table), clean)


def test_tightly_cropped_digit_in_two_strokes_is_kept_whole():
    five = Image.new("L", (200, 260), 255)
    draw = ImageDraw.Draw(five)
    draw.line((30, 10, 190, 10), fill=0, width=20)  # the bar, along the top border
    draw.line((38, 0, 30, 120), fill=0, width=20)
    draw.arc((20, 90, 200, 260), start=-120, end=150, fill=0, width=20)
    roomy = ImageOps.expand(five, border=60, fill=255)  # the same digit with room around it
    assert_same_digit(to_mnist(five), to_mnist(roomy))


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (200, 200), WHITE),
        Image.new("RGB", (200, 200), BLACK),
        Image.new("L", (64, 48), 128),
        Image.new("RGBA", (300, 300), (0, 0, 0, 0)),
        Image.new("L", (1, 1), 0),
    ],
    ids=["white", "black", "grey", "transparent", "one-pixel"],
)
def test_blank_image_gives_zeros(image):
    pixels = to_mnist(image)
    assert pixels.shape == (28, 28) and not pixels.any()


def test_faint_noise_alone_is_blank():
    rng = np.random.default_rng(2)
    noise = np.clip(rng.normal(200, 4, size=(300, 400, 3)), 0, 255).astype(np.uint8)
    assert not preprocess(encode(Image.fromarray(noise), "JPEG", quality=60)).any()


def canvas(ink, paper, mode="RGB") -> Image.Image:
    """A 280x280 drawing-page export: a '2' in thick round strokes on a flat background."""
    image = Image.new(mode, (280, 280), paper)
    draw = ImageDraw.Draw(image)
    points = [(85, 90), (120, 50), (180, 55), (195, 105), (160, 160), (85, 230), (205, 230)]
    draw.line(points, fill=ink, width=18, joint="curve")
    for x, y in points[:1] + points[-1:]:
        draw.ellipse((x - 9, y - 9, x + 9, y + 9), fill=ink)
    return image


@pytest.mark.parametrize(
    "image",
    [
        canvas(WHITE, BLACK),
        canvas(BLACK, WHITE),
        canvas((0, 0, 0, 255), (0, 0, 0, 0), "RGBA"),
        canvas((30, 60, 200), WHITE),
    ],
    ids=["white-on-black", "black-on-white", "black-on-transparent", "blue-on-white"],
)
def test_canvas_takes_the_flat_background_shortcut_to_the_same_result(image, monkeypatch):
    rgb = pipeline._flatten_alpha(*pipeline._as_arrays(pipeline._working_copy(image)))
    assert pipeline._flat_background(rgb) is not None
    monkeypatch.setattr(pipeline, "FLAT_WORK_SIDE", 10**6)  # both at full size: the halving is tested below
    fast = to_mnist(image)
    monkeypatch.setattr(pipeline, "_flat_background", lambda rgb: None)  # force the fitted paper surface
    assert_same_digit(fast, to_mnist(image), mean_tol=0.002, max_tol=0.02)


@pytest.mark.parametrize(
    "image",
    [
        canvas(WHITE, BLACK, "RGBA"),
        canvas(BLACK, WHITE),
        canvas((0, 0, 0, 255), (0, 0, 0, 0), "RGBA"),
        canvas((30, 60, 200), WHITE),
    ],
    ids=["white-on-black-rgba", "black-on-white", "black-on-transparent", "blue-on-white"],
)
def test_flat_images_are_read_at_half_size_to_the_same_digit(image, monkeypatch):
    halved = to_mnist(image)
    monkeypatch.setattr(pipeline, "FLAT_WORK_SIDE", 10**6)
    assert_same_digit(halved, to_mnist(image))
    # ... and the 280x280 canvas was indeed worked on at 140x140:
    monkeypatch.undo()
    sizes = []
    fit_box = framing._fit_box
    monkeypatch.setattr(framing, "_fit_box", lambda digit: sizes.append(digit.shape) or fit_box(digit))
    to_mnist(image)
    assert max(sizes[0]) <= 140


def test_opaque_grey_canvas_is_halved_from_its_8_bit_levels_as_from_floats():
    raw = np.asarray(canvas(WHITE, BLACK, "RGBA"))  # what the drawing page sends, as libspng decodes it
    colour, alpha = pipeline._split(raw)
    assert colour.shape == (140, 140, 1) and colour.dtype == np.float32 and alpha is None
    np.testing.assert_allclose(colour, pipeline._halve(raw[:, :, :1].astype(np.float32) / 255), atol=1e-6)


def test_halving_averages_each_2x2_block_and_pairs_an_odd_edge_with_itself():
    pixels = np.arange(15, dtype=np.float32).reshape(3, 5, 1)
    expected = [
        [(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 4 + 9 + 9) / 4],
        [(10 + 11 + 10 + 11) / 4, (12 + 13 + 12 + 13) / 4, (14 + 14 + 14 + 14) / 4],
    ]
    np.testing.assert_allclose(pipeline._halve(pixels)[:, :, 0], expected)
    np.testing.assert_allclose(pipeline._halve(pixels.astype(np.uint8), np.uint16)[:, :, 0], expected)


def grey_photo() -> Image.Image:
    """A black-and-white photo of a '2': grey paper with a gradient and noise, every pixel's R = G = B."""
    rng = np.random.default_rng(5)
    clean = np.asarray(draw_two((300, 300)).convert("L"), np.float32) * 0.7 + np.linspace(40, 70, 300)[None, :]
    return Image.fromarray(np.clip(clean + rng.normal(0, 3, clean.shape), 0, 255).astype(np.uint8)).convert("RGB")


@pytest.mark.parametrize(
    "image",
    [canvas(WHITE, BLACK), canvas(BLACK, WHITE, "RGBA"), canvas((0, 0, 0, 255), (0, 0, 0, 0), "RGBA"), grey_photo()],
    ids=["white-on-black", "black-on-white-rgba", "black-on-transparent", "grey-photo"],
)
def test_grey_images_take_one_channel_to_the_same_result(image, monkeypatch):
    colour, alpha = pipeline._as_arrays(pipeline._working_copy(image))
    assert colour.shape[2] == 1
    one_channel = to_mnist(image)
    as_arrays = pipeline._as_arrays
    monkeypatch.setattr(pipeline, "_as_arrays", lambda im: (np.repeat(as_arrays(im)[0], 3, axis=2), as_arrays(im)[1]))
    np.testing.assert_allclose(one_channel, to_mnist(image), atol=1e-5)


def test_colour_images_keep_their_three_channels():
    assert pipeline._as_arrays(canvas((30, 60, 200), WHITE))[0].shape[2] == 3


def test_photo_has_no_flat_background():
    rng = np.random.default_rng(3)
    clean = np.asarray(draw_two((400, 300), paper=(235, 225, 200)), np.float32) / 255
    photo = np.round(np.clip(clean + rng.normal(0, 0.02, clean.shape), 0, 1) * 255).astype(np.uint8)
    rgb = pipeline._as_arrays(load_image(encode(Image.fromarray(photo), "JPEG", quality=85)))[0]
    assert pipeline._flat_background(rgb) is None


# Exact shortcuts ---------------------------------------------------------------------------------------


def sample_arrays(seed: int):
    """float32 arrays such as the statistics see: image levels with many ties (mostly paper), or continuous values."""
    rng = np.random.default_rng(seed)
    for trial in range(300):
        size = int(rng.integers(1, 2500))
        levels = rng.integers(0, 256, size).astype(np.float32) / np.float32(255.0)
        values = levels if trial % 2 else rng.random(size).astype(np.float32)
        if trial % 3 == 0:
            values[rng.random(size) < 0.8] = 0.0
        yield values.reshape(1, -1) if trial % 5 else values[: size - size % 7].reshape(-1, 7)[:, ::2]


def test_percentiles_and_medians_are_numpys_to_the_bit():
    for values in sample_arrays(seed=0):
        qs = (0.1, 90.0, 99.9, 50.0, 100.0 * float(np.random.default_rng(values.size).random()))
        got = pipeline._percentiles(values, qs)
        assert [(float(x), x.dtype) for x in got] == [(float(np.percentile(values, q)), np.float32) for q in qs]
        assert float(pipeline._median(values)) == float(np.median(values))
    values = np.array([3, 1, 2], np.float32)
    (
        pipeline._percentiles(values, (50.0,)),
        pipeline._median(values),
    )  # they sort copies: the caller's array stays as it was
    np.testing.assert_array_equal(values, [3, 1, 2])


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9, 15, 21])
def test_window_extremes_are_scipys_rank_filters(size):
    from scipy import ndimage

    rng = np.random.default_rng(size)
    for shape in ((1, 1), (5, 40), (37, 23), (64, 64)):
        image = (rng.random(shape) * (rng.random(shape) < 0.4)).astype(np.float32)
        for extreme, rank_filter in ((np.maximum, ndimage.maximum_filter), (np.minimum, ndimage.minimum_filter)):
            for margin in (0, size):
                expected = rank_filter(np.pad(image, margin), size=size, mode="constant")
                np.testing.assert_array_equal(framing._window_extreme(image, size, extreme, margin=margin), expected)


# Sizes -------------------------------------------------------------------------------------------------


def test_tiny_image():
    tiny = np.full((8, 8), 255, np.uint8)
    tiny[1:7, 4] = 0  # an 8x8 '1' ...
    tiny[1, 3] = 0  # ... with a flag
    pixels = to_mnist(Image.fromarray(tiny))
    row, col = center_of_mass(pixels)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1 and ink_box(pixels)[0] == 20


def test_huge_photo_is_fast_and_right(reference):
    huge = draw_two((4000, 3000), paper=(240, 236, 228))
    start = time.perf_counter()
    pixels = to_mnist(huge)
    assert time.perf_counter() - start < 3.0  # about 0.2 s; generous for a busy machine
    assert_same_digit(pixels, to_mnist(draw_two((400, 300))), shift=1)


# Loading -----------------------------------------------------------------------------------------------


def test_path_bytes_and_pathlike_agree(tmp_path, reference):
    path = tmp_path / "two.png"
    draw_two().save(path)
    for source in (path, str(path), path.read_bytes(), bytearray(path.read_bytes())):
        np.testing.assert_array_equal(preprocess(source), reference)


def test_exif_orientation_is_applied():
    # Stored sideways, as a phone held upright writes it, with Orientation 6: "rotate 90 degrees clockwise".
    upright = draw_two((300, 400))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(encode(stored, "JPEG", quality=95, exif=exif))
    assert loaded.size == upright.size
    assert_same_digit(to_mnist(loaded), to_mnist(upright))
    sideways = load_image(encode(stored, "JPEG", quality=95))
    assert np.abs(to_mnist(sideways) - to_mnist(upright)).mean() > 0.1


@pytest.fixture
def spng_calls(monkeypatch) -> list[bytes]:
    """The bytes each call of libspng's decoder got, while still decoding them (none where it is not installed)."""
    calls = []
    if images.pyspng is not None:
        decode = images.pyspng.load
        monkeypatch.setattr(images.pyspng, "load", lambda data: calls.append(data) or decode(data))
    return calls


@pytest.mark.skipif(images.pyspng is None, reason="pyspng has no wheel for this platform")
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_plain_pngs_decode_with_libspng_to_pillows_pixels(mode, spng_calls):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(37, 53, len(mode)), dtype=np.uint8).squeeze()
    data = encode(Image.fromarray(pixels, mode))
    loaded = load_image(data)
    assert spng_calls == [data]
    assert loaded.mode == mode
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(Image.open(io.BytesIO(data))))


def test_without_libspng_pillow_decodes_plain_pngs_the_same(monkeypatch):
    data = encode(canvas(WHITE, BLACK, "RGBA"))
    with_libspng = np.asarray(load_image(data))
    monkeypatch.setattr(images, "pyspng", None)  # as on a platform without its wheels
    np.testing.assert_array_equal(np.asarray(load_image(data)), with_libspng)


def exif_png(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "PNG", exif=exif)


@pytest.mark.parametrize(
    "data, mode",
    [
        (encode(draw_two().convert("P")), "RGB"),
        (encode(draw_two().convert("LA")), "RGBA"),
        (encode(draw_two().convert("1")), "RGB"),
        (encode(draw_two().convert("I;16")), "F"),
        (encode(draw_two(), transparency=(255, 255, 255)), "RGBA"),
        (exif_png(draw_two(), 1), "RGB"),
    ],
    ids=["palette", "grey-alpha", "1-bit", "16-bit", "colour-key", "exif"],
)
def test_other_pngs_decode_with_pillow(data, mode, spng_calls, reference):
    assert pipeline._working_copy(load_image(data)).mode == mode
    assert spng_calls == []
    assert_same_digit(preprocess(data), reference)


def test_png_exif_orientation_is_applied(spng_calls):
    upright = draw_two((300, 400))
    loaded = load_image(exif_png(upright.transpose(Image.Transpose.ROTATE_90), 6))
    assert spng_calls == [] and loaded.size == upright.size
    assert_same_digit(to_mnist(loaded), to_mnist(upright))


def test_animated_gif_gives_first_frame(reference):
    frames = [draw_two().convert("P"), Image.new("P", (200, 200), 0)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert_same_digit(preprocess(gif), reference)


def png_header_only(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header claims width x height RGB pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def lab_tiff() -> bytes:
    return encode(Image.new("LAB", (32, 32)), "TIFF")


def float_tiff_with_nan() -> bytes:
    """A '2' as a 32-bit float TIFF whose top rows hold NaN, as scientific images mark missing data."""
    pixels = np.asarray(draw_two((200, 200)).convert("L"), np.float32) / 255
    pixels[:20] = np.nan
    return encode(Image.fromarray(pixels, "F"), "TIFF")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (np.random.default_rng(3).bytes(2000), "not an image"),
        (encode(draw_two())[:600], "truncated"),
        (png_header_only(50_000, 50_000), "too large"),
        (png_header_only(8_000, 8_000), "too large"),
        (lab_tiff(), "unsupported image mode"),
        (float_tiff_with_nan(), "NaN or infinite"),
    ],
    ids=["empty", "random-bytes", "truncated-png", "bomb-50000x50000", "over-max-pixels", "lab-mode", "float-nan"],
)
def test_bad_files_raise_image_error_with_one_line(data, words):
    with pytest.raises(ImageError) as caught:
        preprocess(data)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert isinstance(caught.value, DigitnetError) and isinstance(caught.value, ValueError)


def test_max_pixels_sits_below_pillows_own_limit():
    assert 8_000 * 8_000 > MAX_PIXELS >= 8064 * 6048  # a 48-megapixel phone photo passes


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_unsupported_mode_passed_as_image():
    with pytest.raises(ImageError, match="unsupported image mode"):
        to_mnist(Image.new("LAB", (32, 32)))


@pytest.mark.parametrize("noise", [0.0, 4.0], ids=["clean", "scanner-noise"])
def test_digits_cropped_to_their_strokes_are_read_as_with_a_white_border(noise):
    # A scan cropped to the digit, as a crop tool leaves it: ink covers 30 to 45% of the 64x64 picture, and the
    # strokes touch all four edges. Read once over all pixels, the noise looked as large as the ink (issue:
    # "digits that fill the picture").
    rng = np.random.default_rng(6)
    for box in [(0.0, 0.0, 1.0, 1.0), (0.05, 0.0, 0.95, 1.0)]:
        cropped = np.asarray(draw_two((64, 64), box=box).convert("L"), np.float32)
        scan = Image.fromarray(np.clip(cropped + rng.normal(0, noise, cropped.shape), 0, 255).astype(np.uint8))
        pixels = preprocess(encode(scan), require_ink=True)
        assert_same_digit(
            pixels, to_mnist(ImageOps.expand(scan, border=16, fill=255)), mean_tol=0.05, max_tol=0.6, shift=1
        )
