"""Turn a user's photo, scan or canvas drawing into an MNIST-style 28x28 input.

MNIST's digits are white on black, their ink bounding box scaled (antialiased) so its longest side is
20 pixels, then placed in a 28x28 frame so their center of mass sits at pixel (14, 14) (LeCun et al.,
"The MNIST database"). A network trained on them reads only inputs made the same way; `to_mnist`
does that to anything a user may send: dark or light ink, coloured ink, tinted or unevenly lit paper,
transparent canvas exports, 8x8 thumbnails and 50-megapixel photos.

    pixels = preprocess("photo.jpg")                       # (28, 28) float32 in [0, 1]
    probs = make_predict_fn(model)(pixels.reshape(1, 784))  # digitnet.model
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image
from scipy import ndimage

from digitnet.framing import digit_pieces, frame_digit
from digitnet.images import ALPHA_MODES, DEEP_MODES, MAX_PIXELS, MODES, ImageError, as_file, decode, load_image

__all__ = ["MAX_PIXELS", "ImageError", "load_image", "preprocess", "to_mnist"]

WORK_SIDE = 512  # long side of the working copy, pixels: a digit 10% of a photo's height keeps 50 rows
MIN_WORK_SIDE = 84  # tiny images (8x8 thumbnails) are enlarged to this so the filters have room
FLAT_WORK_SIDE = 140  # images on a flat background (canvases) are halved while their long side stays at least this
BACKGROUND_SIDE = 64  # long side of the copy on which the paper's shading is fitted, pixels
BACKGROUND_ROUNDS = 8  # reweighted fits of the shading: on photos the weights stop changing after 6 to 8
BACKGROUND_ASYMMETRY = 0.02  # weight of a pixel darker than the surface, against 0.98 for one lighter
TYPICAL_SIDE = 32  # long side of the copy on which the typical colour around each pixel is found, pixels
TYPICAL_WINDOW = 1.0  # ... over squares as wide as the long side: mostly paper even in a crop, yet one side of a shadow
MIN_CONTRAST = 0.08  # ink must differ from the paper by this much (of full scale), else the image is blank
NOISE_SIGMAS = 5.0  # a pixel is ink candidate only this many noise deviations above the paper
MIN_NOISE_FLOOR = 0.03  # ... and at least this far: 8-bit quantisation and JPEG ringing
PAPER_CLIP_SIGMAS = 3.0  # in measuring the paper's noise, pixels this many deviations above its level count as ink
PAPER_CLIP_ROUNDS = 8  # ... and the clipping is repeated at most this often (2 to 4 rounds settle it on photos)
INK_SHARE = 0.0002  # a digit 3% of a photo's height, in a fine pen, still inks this share of its pixels
INK_LOW, INK_HIGH = 0.3, 0.7  # fractions of the ink contrast mapped to 0 and 1: a soft threshold
FLAT_SHARE = 0.5  # a flat background: at least this share of the pixels sits at one 8-bit grey level ...
FLAT_NOISE_LEVELS = 3  # ... and on one side of it, few pixels lie 1 to this many levels off: noise would put them there
FLAT_SPREAD = 0.002  # ... "few": under this many per pixel at the level (canvases 0, scans 0.0115 or more)


def to_mnist(image: Image.Image) -> np.ndarray:
    """The image as MNIST would have it: (28, 28) float32 in [0, 1], a white digit on black.

    Steps, each to match how MNIST was made or to undo what a camera or canvas adds:

    1. Work on a version whose long side is at most WORK_SIDE (huge photos stay fast) and at least
       MIN_WORK_SIDE (tiny thumbnails leave room for the filters).
    2. Composite transparency onto the colour that nothing should have: white under dark strokes,
       black under light ones (a canvas export), the paper's own colour under a transparent border.
       On a flat background (a canvas, a rendered digit: most pixels at one level, see
       _flat_background) halve the working copy down to FLAT_WORK_SIDE.
    3. Find the polarity: the ink is whichever of darker or lighter than the typical colour deviates
       more; light ink on dark is inverted, so the rest of the steps see dark ink on light paper.
    4. Estimate the paper's colour at each pixel (a smooth surface fitted above the ink keeps tints,
       gradients and vignetting) and measure ink as the largest drop below it over the three
       channels, so blue, red or yellow ink stays as strong as black. On a flat background the
       surface is that level, and fitting it would cost most of the time this function takes for nothing.
    5. Threshold softly above the noise level and stretch, so the strokes are 1 and the paper 0.
    6. Keep the digit's connected pieces: drop specks, and margin lines or table edges that run
       along the border while a digit stands clear of it.
    7. Crop to the ink and bring hairlines and heavy strokes towards MNIST's stroke width.
    8. Scale the longest side to 20 pixels (antialiased, aspect kept) and place the digit in the
       28x28 frame with its center of mass at (14, 14).

    An image with no ink (blank, or contrast below MIN_CONTRAST) gives all zeros.
    """
    return _to_mnist(image)


def _to_mnist(image: Image.Image | np.ndarray) -> np.ndarray:
    """to_mnist, for a Pillow image or the 8-bit array libspng decoded (see digitnet.images.decode)."""
    return frame_digit(ink_map(image))


def ink_map(image: Image.Image | np.ndarray) -> np.ndarray:
    """Steps 1 to 6 of to_mnist: the ink of the digit's pieces in the working copy, (H, W) float32, 1 on the
    strokes and 0 on the paper. The working copy is the image scaled by the same factor along both sides."""
    rgb = _flatten_alpha(*_colour_and_alpha(image))
    background = _flat_background(rgb)
    # A flat background has no noise for the extra pixels to average away, and the digit ends 20 pixels
    # tall: read at 140x140, MNIST's test digits drawn as 280x280 canvases scored 97.60% against 97.67% at
    # full size (docs/serve-speed.md), and each step from here costs about a quarter. Photos and scans keep
    # WORK_SIDE, for their noise and small digits.
    while background is not None and max(rgb.shape[:2]) >= 2 * FLAT_WORK_SIDE:
        rgb = _halve(rgb)
    if _light_ink(rgb, background):
        rgb = 1.0 - rgb
        background = None if background is None else 1.0 - background
    paper = _paper(rgb) if background is None else background
    return digit_pieces(_stretch(_channel_max(paper - rgb)))


def preprocess(source: bytes | str | os.PathLike, *, require_ink: bool = False) -> np.ndarray:
    """Load an image from bytes or a path and return MNIST's (28, 28) float32 input for it.

    With require_ink, an image with no ink (blank, or strokes too faint) is an ImageError instead of
    all zeros: a network asked about an empty frame still answers some digit, which would mislead.
    """
    pixels = _to_mnist(decode(source))
    if require_ink and not pixels.any():
        raise no_digit(source)
    return pixels


def no_digit(source: bytes | str | os.PathLike) -> ImageError:
    """The error for an image with no ink to read."""
    return ImageError(
        f"{as_file(source)[1]} shows no digit: it is blank, or its strokes are too faint to tell "
        "from the background; write or draw darker"
    )


# Colour ----------------------------------------------------------------------------------------------


def _working_copy(image: Image.Image) -> Image.Image:
    """The image in RGB, RGBA or F mode, its long side between MIN_WORK_SIDE and WORK_SIDE (never altered in place)."""
    if image.mode not in MODES:
        raise ImageError(f"unsupported image mode {image.mode!r}; use an RGB or greyscale image")
    has_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    mode = "F" if image.mode in DEEP_MODES else "RGBA" if has_alpha else "RGB"
    # Palettes, bilevel and 16-bit images only resample by nearest neighbour, and a transparent colour
    # key is lost in resampling: convert those first. Others shrink first, sparing a full-size copy.
    if image.mode in ("1", "P", "PA", "RGBa") + DEEP_MODES or "transparency" in image.info:
        image = image.convert(mode)
    width, height = image.size
    long_side = max(width, height)
    target = min(max(long_side, MIN_WORK_SIDE), WORK_SIDE)
    if target != long_side:
        scale = target / long_side
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Shrinking: Lanczos after integer box reduction (reducing_gap), fast on 50-megapixel photos.
        # Enlarging a thumbnail: bilinear, which adds no ringing around its few big pixels.
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
        image = image.resize(size, resample, reducing_gap=2.0 if scale < 1 else None)
    return image.convert(mode) if image.mode != mode else image


def _colour_and_alpha(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """_as_arrays of the working copy; a decoded 8-bit array already at a working size is used as it is."""
    if isinstance(image, np.ndarray):
        if MIN_WORK_SIDE <= max(image.shape[:2]) <= WORK_SIDE:  # the page's canvas, 280x280, always is
            return _split(image)
        image = Image.fromarray(image)
    return _as_arrays(_working_copy(image))


def _halve(pixels: np.ndarray, total_dtype: type = np.float32, scale: float = 1.0) -> np.ndarray:
    """Each 2x2 block's mean times scale, as float32: (H, W, C) to (ceil(H / 2), ceil(W / 2), C); an odd last
    row or column pairs with itself. The four are added in total_dtype (np.uint16 for 8-bit levels: no overflow)."""
    if pixels.shape[0] % 2:
        pixels = np.concatenate([pixels, pixels[-1:]], axis=0)
    if pixels.shape[1] % 2:
        pixels = np.concatenate([pixels, pixels[:, -1:]], axis=1)
    total = pixels[0::2, 0::2].astype(total_dtype)
    total += pixels[1::2, 0::2]
    total += pixels[0::2, 1::2]
    total += pixels[1::2, 1::2]
    return np.multiply(total, np.float32(0.25 * scale), dtype=np.float32)


def _as_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour (H, W, C) and alpha (H, W) or None, as float32 in [0, 1].

    C is 3, or 1 for a grey image (every pixel's red, green and blue equal, as on a black-and-white
    canvas): the steps that follow give the same result on its one channel at a third of the cost.
    """
    if image.mode == "F":
        # 16-bit scans use 0..65535, 8-bit values stored deep use 0..255, float TIFFs 0..1.
        pixels = np.asarray(image, np.float32)
        if not np.isfinite(pixels).all():  # a float TIFF's "no data"; no level of ink or paper is right for it
            raise ImageError("the image has NaN or infinite pixel values; save it with finite ones, or as an 8-bit PNG")
        top = pixels.max(initial=0.0)
        scale = 65535.0 if top > 255 else 255.0 if top > 1 else 1.0
        return np.clip(pixels / scale, 0.0, 1.0)[:, :, None], None
    return _split(np.asarray(image))


