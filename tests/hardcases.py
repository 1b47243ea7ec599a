"""Digits in pictures that digitnet's preprocessing was not tuned on, by kind, from sources new to the project.

Two sources, neither used by tests/realworld.py, deterministic for a seed, with no download:

fonts    handwriting fonts from Debian packages: fonts-humor-sans, fonts-sjfonts, fonts-bwht, fonts-kristi,
         fonts-rufscript and fonts-kaushanscript. Files that are not installed are skipped.
hershey  the Hershey single-stroke fonts of the PyPI package hershey-fonts, drawn as a hand would: each
         stroke moved and bent a little, slanted, with a round pen of any width.

Each source's fonts are split in two: SPLITS["tune"], on which preprocessing's rules may be adjusted, and
SPLITS["held-out"], whose results are only read to report them (docs/preprocessing.md).

Kinds of picture (KINDS), each a function of an ink mask and a random generator:

edge-crop  dark ink on white paper cropped to the digit, the strokes touching the edges: 64x64 or the ink box
           with its long side 64, scanned (PNG) or photographed (JPEG)
form-box   a digit written in a form's printed box, cut out along the box: its lines run along the edges
thick      a marker: strokes an eighth to a fifth of the digit's height; thin: a fine pen, 1 to 3 pixels wide
pencil     graphite on grey paper: faint, grainy strokes
ruled      lined paper (blue lines, sometimes a red margin); squared: a grid of squares
small      a digit 3% to 8% of the height of a 2 to 5 megapixel photo
shadow     a shadow with a soft edge across part of the digit

    from hardcases import generate
    sets = generate(tmp_path, n_per_kind=20, split="tune", seed=0)   # {"edge-crop": [(path, label)], ...}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from realworld import blur, camera, save_picture

FONT_FILES = {
    "tune": [
        "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
        "/usr/share/fonts/truetype/sjfonts/SteveHand.ttf",
        "/usr/share/fonts/opentype/bwht/BecauseWeBuild-Regular.otf",
        "/usr/share/fonts/opentype/bwht/BecauseWeCreate-Regular.otf",
        "/usr/share/fonts/opentype/bwht/BecauseWeMentor-Regular.otf",
        "/usr/share/fonts/truetype/rufscript/Rufscript010.ttf",
    ],
    "held-out": [
        "/usr/share/fonts/truetype/sjfonts/Delphine.ttf",
        "/usr/share/fonts/opentype/bwht/BecauseWeConnect-Regular.otf",
        "/usr/share/fonts/opentype/bwht/BecauseWeLearn-Regular.otf",
        "/usr/share/fonts/opentype/bwht/BecauseWeOrganize-Regular.otf",
        "/usr/share/fonts/truetype/kristi/Kristi.ttf",
        "/usr/share/fonts/opentype/kaushanscript/KaushanScript-Regular.otf",
    ],
}
# Hershey fonts whose digits are single strokes (scripts and the triplex fonts draw outlines); hershey_glyph slants
# them.
HERSHEY_FONTS = {"tune": ["futural", "cursive"], "held-out": ["rowmans", "greeks"]}
SPLITS = ("tune", "held-out")
GLYPH_HEIGHT = 200  # pixels at which glyphs are drawn, before being scaled into a picture
PEN = 0.07  # a ballpoint's stroke, as a share of the digit's height (MNIST's: 1.9 of 20 pixels is 0.095)


def installed_fonts(split: str) -> list[Path]:
    """The split's handwriting font files that are installed."""
    return [Path(f) for f in FONT_FILES[split] if Path(f).is_file()]


# Glyphs ------------------------------------------------------------------------------------------------


