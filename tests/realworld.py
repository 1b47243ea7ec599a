"""Digits that are not MNIST's, as users send them: for measuring digitnet's preprocessing.

Two sources, both made here, deterministic for a seed, with no download:

fonts    digits typeset in handwriting-style fonts (Debian packages fonts-dkg-handwriting,
         fonts-comic-neue, fonts-breip, fonts-dancingscript) and photographed, as it were: tinted paper
         or a dark board, dark, coloured or light ink, random size, position and tilt, uneven lighting,
         blur, sensor noise, 200x200 to 1000x800 pixels, saved as PNG or JPEG. Fonts that are not
         installed are skipped; with none of them, DejaVu (fonts-dejavu-core) stands in, and without
         DejaVu, Pillow's built-in font.
sklearn  scikit-learn's bundled 8x8 handwritten digits (UCI optdigits, 1,797 images), enlarged and
         printed dark on light paper, then scanned: margins, noise, blur, PNG or JPEG.

    from realworld import generate
    sets = generate(tmp_path, n_fonts=300, n_sklearn=200, seed=0)   # {"fonts": [(path, label)], ...}
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Handwriting-style font families, each a list of its files; a family is drawn uniformly, then a file.
# fonts-femkeklaver is left out: its digits are sketchy outlines, hollow inside, not pen strokes.
FONT_FAMILIES = {
    "dkg": [f"/usr/share/fonts/truetype/fifthhorseman/{n}.ttf" for n in ("dkg", "dkgBd", "dkgIt", "dkgBI")],
    "comic-neue": [
        f"/usr/share/fonts/opentype/comic-neue/ComicNeue-{n}.otf"
        for n in ("Regular", "Bold", "Italic", "BoldItalic", "Light", "LightItalic")
    ],
    "breip": ["/usr/share/fonts/truetype/breip/Breip.ttf"],
    "dancing-script": [f"/usr/share/fonts/opentype/dancingscript/DancingScript-{n}.otf" for n in ("Regular", "Bold")],
}
FALLBACK_FAMILIES = {
    "dejavu": [f"/usr/share/fonts/truetype/dejavu/DejaVuSans{n}.ttf" for n in ("", "-Bold", "-Oblique")],
}
CANVAS_SIZES = ((200, 200), (320, 240), (400, 400), (480, 640), (640, 480), (800, 600), (1000, 800))
RENDER_SIZE = 200  # font size, points, at which glyphs are drawn before being scaled to the canvas


def available_fonts() -> dict[str, list[Path]]:
    """Installed handwriting font files by family, else DejaVu's, else none (Pillow's own font is used)."""
    for families in (FONT_FAMILIES, FALLBACK_FAMILIES):
        found = {name: [Path(f) for f in files if Path(f).is_file()] for name, files in families.items()}
        found = {name: files for name, files in found.items() if files}
        if found:
            return found
    return {}


def generate(
    out_dir: Path, n_fonts: int = 500, n_sklearn: int = 300, seed: int = 0
) -> dict[str, list[tuple[Path, int]]]:
    """Write both sources into out_dir; {"fonts": [(path, label), ...], "sklearn": [...]}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = {"fonts": font_photos(n_fonts, rng), "sklearn": sklearn_scans(n_sklearn, rng)}
    written: dict[str, list[tuple[Path, int]]] = {}
    for source, pictures in sources.items():
        # Each picture is written as soon as it is made: a thousand 1000x800 photos do not fit in memory.
        written[source] = [
            _save(picture, out_dir / f"{source}_{i:04d}_{label}", rng) for i, (picture, label) in enumerate(pictures)
        ]
    return written


def font_photos(n: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, int]]:
    """n photos of typeset digits, (H, W, 3) float arrays in [0, 1], with their labels, one at a time."""
    families = available_fonts()
    names = sorted(families)
    for i in range(n):
        label = i % 10  # balanced: each digit once in every ten
        if names:
            files = families[names[rng.integers(len(names))]]
            font = ImageFont.truetype(str(files[rng.integers(len(files))]), RENDER_SIZE)
        else:
            font = ImageFont.load_default(RENDER_SIZE)
        width, height = CANVAS_SIZES[rng.integers(len(CANVAS_SIZES))]
        mask = _glyph_mask(str(label), font, (width, height), rng)
        paper, ink = (colour.astype(np.float32) for colour in _colours(rng))
        photo = paper + (ink - paper) * mask[:, :, None]
        yield camera(photo, rng), label


