"""Elastic and affine distortion of digit images, and mirroring of clothes, on the device, inside the compiled
training epoch.

Simard, Steinkraus and Platt (2003), "Best practices for convolutional neural networks applied to visual
document analysis", section 2: each image gets a random displacement field (uniform noise in [-1, 1] per
pixel for dx and dy, smoothed by a Gaussian of standard deviation sigma, scaled by alpha) and a random
affine map (rotation, scale, shear about the image centre). Both are composed into one sampling grid and
the image is read back with bilinear interpolation, zero outside the frame (MNIST's background is 0).

The smoothed field is scaled by alpha and not normalised, as in the widely used form of the recipe
(scipy.ndimage.gaussian_filter with mode="constant", then times alpha). With alpha = 34 and sigma = 4
that gives displacements of about 1.3 pixels standard deviation and at most about 5: a visible but
moderate wobble of the strokes. Locally the field stretches and compresses strokes, so a single digit's
ink can change by a third or more; over many digits it is kept.

Every strength is read from the config at trace time, so `distort` can be called under `jax.jit` or
inside a `jax.lax.scan` body with the config closed over. elastic_alpha = 0, or all three affine
strengths 0, leaves that part out of the compiled graph.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from digitnet.config import TrainConfig

IMAGE_SIZE = 28  # MNIST images are 28 x 28 pixels
GAUSSIAN_TRUNCATE = 4.0  # kernel radius in standard deviations, as scipy.ndimage.gaussian_filter
NOISE_LEVELS = 256  # the displacement noise is drawn as 8-bit integers: 4 per random word, see uniform_noise
_CENTRE = (IMAGE_SIZE - 1) / 2  # 13.5, the middle of the pixel grid: the pivot of rotation, scale and shear


def distort(key: jax.Array, images: jax.Array, config: TrainConfig) -> jax.Array:
    """Each image of `images` (B, 28, 28), values in [0, 1], distorted afresh; same shape, dtype and range.

    The strengths come from `config` (elastic_alpha, elastic_sigma, max_rotation, max_scale, max_shear);
    `config.augment` is not consulted, so callers decide whether to distort. The same key gives the
    same output. With every strength 0 the images come back unchanged.
    """
    batch = images.shape[0]
    field_key, affine_key = jax.random.split(key)
    rows, cols = affine_grid(affine_key, batch, config)
    if config.elastic_alpha > 0:
        d_rows, d_cols = elastic_displacement(field_key, batch, config.elastic_alpha, config.elastic_sigma)
        rows, cols = rows + d_rows, cols + d_cols
    return jnp.clip(bilinear_sample(images, rows, cols), 0.0, 1.0).astype(images.dtype)


def mirror(key: jax.Array, images: jax.Array) -> jax.Array:
    """Each image of `images` (B, 28, 28) flipped left to right or kept, with even odds; same shape and dtype.

    For clothing, not digits: a shirt or a shoe seen in a mirror is still a shirt or a shoe, a mirrored 3 is
    no digit. The same key gives the same choices.
    """
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


def affine_grid(key: jax.Array, batch: int, config: TrainConfig) -> tuple[jax.Array, jax.Array]:
    """Where each output pixel reads the input under a random affine map per image: rows, cols (B, 28, 28).

    The map sends output offsets from the centre to input offsets by rotation(angle) @ shear(k) / scale,
    so a scale above 1 enlarges the digit and a positive shear slants it like italic writing.
    """
    out_rows, out_cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(np.float32) - _CENTRE
    if config.max_rotation == config.max_scale == config.max_shear == 0:
        shape = (batch, IMAGE_SIZE, IMAGE_SIZE)
        return jnp.broadcast_to(out_rows + _CENTRE, shape), jnp.broadcast_to(out_cols + _CENTRE, shape)
    u = jax.random.uniform(key, (3, batch, 1, 1), minval=-1.0, maxval=1.0)
    angle, scale, shear = u[0] * config.max_rotation, 1.0 + u[1] * config.max_scale, u[2] * config.max_shear
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    # In (x, y) = (col, row): rotation [[cos, -sin], [sin, cos]] times shear [[1, k], [0, 1]].
    cols = _CENTRE + cos * out_cols + (cos * shear - sin) * out_rows
    rows = _CENTRE + sin * out_cols + (sin * shear + cos) * out_rows
    return rows, cols


def elastic_displacement(key: jax.Array, batch: int, alpha: float, sigma: float) -> tuple[jax.Array, jax.Array]:
    """A smooth random displacement per image, in pixels: d_rows, d_cols (B, 28, 28).

    Uniform noise in [-1, 1] per pixel, smoothed by a Gaussian of `sigma` pixels (two 1-D passes, each a
    matmul with a 28 x 28 smoothing matrix: far cheaper than a convolution at this size), times `alpha`.
    """
    smooth = jnp.asarray(gaussian_smoothing_matrix(sigma))
    noise = uniform_noise(key, (batch, 2, IMAGE_SIZE, IMAGE_SIZE))
    # Along rows, then along columns; XLA compiles these two matmuls to faster code than one 3-way einsum.
    field = alpha * (smooth @ (noise @ smooth.T))
    return field[:, 0], field[:, 1]


def gaussian_smoothing_matrix(sigma: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """The (size, size) matrix G such that G @ v is v smoothed by a Gaussian of `sigma` samples.

    Matches scipy.ndimage.gaussian_filter1d(v, sigma, mode="constant"): a normalised kernel cut at
    GAUSSIAN_TRUNCATE sigmas, zeros beyond the ends. sigma = 0 gives the identity (no smoothing).
    """
    if sigma == 0:
        return np.eye(size, dtype=np.float32)
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    offsets = np.arange(size)[None, :] - np.arange(size)[:, None]  # column index minus row index
    return np.where(np.abs(offsets) <= radius, kernel[np.clip(offsets + radius, 0, 2 * radius)], 0.0).astype(np.float32)


def bilinear_sample(images: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """images (B, H, W) read at real-valued positions rows, cols (B, H, W) by bilinear interpolation, 0 outside.

    Gathers the 4 neighbours by flat index into a zero-padded copy: on CPU this is faster than
    jax.scipy.ndimage.map_coordinates under vmap (bench/bench_augment.py compares them).
    """
    batch, height, width = images.shape
    # One row and column of zeros before the image and two after; clipping the positions to [-1, size]
    # then puts every position outside the frame on zeros, with the same result as reading zeros beyond.
    padded = jnp.pad(images, ((0, 0), (1, 2), (1, 2))).reshape(batch, -1)
    stride = width + 3
    rows = jnp.clip(rows, -1.0, height) + 1.0
    cols = jnp.clip(cols, -1.0, width) + 1.0
    row0, col0 = jnp.floor(rows), jnp.floor(cols)
    frac_r, frac_c = (rows - row0).reshape(batch, -1), (cols - col0).reshape(batch, -1)
    corner = (row0.astype(jnp.int32) * stride + col0.astype(jnp.int32)).reshape(batch, -1)

    def at(offset: int) -> jax.Array:
        return jnp.take_along_axis(padded, corner + offset, axis=1)

    top = at(0) + frac_c * (at(1) - at(0))
    bottom = at(stride) + frac_c * (at(stride + 1) - at(stride))
    return (top + frac_r * (bottom - top)).reshape(batch, height, width)


def uniform_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform noise on NOISE_LEVELS evenly spaced values in (-1, 1), symmetric about 0.

    Drawn as 8-bit integers, four per 32-bit random word: random bits are dear on CPU, and after
    Gaussian smoothing over hundreds of pixels 256 levels are as good as a continuous uniform. The
    bytes are split off by shifts into four planes, which XLA compiles to a few vector operations;
    a bitcast to uint8 costs several times more inside a scanned training epoch.
    """
    size = math.prod(shape)
    words = jax.random.bits(key, (-(-size // 4),), jnp.uint32)
    levels = jnp.concatenate([(words >> (8 * byte)) & 0xFF for byte in range(4)])[:size].reshape(shape)
    return (levels.astype(jnp.float32) + 0.5) * (2.0 / NOISE_LEVELS) - 1.0