def font_glyph(text: str, font_file: Path, pen: float = 0.0) -> np.ndarray:
    """Ink coverage in [0, 1] of text in a font, cropped to its ink, GLYPH_HEIGHT tall, strokes widened by pen x
    height."""
    font = ImageFont.truetype(str(font_file), GLYPH_HEIGHT)
    stroke = round(pen * GLYPH_HEIGHT)
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    image = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(image).text((4 - left, 4 - top), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    return crop_to_ink(np.asarray(image, np.float32) / 255.0)


def hershey_glyph(
    text: str, font_name: str, rng: np.random.Generator, pen: float = PEN, height: int = GLYPH_HEIGHT
) -> np.ndarray:
    """Ink coverage in [0, 1] of text in a Hershey font drawn by hand, about height pixels tall: wobbly strokes,
    a slant, a round pen of pen x height."""
    from HersheyFonts import HersheyFonts  # PyPI hershey-fonts, needed only here

    font = HersheyFonts()
    font.load_default_font(font_name)
    font.normalize_rendering(height)
    strokes = [np.array(stroke, np.float64) for stroke in font.strokes_for_text(text)]
    slant = rng.uniform(-0.25, 0.25)  # x moves by this share of the height from the baseline up
    wobble = rng.uniform(0.005, 0.02) * height
    width = max(1, round(pen * height))
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    margin = width + 4 * wobble + abs(slant) * height + 4
    size = (int(high[0] - low[0] + 2 * margin), int(high[1] - low[1] + 2 * margin))
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        # A hand's wobble: a slow wave along the stroke plus a shift of the whole stroke, not jitter of each point.
        along = np.linspace(0, 2 * np.pi, len(stroke))[:, None]
        offsets = wobble * (
            np.sin(along * rng.uniform(0.5, 1.5, size=2) + rng.uniform(0, 2 * np.pi, size=2))
            + rng.normal(0, 0.5, size=2)
        )
        x = stroke[:, 0] - low[0] + margin + slant * (stroke[:, 1] - low[1]) + offsets[:, 0]
        y = high[1] - stroke[:, 1] + margin + offsets[:, 1]  # Hershey's y grows upwards
        xy = [(float(a), float(b)) for a, b in zip(x, y)]
        if len(xy) > 1:
            draw.line(xy, fill=255, width=width, joint="curve")
        for cx, cy in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((cx - width / 2, cy - width / 2, cx + width / 2, cy + width / 2), fill=255)
    return crop_to_ink(np.asarray(image, np.float32) / 255.0)


def glyph(text: str, split: str, rng: np.random.Generator, pen: float = PEN, extra: float = 0.0) -> np.ndarray:
    """A digit (or a number) from either source, drawn uniformly: a Hershey font with a pen of pen x height,
    or a font with its strokes widened by extra x its size."""
    fonts = installed_fonts(split)
    if fonts and rng.random() < 0.5:
        return font_glyph(text, fonts[rng.integers(len(fonts))], extra)
    names = HERSHEY_FONTS[split]
    return hershey_glyph(text, names[rng.integers(len(names))], rng, pen)


def crop_to_ink(mask: np.ndarray) -> np.ndarray:
    """The smallest rectangle holding every pixel above 0.05."""
    rows, cols = np.flatnonzero((mask > 0.05).any(axis=1)), np.flatnonzero((mask > 0.05).any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def resized(mask: np.ndarray, height: int) -> np.ndarray:
    """A mask scaled (aspect kept) to a height in pixels, antialiased."""
    width = max(1, round(mask.shape[1] * height / mask.shape[0]))
    return np.asarray(Image.fromarray(mask, "F").resize((width, max(1, height)), Image.Resampling.LANCZOS)).clip(0, 1)


def placed(mask: np.ndarray, size: tuple[int, int], height: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """A (H, W) coverage of the given size with the mask scaled to height and put at a random place; and its box."""
    width_px, height_px = size
    small = resized(mask, min(height, height_px - 2))
    small = small[:, : width_px - 2]
    out = np.zeros((height_px, width_px), np.float32)
    top = int(rng.integers(0, height_px - small.shape[0] + 1))
    left = int(rng.integers(0, width_px - small.shape[1] + 1))
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out, (left, top, left + small.shape[1], top + small.shape[0])


def paint(coverage: np.ndarray, paper: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """An (H, W, 3) picture: paper colour where coverage is 0, ink colour where it is 1."""
    return paper + (ink - paper) * coverage[:, :, None]


def dark_ink(rng: np.random.Generator) -> np.ndarray:
    """A pen's colour: black, dark grey or blue."""
    if rng.random() < 0.3:
        return np.array([0.1, 0.15, 0.55]) + rng.uniform(-0.05, 0.05, size=3)
    return np.full(3, rng.uniform(0.0, 0.3))


def white_paper(rng: np.random.Generator) -> np.ndarray:
    """White or cream paper."""
    return rng.uniform(0.85, 1.0) * (1.0 - rng.uniform(0.0, 0.06, size=3))


# Kinds -------------------------------------------------------------------------------------------------


def edge_crop(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The digit cropped so its strokes touch the edges, as a crop tool leaves it: 64x64 or long side 64."""
    height, width = mask.shape
    if rng.random() < 0.5:  # a square around the digit: touches two edges, or all four
        side = max(height, width)
        square = np.zeros((side, side), np.float32)
        square[
            (side - height) // 2 : (side - height) // 2 + height, (side - width) // 2 : (side - width) // 2 + width
        ] = mask
        mask = square
    cut = [
        int(rng.integers(0, max(1, round(0.03 * s)) + 1)) for s in (*mask.shape, *mask.shape)
    ]  # a crop into the strokes
    mask = mask[cut[0] : mask.shape[0] - cut[2], cut[1] : mask.shape[1] - cut[3]]
    scale = 64 / max(mask.shape)
    size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    mask = np.asarray(Image.fromarray(mask, "F").resize(size, Image.Resampling.LANCZOS)).clip(0, 1)
    picture = paint(mask, white_paper(rng), dark_ink(rng))
    if rng.random() < 0.5:  # scanned
        noisy = picture + rng.normal(0, rng.uniform(0.003, 0.02), size=picture.shape)
        return blur(noisy.clip(0, 1), rng.uniform(0, 0.6)), "png"
    return camera(picture, rng), "jpg"


def form_box(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A digit in a form's printed box, the picture cut along the box so its lines run by the edges."""
    side = int(rng.integers(64, 160))
    line = max(1, round(side * rng.uniform(0.01, 0.03)))
    inside = side - 2 * (line + 4)  # the digit stays clear of the lines, as a person writing in a box keeps it
    coverage = np.zeros((side, side), np.float32)
    coverage[line + 4 : side - line - 4, line + 4 : side - line - 4] = placed(
        mask, (inside, inside), round(inside * rng.uniform(0.6, 0.95)), rng
    )[0]
    box = np.zeros_like(coverage)
    inset = [int(rng.integers(0, 3)) for _ in range(4)]  # the cut falls 0 to 2 pixels outside the line
    box[inset[0] : inset[0] + line] = 1
    box[side - inset[1] - line : side - inset[1]] = 1
    box[:, inset[2] : inset[2] + line] = 1
    box[:, side - inset[3] - line : side - inset[3]] = 1
    printed = (
        np.array([0.85, 0.35, 0.35]) if rng.random() < 0.3 else np.full(3, rng.uniform(0.2, 0.6))
    )  # dropout red, grey
    paper = white_paper(rng)
    picture = paint(box, paper, printed)
    picture = picture + (dark_ink(rng) - picture) * coverage[:, :, None]
    noisy = picture + rng.normal(0, rng.uniform(0.003, 0.02), size=picture.shape)
    return blur(noisy.clip(0, 1), rng.uniform(0, 0.6)), "png"


def photo(coverage: np.ndarray, rng: np.random.Generator, paper=None, ink=None) -> tuple[np.ndarray, str]:
    """A photo of the coverage on paper, lit unevenly, blurred a little, noisy, as PNG or JPEG."""
    paper = white_paper(rng) if paper is None else paper
    ink = dark_ink(rng) if ink is None else ink
    return camera(paint(coverage, paper, ink), rng), "jpg" if rng.random() < 0.5 else "png"


def photo_size(rng: np.random.Generator) -> tuple[int, int]:
    """A photo's width and height, landscape or portrait."""
    width, height = [(400, 300), (640, 480), (800, 600), (480, 640), (600, 800)][rng.integers(5)]
    return width, height


def thick(text: str, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A marker's digit: strokes an eighth to a fifth of the digit's height (MNIST's: a tenth)."""
    mask = glyph(text, split, rng, pen=rng.uniform(0.13, 0.2), extra=rng.uniform(0.02, 0.04))
    size = photo_size(rng)
    coverage, _ = placed(mask, size, round(size[1] * rng.uniform(0.3, 0.7)), rng)
    return photo(coverage, rng)


def thin(text: str, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A fine pen's digit: strokes 1 to 3 pixels wide in the photo, drawn at its size (Hershey fonts only: a font's
    strokes have the width its designer gave them)."""
    size = photo_size(rng)
    height = round(size[1] * rng.uniform(0.4, 0.8))
    names = HERSHEY_FONTS[split]
    mask = hershey_glyph(text, names[rng.integers(len(names))], rng, pen=rng.uniform(1.0, 3.0) / height, height=height)
    coverage, _ = placed(mask, size, mask.shape[0], rng)
    return photo(coverage, rng)


def pencil(text: str, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Graphite on grey paper: faint strokes with grain, a grey sheet."""
    mask = glyph(text, split, rng)
    size = photo_size(rng)
    coverage, _ = placed(mask, size, round(size[1] * rng.uniform(0.3, 0.7)), rng)
    grain = blur(np.repeat(rng.random(size[::-1])[:, :, None], 3, axis=2), 0.8)[:, :, 0]
    coverage = coverage * np.clip(0.5 + grain, 0, 1)  # graphite leaves the paper's tooth bare in places
    paper = np.full(3, rng.uniform(0.55, 0.8)) * (1 - rng.uniform(0, 0.05, size=3))
    ink = paper - rng.uniform(0.18, 0.35)
    return photo(coverage, rng, paper=paper, ink=ink)


def lined(text: str, split: str, rng: np.random.Generator, squares: bool) -> tuple[np.ndarray, str]:
    """Ruled paper (blue lines, sometimes a red margin) or squared paper, the digit across 1 to 4 of its rows."""
    width, height = photo_size(rng)
    spacing = height * rng.uniform(0.05, 0.1)
    line = max(1, round(spacing * rng.uniform(0.04, 0.1)))
    lines = np.zeros((height, width), np.float32)
    for y in np.arange(rng.uniform(0, spacing), height, spacing):
        lines[int(y) : int(y) + line] = 1
    if squares:
        for x in np.arange(rng.uniform(0, spacing), width, spacing):
            lines[:, int(x) : int(x) + line] = 1
    paper = white_paper(rng)
    colour = np.array([0.55, 0.7, 0.9]) if rng.random() < 0.7 else np.full(3, 0.7)  # light blue, or grey
    picture = paint(lines, paper, colour)
    if not squares and rng.random() < 0.5:
        margin = int(width * rng.uniform(0.08, 0.2))
        picture[:, margin : margin + 2 * line] = [0.9, 0.45, 0.45]
    mask = glyph(text, split, rng)
    coverage, _ = placed(mask, (width, height), round(spacing * rng.uniform(1.2, 4.0)), rng)
    return camera(
        picture + (dark_ink(rng) - picture) * coverage[:, :, None], rng
    ), "jpg" if rng.random() < 0.5 else "png"


def small(text: str, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A digit 3% to 8% of the height of a large photo."""
    width, height = [(2000, 1500), (1500, 2000), (2592, 1944)][rng.integers(3)]
    coverage, _ = placed(glyph(text, split, rng), (width, height), round(height * rng.uniform(0.03, 0.08)), rng)
    return photo(coverage, rng)


def shadow(text: str, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A shadow (of a hand or a phone) with a soft edge across part of the digit."""
    width, height = photo_size(rng)
    coverage, (left, top, right, bottom) = placed(
        glyph(text, split, rng), (width, height), round(height * rng.uniform(0.3, 0.6)), rng
    )
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    # The shadow's edge passes through the digit's box, somewhere in its middle half.
    cx, cy = left + (right - left) * rng.uniform(0.25, 0.75), top + (bottom - top) * rng.uniform(0.25, 0.75)
    distance = (cols - cx) * np.cos(angle) + (rows - cy) * np.sin(angle)
    softness = height * rng.uniform(0.005, 0.05)
    shade = 1.0 - rng.uniform(0.3, 0.55) / (1.0 + np.exp(-distance / softness))
    picture = paint(coverage, white_paper(rng), dark_ink(rng)) * shade[:, :, None]
    return camera(picture, rng), "jpg" if rng.random() < 0.5 else "png"


def _from_mask(kind: Callable) -> Callable[[str, str, np.random.Generator], tuple[np.ndarray, str]]:
    """A kind that takes a glyph's mask as one that takes the text."""
    return lambda text, split, rng: kind(glyph(text, split, rng), rng)


KINDS: dict[str, Callable[[str, str, np.random.Generator], tuple[np.ndarray, str]]] = {
    "edge-crop": _from_mask(edge_crop),
    "form-box": _from_mask(form_box),
    "thick": thick,
    "thin": thin,
    "pencil": pencil,
    "ruled": lambda text, split, rng: lined(text, split, rng, squares=False),
    "squared": lambda text, split, rng: lined(text, split, rng, squares=True),
    "small": small,
    "shadow": shadow,
}


def generate(
    out_dir: Path, n_per_kind: int = 50, split: str = "tune", seed: int = 0, kinds: tuple[str, ...] = tuple(KINDS)
) -> dict[str, list[tuple[Path, int]]]:
    """Write n pictures of each kind into out_dir, digits 0 to 9 in turn; {kind: [(path, label), ...]}."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[tuple[Path, int]]] = {}
    for kind in kinds:
        # One generator per kind and split: asking for fewer kinds, or more pictures, leaves the others as they were.
        rng = np.random.default_rng([seed, SPLITS.index(split), list(KINDS).index(kind)])
        written[kind] = []
        for i in range(n_per_kind):
            label = i % 10
            picture, fmt = KINDS[kind](str(label), split, rng)
            path = out_dir / f"{kind}_{i:04d}_{label}.{fmt}"
            save_picture(picture, path, rng)
            written[kind].append((path, label))
    return written


# Numbers -----------------------------------------------------------------------------------------------


def number_picture(
    text: str, split: str, rng: np.random.Generator, canvas: bool = False
) -> tuple[np.ndarray, list[tuple]]:
    """A number written digit by digit side by side, as a photo of paper or a drawing page's canvas (white strokes
    on black, no noise): the (H, W, 3) picture and each digit's ink box (left, top, right, bottom), left to right."""
    height = int(rng.integers(50, 110))
    masks = [resized(glyph(char, split, rng), round(height * rng.uniform(0.85, 1.1))) for char in text]
    gaps = [round(height * rng.uniform(0.15, 0.5)) for _ in masks]
    margin = round(height * rng.uniform(0.2, 0.6))
    width = 2 * margin + sum(m.shape[1] for m in masks) + sum(gaps[1:])
    coverage = np.zeros((2 * margin + round(1.2 * height), width), np.float32)
    boxes, left = [], margin
    for mask, gap in zip(masks, [0] + gaps[1:]):
        left += gap
        top = margin + int(rng.integers(0, coverage.shape[0] - 2 * margin - mask.shape[0] + 1))
        coverage[top : top + mask.shape[0], left : left + mask.shape[1]] = np.maximum(
            coverage[top : top + mask.shape[0], left : left + mask.shape[1]], mask
        )
        boxes.append((left, top, left + mask.shape[1], top + mask.shape[0]))
        left += mask.shape[1]
    if canvas:
        return np.repeat(coverage[:, :, None], 3, axis=2), boxes
    return photo(coverage, rng)[0], boxes