def sklearn_scans(n: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, int]]:
    """n scans of scikit-learn's 8x8 digits printed dark on light paper, (H, W, 3) floats, with labels."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    for index in rng.choice(len(digits.images), size=n, replace=n > len(digits.images)):
        side = int(rng.integers(40, 240))
        glyph = Image.fromarray((digits.images[index] / 16.0).astype(np.float32), "F")
        darkness = np.clip(np.asarray(glyph.resize((side, side), Image.Resampling.BICUBIC)), 0.0, 1.0)
        margin = [int(side * rng.uniform(0.1, 0.6)) for _ in range(4)]
        darkness = np.pad(darkness, ((margin[0], margin[1]), (margin[2], margin[3])))
        paper = rng.uniform(0.8, 0.98)
        ink = rng.uniform(0.05, 0.35)
        scan = paper - (paper - ink) * darkness
        scan = scan[:, :, None] * (1.0 - rng.uniform(0.0, 0.06, size=3))  # a slight tint from the scanner
        noisy = scan + rng.normal(0.0, rng.uniform(0.005, 0.03), size=scan.shape)
        yield blur(np.clip(noisy, 0.0, 1.0), rng.uniform(0.0, 1.0)), int(digits.target[index])


def _glyph_mask(text: str, font: ImageFont.FreeTypeFont, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Ink coverage (H, W) in [0, 1] of one glyph at a random height, pen width, place and tilt."""
    width, height = size
    pen = int(rng.choice([0, 0, 2, 4, 8]))  # extra outline at RENDER_SIZE: from a fine to a broad pen
    left, top, right, bottom = font.getbbox(text, stroke_width=pen)
    glyph = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(glyph).text((4 - left, 4 - top), text, font=font, fill=255, stroke_width=pen, stroke_fill=255)
    glyph = glyph.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True)
    scale = rng.uniform(0.25, 0.8) * height / glyph.height
    glyph = glyph.resize(
        (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.Resampling.LANCZOS
    )
    glyph = glyph.crop((0, 0, min(glyph.width, width - 2), min(glyph.height, height - 2)))
    mask = Image.new("L", (width, height), 0)
    mask.paste(glyph, (int(rng.integers(0, width - glyph.width)), int(rng.integers(0, height - glyph.height))))
    return np.asarray(mask, np.float32) / 255.0


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paper and ink colours: mostly dark pen on tinted paper, some coloured ink, some chalk on a board."""
    style = rng.random()
    if style < 0.2:  # light on dark: chalk on a green or grey board, white pen on dark card
        board = rng.uniform(0.05, 0.3) * np.array([rng.uniform(0.6, 1.0), 1.0, rng.uniform(0.6, 1.0)])
        return board, rng.uniform(0.75, 1.0, size=3)
    paper = rng.uniform(0.8, 0.98) * (1.0 - rng.uniform(0.0, 0.12, size=3))  # white, cream, grey or blue-ish paper
    if style < 0.45:  # coloured ink: blue, red or green
        ink = np.array([[0.1, 0.2, 0.65], [0.7, 0.1, 0.12], [0.1, 0.5, 0.2]])[rng.integers(3)]
        return paper, np.clip(ink + rng.uniform(-0.08, 0.08, size=3), 0.0, 1.0)
    return paper, np.full(3, rng.uniform(0.02, 0.35))


def camera(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven lighting (a gradient and a vignette), focus blur and sensor noise."""
    height, width, _ = photo.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    rows, cols = rows / height - 0.5, cols / width - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + np.float32(rng.uniform(0.0, 0.5)) * (
        np.float32(np.cos(angle)) * cols + np.float32(np.sin(angle)) * rows
    )
    light -= np.float32(rng.uniform(0.0, 0.6)) * (rows**2 + cols**2)
    lit = photo * light[:, :, None]
    noisy = lit + np.float32(rng.uniform(0.005, 0.04)) * rng.standard_normal(lit.shape, dtype=np.float32)
    return blur(np.clip(noisy, 0.0, 1.0), rng.uniform(0.0, 1.5) * max(height, width) / 500)


def blur(picture: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of an (H, W, 3) float picture, by Pillow on its 8-bit form."""
    image = Image.fromarray(np.round(picture * 255).astype(np.uint8), "RGB")
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0


def _save(picture: np.ndarray, stem: Path, rng: np.random.Generator) -> tuple[Path, int]:
    """Write an (H, W, 3) float picture as PNG or as JPEG of random quality; (path, label) from the stem."""
    path = stem.with_suffix(".png" if rng.random() < 0.5 else ".jpg")
    save_picture(picture, path, rng)
    return path, int(stem.name.rsplit("_", 1)[1])


def save_picture(picture: np.ndarray, path: Path, rng: np.random.Generator) -> None:
    """Write an (H, W, 3) float picture in [0, 1] as PNG, or as JPEG of random quality, as the suffix says."""
    image = Image.fromarray(np.round(np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8), "RGB")
    if path.suffix == ".png":
        image.save(path, compress_level=1)
    else:
        image.save(path, quality=int(rng.integers(50, 95)))
