import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_emdenoise import lattice
from napari_emdenoise.lattice import estimate_period
from napari_emdenoise.scenes import make_scene


def _lattice(a, *, width, angle=0.0, modulation=None, amplitude=0.0, hexagonal=False, size=512, dose=20, seed=0):
    """Poisson image of Gaussian columns on a square or hexagonal lattice of constant ``a`` px, the column brightness
    optionally modulated along one lattice direction with a period of ``modulation`` px (a superstructure)."""
    rng = np.random.default_rng(seed)
    n = int(size * 1.5 / a)
    i, j = (m.ravel() for m in np.meshgrid(np.arange(-n, n), np.arange(-n, n)))
    pu, pv = (a * (i + 0.5 * j), a * j * np.sqrt(3) / 2) if hexagonal else (a * i, a * j)
    th = np.radians(angle)
    x, y = np.cos(th) * pu - np.sin(th) * pv + size / 2, np.sin(th) * pu + np.cos(th) * pv + size / 2
    w = 1 + amplitude * np.cos(2 * np.pi * pu / modulation) if modulation else np.ones(len(pu))
    ok = (x > -5) & (x < size + 5) & (y > -5) & (y < size + 5)
    comb = np.zeros((size + 20, size + 20))
    np.add.at(comb, (np.rint(y[ok]).astype(int) + 10, np.rint(x[ok]).astype(int) + 10), w[ok])
    img = ndimage.gaussian_filter(comb, width * a)[10:-10, 10:-10]
    return rng.poisson(img / img.mean() * dose).astype(np.float32)


@pytest.mark.parametrize("a, modulation, amplitude, angle", [(4, 59, 0.6, 13), (5, 40, 0.8, 0), (6, 48, 0.5, 31)])
def test_a_superstructure_does_not_hide_the_column_spacing(a, modulation, amplitude, angle):
    # broad columns a few px apart: the superstructure's reflection is the strongest in the spectrum
    est = estimate_period(_lattice(a, width=0.25, angle=angle, modulation=modulation, amplitude=amplitude))
    assert est.period == pytest.approx(a, rel=0.02)


@pytest.mark.parametrize("a, width, angle, hexagonal, expected", [
    (4, 0.25, 0, False, 4), (12, 0.11, 30, False, 12), (8, 0.12, 0, True, 8 * np.sqrt(3) / 2), (10, 0.1, 17, True, 10 * np.sqrt(3) / 2),
])
def test_plain_square_and_hexagonal_lattices_at_any_angle(a, width, angle, hexagonal, expected):
    assert estimate_period(_lattice(a, width=width, angle=angle, hexagonal=hexagonal)).period == pytest.approx(expected, rel=0.02)


def test_two_species_lattices_give_their_column_spacing_and_non_crystals_none():
    # SrTiO3 [001] at a = 16 px: Sr and TiO columns alternate along the diagonals, a / sqrt(2) apart as projected planes
    srtio3 = make_scene(kind="vacancies", period=16, dose=20, size=384, seed=3).noisy
    assert estimate_period(srtio3).period == pytest.approx(16 / np.sqrt(2), rel=0.03)
    # 2H-MoS2: Mo and S2 on a honeycomb; its (1,0) planes (a sqrt(3)/2) or, where the S2 columns make the (1,1)
    # reflection the stronger, its (1,1) planes (a / 2): never the spacing of a superstructure
    for seed, width in ((3, 0.11), (4, 0.14)):
        mos2 = make_scene(kind="dopants", period=12, dose=20, size=384, width=width, seed=seed).noisy
        assert min(abs(estimate_period(mos2).period / p - 1) for p in (12 * np.sqrt(3) / 2, 6.0)) < 0.03
    assert not estimate_period(make_scene(kind="amorphous", period=12, dose=20, size=384, seed=3).noisy).found


def test_a_gradient_is_not_a_lattice_and_does_not_hide_one():
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float64)
    for ramp in (xx, 0.3 * xx + yy, xx + np.random.default_rng(0).normal(0, 1, xx.shape)):
        assert not estimate_period(ramp).found
    srtio3 = make_scene(kind="vacancies", period=12, dose=2, size=384, seed=1).noisy.astype(np.float64)
    plain = estimate_period(srtio3).period
    assert estimate_period(srtio3 + 5.0 * np.mgrid[0:384, 0:384][1]).period == pytest.approx(plain, rel=1e-6)


