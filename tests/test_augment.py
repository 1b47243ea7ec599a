"""Elastic and affine distortion: shapes, ranges, determinism, scales, and digits that stay the same digit; mirroring
of clothes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from digitnet.augment import bilinear_sample, distort, elastic_displacement, gaussian_smoothing_matrix, mirror
from digitnet.config import TrainConfig

DEFAULTS = TrainConfig(augment="elastic")  # the literature's strengths: alpha 34, sigma 4, 0.2 rad, 15%, 0.3
NO_DISTORTION = DEFAULTS.replace(elastic_alpha=0.0, max_rotation=0.0, max_scale=0.0, max_shear=0.0)
AFFINE_ONLY = DEFAULTS.replace(elastic_alpha=0.0)

# The config is hashable (a frozen dataclass), so it can be a static argument: one compile per config.
distort_jit = jax.jit(distort, static_argnames="config")


@pytest.fixture(scope="module")
def digits(mnist) -> np.ndarray:
    """The first 256 MNIST test images, float32 in [0, 1]."""
    return (mnist.test_images[:256] / 255.0).astype(np.float32)


def vertical_bar(n: int) -> np.ndarray:
    """n copies of a synthetic "1": a bar 18 pixels tall and 2 wide in the middle of the frame."""
    bar = np.zeros((28, 28), np.float32)
    bar[5:23, 13:15] = 1.0
    return np.repeat(bar[None], n, axis=0)


def ink_axes(image: np.ndarray) -> tuple[float, float]:
    """(angle of the ink's principal axis from vertical in degrees, minor / major axis length)."""
    positions = np.mgrid[:28, :28].reshape(2, -1)  # (row, col) of each pixel
    weights = image.reshape(-1) / image.sum()
    centred = positions - positions @ weights[:, None]
    variances, axes = np.linalg.eigh((centred * weights) @ centred.T)  # eigenvalues ascending
    return float(np.degrees(np.arccos(abs(axes[0, 1])))), float(np.sqrt(variances[0] / variances[1]))


@pytest.mark.parametrize("batch", [1, 16])
def test_shape_dtype_and_range_are_kept(digits, batch):
    out = distort_jit(jax.random.key(0), jnp.asarray(digits[:batch]), config=DEFAULTS)
    assert out.shape == (batch, 28, 28) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_range_is_kept_for_saturated_images():
    out = distort_jit(jax.random.key(1), jnp.ones((8, 28, 28), jnp.float32), config=DEFAULTS)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("sigma", [4.0, 0.0])
def test_no_strength_returns_the_images_unchanged(digits, sigma):
    images = jnp.asarray(digits[:32])
    out = distort_jit(jax.random.key(2), images, config=NO_DISTORTION.replace(elastic_sigma=sigma))
    np.testing.assert_allclose(np.asarray(out), digits[:32], atol=1e-6)


def test_same_key_same_output_and_different_keys_differ(digits):
    images = jnp.asarray(digits[:16])
    first, again = (distort_jit(jax.random.key(3), images, config=DEFAULTS) for _ in range(2))
    other = distort_jit(jax.random.key(4), images, config=DEFAULTS)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert float(jnp.abs(first - other).mean()) > 0.03


def test_images_in_one_batch_are_distorted_differently():
    out = np.asarray(distort_jit(jax.random.key(5), jnp.asarray(vertical_bar(2)), config=DEFAULTS))
    assert np.abs(out[0] - out[1]).mean() > 0.01


def test_distortions_are_not_trivially_small(digits):
    out = distort_jit(jax.random.key(6), jnp.asarray(digits), config=DEFAULTS)
    assert float(jnp.abs(out - digits).mean()) > 0.05  # about 0.11 with the default strengths


@pytest.mark.parametrize("strength", ["elastic_alpha", "max_rotation", "max_scale", "max_shear"])
def test_each_strength_alone_moves_the_ink(digits, strength):
    config = NO_DISTORTION.replace(**{strength: getattr(DEFAULTS, strength)})
    out = distort_jit(jax.random.key(7), jnp.asarray(digits[:32]), config=config)
    assert float(jnp.abs(out - digits[:32]).mean()) > 0.02


def test_a_distorted_one_is_still_a_thin_near_vertical_stroke():
    bars = vertical_bar(256)
    out = np.asarray(distort_jit(jax.random.key(8), jnp.asarray(bars), config=DEFAULTS))
    angles, thinness = np.array([ink_axes(image) for image in out]).T
    # Rotation (at most 11.5 degrees) and shear (at most 16.7) tilt a bar by at most 27 degrees; elastic
    # wobble adds a little on top.
    assert np.mean(angles < 30) >= 0.9  # 96% to 100% over 16 seeds
    assert np.mean(angles < 45) >= 0.99  # at most 47 degrees over 16 seeds
    assert thinness.max() < 0.5  # the bar itself: 0.1; at most 0.43 over 16 seeds


def test_ink_mass_is_roughly_kept(digits):
    ink = digits.sum((1, 2))
    ratio = np.asarray(distort_jit(jax.random.key(9), jnp.asarray(digits), config=DEFAULTS)).sum((1, 2)) / ink
    assert abs(ratio.mean() - 1) < 0.1
    # The elastic field compresses and stretches strokes locally, so single digits vary more.
    assert np.mean(np.abs(ratio - 1) < 0.3) >= 0.7  # 76% to 86% over 16 seeds
    affine = np.asarray(distort_jit(jax.random.key(9), jnp.asarray(digits), config=AFFINE_ONLY)).sum((1, 2))
    assert np.all(np.abs(affine / ink - 1) < 0.4)  # area scales by 0.85^2 to 1.15^2; 0.34 at most seen


def test_elastic_displacement_has_the_literature_scale():
    d_rows, d_cols = elastic_displacement(jax.random.key(10), 64, alpha=34.0, sigma=4.0)
    spread = float(jnp.std(jnp.stack([d_rows, d_cols])))
    assert 0.8 < spread < 2.0  # pixels; about 1.3: a visible wobble, not noise and not a shift
    assert float(jnp.abs(d_rows[:, 1:] - d_rows[:, :-1]).mean()) < 0.3 * spread  # smooth from pixel to pixel


@pytest.mark.parametrize("sigma", [0.7, 4.0, 9.0])
def test_smoothing_matrix_matches_scipy_gaussian_filter(sigma):
    field = np.random.default_rng(0).uniform(-1, 1, (28, 28))
    smooth = gaussian_smoothing_matrix(sigma)
    expected = scipy.ndimage.gaussian_filter(field, sigma, mode="constant")
    np.testing.assert_allclose(smooth @ field @ smooth.T, expected, atol=1e-6)


def test_bilinear_sample_matches_map_coordinates_inside_and_outside_the_frame():
    rng = np.random.default_rng(1)
    images = rng.random((4, 28, 28)).astype(np.float32)
    rows, cols = rng.uniform(-4, 32, (2, 4, 28, 28)).astype(np.float32)
    expected = jax.vmap(
        lambda image, r, c: jax.scipy.ndimage.map_coordinates(image, [r, c], order=1, mode="constant", cval=0.0)
    )(images, rows, cols)
    out = bilinear_sample(jnp.asarray(images), rows, cols)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-5)