def _split(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """_as_arrays of 8-bit pixels: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.

    An opaque grey image on a flat background (the page's canvas) comes halved as _to_mnist would
    halve it, but from its 8-bit levels: only the quarter of the pixels that remain become floats.
    """
    if raw.ndim == 2:
        raw = raw[:, :, None]
    grey = raw.shape[2] == 1 or _is_grey(raw)
    # An opaque alpha channel (the page's canvas has one) is as good as none, and its conversion is skipped.
    opaque = raw.shape[2] != 4 or raw[:, :, 3].min() == 255
    if grey and opaque and max(raw.shape[:2]) >= 2 * FLAT_WORK_SIDE and _flat_level(raw[::2, ::2, 0]) is not None:
        return _halve(raw[:, :, :1], np.uint16, scale=1 / 255), None
    colour = (raw[:, :, :1] if grey else raw[:, :, :3]).astype(np.float32) / np.float32(255.0)
    alpha = None if opaque else raw[:, :, 3].astype(np.float32) / np.float32(255.0)
    return colour, alpha


def _is_grey(raw: np.ndarray) -> bool:
    """Whether every pixel of an 8-bit RGB or RGBA array has equal red, green and blue."""
    if raw.shape[2] == 4 and raw.flags.c_contiguous:
        # Each pixel as one 32-bit word, red in its lowest byte: shifted by a byte onto itself, red meets
        # green and green meets blue. Three passes over the words, against two comparisons of strided channels.
        words = raw.view("<u4")
        shifted = words >> 8
        shifted ^= words
        shifted &= 0xFFFF
        return not shifted.any()
    return np.array_equal(raw[:, :, 0], raw[:, :, 1]) and np.array_equal(raw[:, :, 0], raw[:, :, 2])


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma, as Pillow's convert("L"); a grey image's one channel."""
    if rgb.shape[2] == 1:
        return rgb[:, :, 0]
    return 0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2]


def _flatten_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Composite onto the colour that transparent pixels should have.

    A canvas export has opaque strokes on a transparent background whose stored colour is arbitrary
    (often black, so black strokes vanish): the backdrop must contrast with the strokes, white under
    dark ones and black under light ones. When most of the image is opaque, the opaque part holds
    the paper too, and a transparent border should take the paper's colour.
    """
    if alpha is None or alpha.min() >= 0.99:
        return rgb
    coverage = float(alpha.mean())
    if coverage == 0.0:
        return np.ones_like(rgb)
    if coverage > 0.5:
        backdrop = np.median(rgb[alpha > 0.5], axis=0)
    else:
        stroke_level = float((_luminance(rgb) * alpha).sum() / alpha.sum())
        backdrop = np.full(rgb.shape[2], 1.0 if stroke_level < 0.5 else 0.0, np.float32)
    return backdrop + (rgb - backdrop) * alpha[:, :, None]  # rgb * alpha + backdrop * (1 - alpha), one pass fewer


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    """The largest of the channels at each pixel: (H, W); as rgb.max(axis=2), which numpy runs 20 times slower."""
    if rgb.shape[2] == 1:
        return rgb[:, :, 0]
    return np.maximum(np.maximum(rgb[:, :, 0], rgb[:, :, 1]), rgb[:, :, 2])


def _flat_background(rgb: np.ndarray) -> np.ndarray | None:
    """The background's colour (C,) when it is a single flat level, as on a canvas; None for photos and scans.

    A canvas or a rendered digit has its whole background at one level; only the strokes' antialiased
    rims lie near it, and all on the ink's side. A camera's or scanner's noise, even faint and blurred,
    spreads paper to both sides: at least 1.15% as many pixels 1 to 3 levels lighter, and as many
    darker, as at the most common level (measured on tests/realworld.py's photos and scans), so those
    keep the fitted paper surface. A flat background needs none: the fit would only come back to its level.
    """
    sample = rgb[::2, ::2]  # a quarter of the pixels is plenty for a histogram
    grey = (_luminance(sample) * 255.0 + 0.5).astype(np.uint8)
    level = _flat_level(grey)
    if level is None:
        return None
    return np.array([sample[:, :, c][grey == level].mean() for c in range(rgb.shape[2])], np.float32)


def _flat_level(grey: np.ndarray) -> int | None:
    """The 8-bit grey level of a flat background (see _flat_background) in a sample of levels, or None."""
    counts = np.bincount(grey.ravel(), minlength=256)
    level = int(counts.argmax())
    darker = counts[max(level - FLAT_NOISE_LEVELS, 0) : level].sum()
    lighter = counts[level + 1 : level + FLAT_NOISE_LEVELS + 1].sum()
    if counts[level] < FLAT_SHARE * grey.size or min(darker, lighter) >= FLAT_SPREAD * counts[level]:
        return None
    return level


def _light_ink(rgb: np.ndarray, typical: np.ndarray | None = None) -> bool:
    """Whether the ink is lighter than the paper (of colour typical, else _typical_colour's): the lighter tail
    deviates more."""
    sample = rgb[::2, ::2]  # a quarter of the pixels is plenty for a tail
    if typical is None:
        typical = _resized(_typical_colour(rgb), sample.shape[1::-1], Image.Resampling.BILINEAR)
    lighter = _channel_max(sample - typical)
    # The 99.9th percentile is ink for any digit covering over 0.1% of the image, and ignores a few
    # hot pixels; on white paper only dark ink can deviate far, on a blackboard only light ink.
    if rgb.shape[2] == 1:  # one channel: darker is -lighter, and both tails come from one partial sort
        lowest, highest = _percentiles(lighter, (0.1, 99.9))
        return bool(highest > -lowest)
    return bool(_percentiles(lighter, (99.9,))[0] > _percentiles(_channel_max(typical - sample), (99.9,))[0])


def _typical_colour(rgb: np.ndarray) -> np.ndarray:
    """The most common colour around each pixel, as a small (h, w, C) copy: the median over a square half the long
    side wide. Unlike the median of the whole picture, it stays the paper's on both sides of a shadow's edge."""
    height, width, _ = rgb.shape
    small = _resized(rgb, _fit_size(width, height, TYPICAL_SIDE), Image.Resampling.BOX)
    side = max(1, round(TYPICAL_WINDOW * TYPICAL_SIDE))
    return np.stack(
        [ndimage.median_filter(small[:, :, c], size=side, mode="nearest") for c in range(small.shape[2])], axis=2
    )


def _paper(rgb: np.ndarray) -> np.ndarray:
    """The paper's colour at each pixel, strokes left out, tints, gradients and vignetting kept: (H, W, C).

    A quadratic surface per channel, fitted to a small copy by asymmetric least squares (Eilers and
    Boelens 2005, as for the baselines of spectra): it follows the paper's shading and stays above the ink.
    """
    height, width, _ = rgb.shape
    surface = _quadratic_surface(_resized(rgb, _fit_size(width, height, BACKGROUND_SIDE), Image.Resampling.BOX))
    # The surface is smooth, so bilinear enlargement of its small copy is exact to a thousandth.
    return _resized(surface, (width, height), Image.Resampling.BILINEAR)


def _fit_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so the long side is side, at least 1."""
    scale = side / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(rgb: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """An (H, W, C) float32 array resized channel by channel to size (width, height)."""
    if rgb.shape[1::-1] == tuple(size):
        return rgb.astype(np.float32)
    return np.stack(
        [
            np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c], np.float32), "F").resize(size, resample))
            for c in range(rgb.shape[2])
        ],
        axis=2,
    )


def _quadratic_surface(small: np.ndarray) -> np.ndarray:
    """The quadratic surface per channel that rises to the paper of a small (h, w, C) copy, fitted by
    asymmetric least squares: (h, w, C)."""
    rows, cols, channels = small.shape
    small = small.reshape(-1, channels)
    basis = _quadratic_basis(rows, cols)
    terms = basis.shape[1]
    # Each round's weighted normal equations are weighted sums over the pixels of these products,
    # formed once. Not lstsq or @: threaded BLAS on such small matrices costs tens of milliseconds
    # when the machine is busy; nor einsum over three operands, which numpy runs as a slow plain loop.
    pairs = (basis[:, :, None] * basis[:, None, :]).reshape(len(small), terms * terms)
    moments = (basis[:, :, None] * small[:, None, :]).reshape(len(small), terms * channels)
    weights = np.ones((len(small), 1), np.float32)
    for _ in range(BACKGROUND_ROUNDS):
        gram = (pairs * weights).sum(axis=0).reshape(terms, terms)
        # A copy one or two pixels thin has no curvature across: a whisker of ridge keeps the system solvable.
        gram[np.diag_indices(terms)] += 1e-6 * len(small)
        coef = np.linalg.solve(gram, (moments * weights).sum(axis=0).reshape(terms, channels))
        fitted = sum(basis[:, [i]] * coef[i] for i in range(terms))
        # Asymmetric least squares: pixels darker than the surface (ink, or noise) barely count,
        # so it rises to the paper whatever share of the image the digit covers.
        darker = (fitted - small).mean(axis=1) > 0
        weights = np.where(darker, BACKGROUND_ASYMMETRY, 1.0 - BACKGROUND_ASYMMETRY).astype(np.float32)[:, None]
    return fitted.reshape(rows, cols, channels).astype(np.float32)


def _quadratic_basis(height: int, width: int) -> np.ndarray:
    """The terms 1, x, y, x^2, xy, y^2 at each pixel of a height x width grid, x and y in [-1, 1]: (H*W, 6)."""
    y, x = np.meshgrid(
        np.linspace(-1, 1, height, dtype=np.float32), np.linspace(-1, 1, width, dtype=np.float32), indexing="ij"
    )
    x, y = x.ravel(), y.ravel()
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _stretch(strength: np.ndarray) -> np.ndarray:
    """Map paper to 0 and strokes to 1 with a soft threshold set from the noise and the ink's level."""
    sample = strength[::2, ::2]  # a quarter of the pixels is plenty for medians and a percentile
    paper_level, noise = _paper_statistics(sample)
    floor = paper_level + max(NOISE_SIGMAS * noise, MIN_NOISE_FLOOR)
    candidates = sample[sample > floor]
    if candidates.size == 0:
        return np.zeros_like(strength)
    # The ink's level: what the strongest tenth of the candidates reach; where they are many (ruled lines, shading
    # the surface missed), what the strongest INK_SHARE of all pixels reach: the digit's strokes, not the faint mass.
    strongest = min(0.1 * candidates.size, max(1.0, INK_SHARE * sample.size))
    contrast = float(_percentiles(candidates, (100.0 * (1.0 - strongest / candidates.size),))[0]) - paper_level
    if contrast < MIN_CONTRAST:
        return np.zeros_like(strength)
    low = max(paper_level + INK_LOW * contrast, floor)
    high = max(paper_level + INK_HIGH * contrast, low + 1e-3)
    stretched = np.subtract(strength, low, dtype=np.float32)  # in place from here: no temporaries
    np.divide(stretched, high - low, out=stretched)
    return np.clip(stretched, 0.0, 1.0, out=stretched)


def _paper_statistics(strength: np.ndarray) -> tuple[float, float]:
    """The paper's level in a map of ink strength, and its noise's standard deviation: the median and the scaled
    median absolute deviation of the pixels, with those far above the level (ink) clipped away and the two
    measured again until no more go (one-sided sigma clipping, as astronomers measure the sky between stars).

    Measured once over all pixels, both are the paper's only while ink covers a small share of the picture: a
    digit cropped to its strokes covers 20 to 50% of it, and its antialiased rims alone make the deviation
    several times the noise, so that no pixel would stand out of it.
    """
    values = strength.ravel()
    level = float(_median(values))
    # The first clip uses the noise of differences between neighbours, which strokes and rims barely touch: the
    # deviation of all pixels would be the ink's spread, and keep the ink. (Blur lowers it; the rounds raise it again.)
    noise = 1.4826 * float(_median(np.abs(np.diff(values)))) / math.sqrt(2) if values.size > 1 else 0.0
    paper = values
    for _ in range(PAPER_CLIP_ROUNDS):
        kept = values[values <= level + PAPER_CLIP_SIGMAS * noise]
        if kept.size == paper.size:
            break
        paper = kept
        level = float(_median(paper))
        noise = 1.4826 * float(_median(np.abs(paper - level)))  # 1.4826 x MAD is the deviation of a normal distribution
    return level, noise


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[np.floating]:
    """[np.percentile(values, q) for q in qs], to the bit (numpy's linear method), from one partial sort.

    np.percentile partially sorts a copy of the values for each call and checks and promotes its
    arguments in Python: its four calls took a sixth of the time a canvas takes to preprocess.
    """
    ordered = values.flatten()  # a copy: partitioned in place below
    count = ordered.size
    # Where numpy places each quantile between the order statistics, computed as it computes it.
    positions = [count * (q / 100) + (1 - q / 100) - 1 for q in qs]
    below = [count - 1 if at >= count - 1 else max(math.floor(at), 0) for at in positions]
    above = [min(index + 1, count - 1) for index in below]
    ordered.partition(sorted(set(below + above)))
    results = []
    for at, low, high in zip(positions, ordered[below], ordered[above]):
        weight = at - math.floor(at)  # a Python float: the arithmetic stays in the values' precision, as numpy's does
        step = high - low
        results.append(low + step * weight if weight < 0.5 else high - step * (1 - weight))
    return results


def _median(values: np.ndarray) -> np.floating:
    """np.median(values), to the bit, from one partial sort: the middle value, or the mean of the middle two."""
    ordered = values.flatten()
    middle = ordered.size // 2
    if ordered.size % 2:
        ordered.partition(middle)
        return ordered[middle]
    ordered.partition((middle - 1, middle))
    return (ordered[middle - 1] + ordered[middle]) / 2


# Shape -----------------------------------------------------------------------------------------------