def test_a_stack_and_a_tensor_give_each_plane_s_own_estimate():
    # the denoiser estimates a stack's planes together on its device: the same numbers as one plane at a time
    from napari_emdenoise.lattice import estimate_periods

    planes = [make_scene(kind=k, period=p, dose=5, size=256, seed=2).noisy.astype(np.float32) for k, p in
              (("vacancies", 10), ("amorphous", 12), ("columns", 16))]
    planes[2][40:60, 100:130] = np.nan  # filled with the plane's median, as one plane alone
    one = [estimate_period(p) for p in planes]
    assert one[0].found and not one[1].found and one[2].found
    for together in (estimate_periods(np.stack(planes)), estimate_periods(torch.from_numpy(np.stack(planes)))):
        for a, b in zip(together, one):
            assert (a.period is None) == (b.period is None)
            assert a.period is None or a.period == pytest.approx(b.period, rel=1e-9)
            assert a.contrast == pytest.approx(b.contrast, rel=1e-6)
    # a GPU analyses planes together: the same numbers from one batch of three (run here on the CPU)
    crops = torch.from_numpy(np.stack(planes).astype(np.float64))
    batch = lattice._estimate_chunk(crops, np.stack(planes), lattice.MIN_PERIOD, lattice.MAX_PERIOD)
    for a, b in zip(batch, one):
        assert (a.period is None) == (b.period is None) and a.contrast == pytest.approx(b.contrast, rel=1e-6)
        assert a.period is None or a.period == pytest.approx(b.period, rel=1e-9)
    with pytest.raises(ValueError, match=r"\(N, H, W\) stack"):
        estimate_periods(planes[0])
    with pytest.raises(ValueError, match="one shape"):
        estimate_periods([planes[0], planes[0][:100]])


@pytest.mark.parametrize("shape, to", [((100, 120), (60, 70)), ((100, 120), (250, 130)), ((37, 53), (80, 20)),
                                       ((9, 12), (30, 5)), ((20, 20), (8, 8))])
def test_the_gpu_resampling_gives_scipy_s_figures(shape, to):
    # a GPU resamples with torch (run here on a CPU tensor), the CPU with scipy: the same cubic spline, anti-aliased
    from napari_emdenoise.lattice import _resample_torch, resample

    img = np.random.default_rng(1).poisson(5.0, shape).astype(np.float32)
    ref = resample(img, to)
    got = _resample_torch(torch.from_numpy(img), to).numpy()
    assert got.shape == ref.shape == to and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-6 * (ref.max() - ref.min())
    assert np.array_equal(resample(torch.from_numpy(img), to).numpy(), ref)  # a CPU tensor goes through scipy


def test_extreme_magnitudes_grad_tensors_and_half_floats_are_handled():
    from napari_emdenoise.lattice import resample

    img = _lattice(8, width=0.12)
    p = estimate_period(img).period
    for variant in (img.astype(np.float64) * 1e200, img.astype(np.float64) * 1e-300,
                    torch.from_numpy(img).requires_grad_()):
        assert estimate_period(variant).period == pytest.approx(p, rel=1e-9)
    half = resample(img.astype(np.float16), (200, 200))
    assert half.dtype == np.float32 and np.abs(half - resample(img, (200, 200))).max() < 1e-2 * np.ptp(img)
    assert np.array_equal(resample(img.astype(np.uint8), (100, 100)), resample(img.astype(np.uint8).astype(np.float32), (100, 100)))
    with pytest.raises(ValueError, match="at least 1 px"):
        resample(img, (0, 10))


def test_a_saturated_patch_does_not_hide_the_lattice():
    """One 50x50 block at a 16-bit detector's ceiling (1.7 % of a 384² frame) made it 'no clear lattice': the frame was
    not resampled and came out 5 dB worse."""
    from napari_emdenoise.simulate import simulate

    img = simulate(size=384, period=28, dose=20, seed=2).noisy
    img = np.clip(img * (30000 / img.max()), 0, 65535).astype(np.uint16)
    img[100:150, 200:250] = 65535
    est = estimate_period(img)
    assert est.found and est.period == pytest.approx(28, rel=0.03)
