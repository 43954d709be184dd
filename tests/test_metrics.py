import numpy as np
import pytest
from scipy import ndimage

from napari_emdenoise.metrics import (
    align,
    dent_contrast,
    find_columns,
    match_columns,
    psnr,
    score,
)
from napari_emdenoise.simulate import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(size=(256, 288), period=12, dose=6, dents=1, dent_depth=0.4, dent_radius=70, seed=8)


def test_psnr_ignores_scale_and_offset_and_is_known_for_known_noise():
    rng = np.random.default_rng(0)
    truth = rng.random((64, 64))  # span close to 1
    noisy = truth + rng.normal(0, 0.01, truth.shape)
    expected = 10 * np.log10((truth.max() - truth.min()) ** 2 / 0.01**2)
    assert psnr(noisy, truth) == pytest.approx(expected, abs=0.2)
    assert psnr(3 * noisy - 7, truth) == pytest.approx(psnr(noisy, truth), abs=1e-6)
    np.testing.assert_allclose(align(3 * truth - 7, truth), truth, atol=1e-9)


def test_columns_of_the_truth_are_the_simulated_positions(sim):
    found = find_columns(sim.clean, 12)
    f1, rms = match_columns(found, sim.positions, 0.3 * 12)
    assert f1 > 0.97 and rms < 0.8


def test_matching_counts_misses_and_extras():
    true = np.array([[0, 0], [0, 10], [10, 0], [10, 10]], float)
    found = np.array([[0.5, 0], [0, 10.2], [30, 30]], float)  # two found, one spurious, two missed
    f1, rms = match_columns(found, true, 3.0)
    assert f1 == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert rms == pytest.approx(np.sqrt((0.25 + 0.04) / 2))


def test_scores_of_the_truth_noise_and_an_erased_dent(sim):
    perfect = score(sim.clean, sim.clean, sim.dent)
    assert perfect.f1 == 1.0 and perfect.rms_px == 0.0 and perfect.dent_error == pytest.approx(0, abs=1e-9)
    assert perfect.ssim == pytest.approx(1.0)
    # identical images: infinite PSNR, said in words (the least-squares match's rounding read 309.76 dB in Scores)
    assert perfect.psnr == float("inf") and perfect.text().startswith("PSNR infinite (identical images)")
    tiny = sim.clean + 1e-6 * np.ptp(sim.clean) * np.random.default_rng(1).standard_normal(sim.clean.shape)
    assert psnr(tiny, sim.clean) == pytest.approx(120, abs=0.5)  # a real difference of 1e-6 of the range still counts
    noise = score(np.random.default_rng(0).random(sim.clean.shape), sim.clean, period=12)
    assert noise.f1 < 0.5 and ("no column matched" in noise.text()) == np.isnan(noise.rms_px)
    noisy = score(sim.noisy, sim.clean, sim.dent)
    assert noisy.psnr < 30 and noisy.ssim < 0.95
    flat = simulate(size=(256, 288), period=12, dose=6, dents=0, seed=8).clean  # the same lattice, no dent
    erased = score(flat, sim.clean, sim.dent)
    assert erased.dent_error == pytest.approx(1.0, abs=0.1)
    blurred = score(ndimage.gaussian_filter(sim.clean, 6), sim.clean, sim.dent)
    assert blurred.f1 < 0.9 and blurred.ssim < 0.5  # columns smeared together are lost


def test_dent_contrast_is_the_relative_depth(sim):
    c = dent_contrast(sim.clean, sim.dent, 12)
    assert c == pytest.approx(1 / 0.6 - 1, rel=0.1)  # depth 0.4: outside / inside = 1 / 0.6
