import numpy as np
import pytest

from napari_emdenoise.masks import (
    PRESETS,
    MaskError,
    MaskParams,
    apply_mask,
    box_smooth,
    chebyshev_mean,
    chebyshev_min,
    dent_mask,
    gaussian_blur,
    iou,
    mask_region,
    normalize_255,
    subtract_mean,
    threshold_below,
)
from napari_emdenoise.simulate import simulate


def test_subtract_mean_by_hand():
    img = np.array([[1.0, 2.0], [3.0, 6.0]])  # mean 3
    np.testing.assert_array_equal(subtract_mean(img), [[2.0, 1.0], [0.0, -3.0]])


def test_box_smooth_by_hand():
    img = np.zeros((5, 5))
    img[2, 2] = 9.0
    out = box_smooth(img, 3)
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = 1.0
    np.testing.assert_allclose(out, expected)
    # at the border the image is mirrored: a 1-px-wide edge column counts twice
    edge = np.zeros((3, 3))
    edge[:, 0] = 3.0
    np.testing.assert_allclose(box_smooth(edge, 3)[1], [2.0, 1.0, 0.0])


def test_normalize_255_by_hand():
    np.testing.assert_allclose(normalize_255(np.array([[-1.0, 0.0], [1.0, 3.0]])), [[0.0, 63.75], [127.5, 255.0]])
    ramp = np.arange(1001.0)  # median 500 -> 0, 99.5th percentile 995 -> 255, clipped
    out = normalize_255(ramp, "median")
    assert out[500] == 0 and out[0] == 0 and out[995] == pytest.approx(255) and out[1000] == 255
    assert out[750] == pytest.approx(255 * 250 / 495)
    with pytest.raises(MaskError, match="flat"):
        normalize_255(np.full((3, 3), 2.0))


def test_threshold_by_hand():
    np.testing.assert_array_equal(threshold_below(np.array([[10.0, 127.9], [128.0, 200.0]]), 128), [[0, 0], [128, 200]])


def test_gaussian_blur_keeps_the_sum_and_spreads():
    img = np.zeros((21, 21))
    img[10, 10] = 1.0
    out = gaussian_blur(img, 2.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-6) and out[10, 10] < 0.1
    assert out[10, 12] == pytest.approx(out[12, 10]) and out[10, 12] < out[10, 11]


def _brute(img, radius, reduce):
    h, w = img.shape
    out = np.empty_like(img)
    for r in range(h):
        for c in range(w):
            vals = [img[min(max(rr, 0), h - 1), min(max(cc, 0), w - 1)]
                    for rr in range(r - radius, r + radius + 1) for cc in range(c - radius, c + radius + 1)]
            out[r, c] = reduce(vals)
    return out


@pytest.mark.parametrize("radius", [1, 3])
def test_min_variant_equals_brute_force(radius):
    img = np.random.default_rng(radius).random((13, 17))
    np.testing.assert_array_equal(chebyshev_min(img, radius), _brute(img, radius, min))


@pytest.mark.parametrize("radius", [2, 5])
def test_mean_variant_equals_brute_force(radius):
    img = np.random.default_rng(radius).random((14, 12))
    np.testing.assert_allclose(chebyshev_mean(img, radius), _brute(img, radius, np.mean), atol=1e-12)


def test_mask_is_large_where_the_image_is_darker():
    img = np.full((64, 64), 10.0)
    img[20:40, 20:40] = 4.0  # a dark square
    mask = dent_mask(img, MaskParams(window=3, threshold=128, sigma=0))
    assert mask.dtype == np.float32 and mask.min() == 0 and mask.max() == 255
    assert mask[30, 30] == 255 and mask[5, 5] == 0


@pytest.mark.parametrize(
    "lattice, period, depth, dose",
    [("square", 5, 0.2, 2), ("square", 12, 0.4, 6), ("hexagonal", 8, 0.3, 2), ("square", 24, 0.2, 10), ("hexagonal", 30, 0.4, 4)],
)
def test_default_mask_finds_the_true_dent(lattice, period, depth, dose):
    sim = simulate(size=(512, 512), lattice=lattice, period=period, dose=dose, dents=1, dent_depth=depth,
                   dent_radius=100, angle=7, seed=period)
    mask = dent_mask(sim.noisy)
    assert iou(mask_region(mask), sim.dent > 0.5) >= 0.7
    assert (mask[sim.dent < 0.001] == 0).mean() > 0.85  # far from the dent the specimen is untouched


def test_presets_and_variants_run_on_any_dtype():
    sim = simulate(size=128, period=10, dents=1, seed=1)
    for dtype in ("uint8", "uint16", "float64"):
        img = np.clip(sim.noisy * 10, 0, 250).astype(dtype)
        for name, params in PRESETS.items():
            m = dent_mask(img, params)
            assert m.shape == img.shape and 0 <= m.min() and m.max() <= 255, name


def test_nan_pixels_are_tolerated_and_flat_or_empty_images_explained():
    img = simulate(size=96, period=10, dents=1, seed=2).noisy
    img[5, 5] = np.nan
    assert np.isfinite(dent_mask(img)).all()
    with pytest.raises(MaskError, match="flat"):
        dent_mask(np.ones((64, 64)))
    with pytest.raises(MaskError, match="no finite"):
        dent_mask(np.full((8, 8), np.nan))
    with pytest.raises(MaskError, match="2D"):
        dent_mask(np.zeros((2, 8, 8)))


def test_apply_mask_thins_by_the_mask():
    target = np.full((4, 4), 100.0, dtype=np.float32)
    mask = np.zeros((4, 4), dtype=np.float32)
    mask[1, 1] = 255
    mask[2, 2] = 127.5
    out = apply_mask(target, mask, depth=0.4)
    assert out[1, 1] == pytest.approx(60.0) and out[2, 2] == pytest.approx(80.0) and out[0, 0] == 100.0


@pytest.mark.parametrize("params, words", [
    (dict(sigma=-1.0), "sigma must be 0 (no blur) or more"),
    (dict(variant="min", radius=0), "min variant's radius must be at least 1"),
    (dict(window=0), "window must be at least 1"),
    (dict(threshold=300.0), "threshold must be within 0..255"),
])
def test_parameters_out_of_range_are_refused_with_what_is_allowed(params, words):
    from dataclasses import replace

    from napari_emdenoise.masks import resolve_params

    img = simulate(size=64, period=8, dose=5, seed=0).noisy
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        resolve_params(img, replace(MaskParams(), **params))
    assert resolve_params(img, replace(MaskParams(), sigma=0.0)).sigma == 0.0  # 0: no blur, allowed