def test_distort_runs_inside_a_jitted_scan_with_a_fresh_distortion_per_step():
    images = jnp.asarray(vertical_bar(4))

    @jax.jit
    def epoch(key):
        def step(carry, batch_key):
            return carry, distort(batch_key, images, DEFAULTS)

        return jax.lax.scan(step, 0, jax.random.split(key, 3))[1]

    out = np.asarray(epoch(jax.random.key(11)))
    assert out.shape == (3, 4, 28, 28)
    assert np.abs(out[0] - out[1]).mean() > 0.01


def test_mirror_flips_about_half_the_images_left_to_right_and_keeps_the_rest(fashion):
    images = jnp.asarray(fashion.train_images[:1000] / 255.0, jnp.float32)
    mirrored = np.asarray(mirror(jax.random.key(0), images))
    flipped = np.array([np.array_equal(m, i[:, ::-1]) for m, i in zip(mirrored, np.asarray(images))])
    kept = np.array([np.array_equal(m, i) for m, i in zip(mirrored, np.asarray(images))])
    assert (flipped | kept).all() and 450 < flipped.sum() < 550
    assert mirrored.dtype == np.float32 and mirrored.shape == images.shape
    np.testing.assert_array_equal(np.asarray(mirror(jax.random.key(0), images)), mirrored)  # same key, same choices
