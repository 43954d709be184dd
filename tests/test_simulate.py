import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max

from napari_emdenoise.simulate import SimParams, simulate


def _peaks(img, period):
    return peak_local_max(img, min_distance=max(2, int(period / 3)), exclude_border=2, threshold_rel=0.05)


@pytest.mark.parametrize(
    "kw",
    [
        dict(lattice="square", period=16),
        dict(lattice="hexagonal", period=10, angle=17),
        dict(lattice="rectangular", period=12, angle=-30),
        dict(period=20, drift=(6.0, -9.0)),
        dict(period=18, row_offset=0.8),
        dict(period=24, basis=((0, 0, 42), (0.5, 0.5, 20)), dents=2),
    ],
)
def test_truth_positions_are_the_clean_image_maxima(kw):
    sim = simulate(size=(192, 224), seed=3, **kw)
    peaks = _peaks(sim.clean, kw["period"])
    assert len(peaks) > 20
    # every maximum of the clean image is a true column (within pixel rounding)
    d, _ = cKDTree(sim.positions).query(peaks)
    assert d.max() < 0.8
    # every true column away from the border shows up as a maximum
    h, w = sim.clean.shape
    inner = sim.positions[(sim.positions[:, 0] > 3) & (sim.positions[:, 0] < h - 4)
                          & (sim.positions[:, 1] > 3) & (sim.positions[:, 1] < w - 4)]
    d2, _ = cKDTree(peaks).query(inner)
    assert d2.max() < 0.8


@pytest.mark.parametrize("dose", [2.0, 8.0, 30.0])
def test_shot_noise_matches_the_dose_on_a_flat_region(dose):
    sim = simulate(size=(400, 400), basis=(), dents=0, dose=dose, seed=5)
    assert np.allclose(sim.clean, dose)
    flat = sim.noisy.astype(np.float64)
    assert flat.mean() == pytest.approx(dose, rel=0.05)
    assert flat.var() == pytest.approx(dose, rel=0.05)  # Poisson: variance = mean
    assert np.all(flat == np.round(flat))  # counts


def test_read_noise_adds_its_variance():
    sim = simulate(size=(400, 400), basis=(), dents=0, dose=10.0, read_noise=2.0, seed=6)
    assert sim.noisy.var() == pytest.approx(10.0 + 4.0, rel=0.05)


def test_mean_counts_equal_the_dose_on_a_lattice():
    sim = simulate(size=256, period=12, dose=5.0, seed=7)
    assert sim.clean.mean() == pytest.approx(5.0, rel=1e-4)
    assert sim.noisy.mean() == pytest.approx(5.0, rel=0.03)


def test_dent_is_darker_and_keeps_columns_in_place():
    flat = simulate(size=256, period=16, dents=0, seed=8)
    dented = simulate(size=256, period=16, dents=1, dent_depth=0.5, seed=8)
    assert dented.dent.max() == pytest.approx(1.0, abs=1e-3)
    # thickness factor 1 - depth * dent scales the whole signal, pixel by pixel
    ratio = (dented.clean / dented.clean.mean()) / (flat.clean / flat.clean.mean())
    expected = (1 - 0.5 * dented.dent) / (1 - 0.5 * dented.dent).mean()
    np.testing.assert_allclose(ratio, expected, rtol=1e-4)
    assert dented.clean[dented.dent > 0.99].mean() < 0.6 * dented.clean[dented.dent < 0.01].mean()
    np.testing.assert_allclose(dented.positions, flat.positions)


def test_same_seed_same_image_other_seed_other_image():
    a, b, c = simulate(size=96, seed=11), simulate(size=96, seed=11), simulate(size=96, seed=12)
    for name in ("noisy", "clean", "dent", "positions"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.noisy, c.noisy)


def test_period_sets_the_column_count():
    for period in (8.0, 16.0, 32.0):
        sim = simulate(size=(256, 256), period=period, seed=1, dents=0)
        assert len(sim.positions) == pytest.approx((256 / period) ** 2, rel=0.15)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(lattice="cubic"), "lattice must be one of"),
        (dict(period=0.5), "period"),
        (dict(dose=0), "dose"),
        (dict(dent_depth=1.5), "dent_depth"),
        (dict(size=4), "size"),
        (dict(read_noise=-1), "read_noise"),
        (dict(lattice="rectangular", aspect=0), "aspect"),  # was 'Singular matrix'
        (dict(aspect=-1), "aspect"),  # was accepted
        (dict(basis=((0, 0, -5),)), "an atomic number Z of 0 or more"),  # was a numpy casting traceback
    ],
)
def test_bad_parameters_are_named(kw, words):
    with pytest.raises(ValueError, match=words):
        SimParams(**kw)


def test_the_prefix_is_a_plain_file_name(tmp_path):
    """'--prefix ../evil' wrote outside the output folder, each image's three files to one path."""
    from napari_emdenoise.jobs import drive
    from napari_emdenoise.simulate import write_set

    for bad in ("../evil", "a/b", "", ".."):
        with pytest.raises(ValueError, match="the prefix must be a plain file name"):
            drive(write_set(tmp_path / "out", 1, SimParams(size=32), prefix=bad))
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.json").exists()
