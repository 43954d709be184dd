"""check(): flags what an output invented or erased, and (almost) nothing on the truth."""

import numpy as np
import pytest
from scipy import ndimage

from napari_emdenoise import check
from napari_emdenoise.consistency import ConsistencyError
from napari_emdenoise.scenes import ADATOM, DOPANT, VACANCY_HEAVY, make_scene, zweight


def _corrupted(scene):
    """The scene's mean image with every heavy-site vacancy filled and every dopant erased."""
    w = scene.weights.copy()
    vac = (scene.labels == VACANCY_HEAVY) & (scene.sublattice == 0)
    dop = np.isin(scene.labels, [DOPANT, ADATOM])
    w[vac] = scene.site_weights[vac]
    w[dop] = np.where(scene.labels[dop] == DOPANT, scene.site_weights[dop] * zweight(42) / zweight(74), 0.0)
    return scene.render(w)[1], scene.positions[vac | dop]


@pytest.mark.parametrize("dose", [1, 5, 50])
@pytest.mark.parametrize("kind", ["vacancies", "dopants"])
def test_filled_vacancies_and_erased_dopants_are_flagged(kind, dose):
    s = make_scene(kind=kind, size=384, period=12, dose=dose, gain=37.0, offset=3100.0, read_noise=25.0, seed=11)
    assert s.noisy.dtype == np.uint16
    truth = check(s.noisy, s.expected)
    assert truth.share <= 0.01
    assert truth.regions <= 3
    bad, sites = _corrupted(s)
    assert len(sites) >= 8
    res = check(s.noisy, bad)
    near = ndimage.maximum_filter(res.flagged, size=5)
    rc = np.rint(sites).astype(int)
    assert near[rc[:, 0], rc[:, 1]].mean() >= 0.9
    assert res.invented >= 1 if kind == "vacancies" else res.erased >= 1
    # the fitted noise model found the detector's gain (detector values per electron)
    assert truth.gain == pytest.approx(37.0, rel=0.1)


def test_other_programs_output_in_another_range_is_checked():
    s = make_scene(kind="vacancies", size=256, period=10, dose=8, seed=2)
    counts = s.counts(s.expected)  # the truth in electron counts, not detector values
    res = check(s.noisy, counts)
    assert res.regions <= 2 and res.slope == pytest.approx(s.params.gain, rel=0.05)
    assert res.z.dtype == np.float32 and res.z.shape == s.noisy.shape and res.flagged.dtype == bool


def test_stack_is_checked_plane_by_plane():
    a = make_scene(kind="dopants", size=128, period=10, dose=5, seed=1)
    b = make_scene(kind="dopants", size=128, period=10, dose=5, seed=2)
    res = check(np.stack([a.noisy, b.noisy]), np.stack([a.expected, b.expected]))
    assert res.z.shape == (2, 128, 128) and res.share <= 0.01
    assert "consistent" in res.text() or "region" in res.text()


def test_bad_pairs_get_one_clear_error():
    s = make_scene(kind="vacancies", size=128, period=10, dose=5, seed=3)
    with pytest.raises(ConsistencyError, match="shape"):
        check(s.noisy, s.expected[:100])
    nan = s.expected.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ConsistencyError, match="NaN"):
        check(s.noisy, nan)
    with pytest.raises(ConsistencyError, match="constant"):
        check(s.noisy, np.ones_like(s.expected))
    other = make_scene(kind="amorphous", size=128, period=10, dose=5, seed=9)
    with pytest.raises(ConsistencyError, match="does not follow the data"):
        check(s.noisy, other.expected)
    with pytest.raises(ConsistencyError, match="does not follow the data"):
        check(s.noisy, -s.expected)  # an inverted output
    with pytest.raises(ConsistencyError, match="numbers"):
        check(s.noisy, s.expected.astype(str))


def test_pixels_missing_in_data_and_output_alike_are_left_out():
    s = make_scene(kind="vacancies", size=128, period=10, dose=5, seed=4)
    data, out = s.noisy.astype(np.float32), s.expected.copy()
    data[10:20, 30:40] = np.nan
    out[10:20, 30:40] = np.nan  # denoise() keeps missing pixels missing
    res = check(data, out)
    assert np.isnan(res.z[10:20, 30:40]).all() and not res.flagged[10:20, 30:40].any()
    assert res.regions <= 1


def test_any_units_and_clear_limits():
    s = make_scene(kind="vacancies", size=128, period=10, dose=5, seed=5)
    bad, _ = _corrupted(s)
    ref = check(s.noisy, bad).regions
    assert ref >= 1
    for unit in (1e-12, 1e20):  # a detector current in amperes, or absurdly large numbers: the same verdict
        res = check(s.noisy.astype(np.float64) * unit, bad * unit)
        assert res.regions == ref and res.gain == pytest.approx(check(s.noisy, bad).gain * unit, rel=1e-3)
    with pytest.raises(ConsistencyError, match="quarter of the image side"):
        check(s.noisy, bad, scale=200)
    with pytest.raises(ConsistencyError, match="plane 1"):
        check(np.stack([s.noisy, s.noisy]), np.stack([bad, np.zeros_like(bad)]))
    holes = s.noisy.astype(np.float32)
    holes[5, 5] = np.nan
    with pytest.raises(ConsistencyError, match="the data have 1 NaN"):
        check(holes, s.expected)


def test_samples_do_not_alias_with_a_lattice_of_the_sampling_stride():
    """Strided subsamples (every 8th pixel of a 2048² image) of an axis-aligned 8 px lattice saw one place of the unit
    cell: the hot-pixel bound fell to 25 counts (3.6 % of the pixels, the column peaks, taken for hot), the output's
    map onto the data got slope 0.76, the contrast skew read -0.67 (an 'inverted contrast' warning) and the refit
    kept 6047 of 65536 columns."""
    from napari_emdenoise import refit_columns
    from napari_emdenoise.consistency import hot_bound, match
    from napari_emdenoise.inference import INVERTED_SKEW, contrast_skew
    from napari_emdenoise.simulate import simulate

    im = simulate(size=2048, period=8, dose=5, seed=1)
    assert hot_bound(im.noisy) > im.noisy.max()  # no hot pixels in this frame
    m = match(im.noisy, im.clean)
    assert m.cool.all() and abs(m.a - 1) < 0.02
    assert contrast_skew(im.noisy) > -INVERTED_SKEW
    assert refit_columns(im.noisy, im.clean).columns >= 0.95 * (2048 // 8) ** 2
    assert check(im.noisy, im.clean).regions <= 3


def test_an_unvarying_lattice_whose_period_is_the_block_size_follows_its_data():
    """The 'does the output follow the data' test correlated 8 x 8 block means: on an 8 px lattice of even thickness
    every block holds one unit cell, the correlation was noise (-0.16), and check() and refit_columns() refused the
    denoised image of this very frame."""
    from napari_emdenoise import refit_columns
    from napari_emdenoise.simulate import simulate

    im = simulate(size=512, period=8, dose=5, seed=1, dents=0)
    assert check(im.noisy, im.clean).regions <= 1
    assert refit_columns(im.noisy, im.clean).columns >= 0.95 * (512 // 8) ** 2
    with pytest.raises(ConsistencyError, match="does not follow the data"):
        check(im.noisy, np.roll(im.clean, 4, axis=0))  # half a period off: not this frame's output


def test_a_stack_with_a_plane_without_numbers_is_checked_plane_by_plane():
    """denoise() gives a plane without a finite pixel back as NaN; the check refused the whole stack for it ("plane 1:
    the data are constant"), where the other planes can be checked."""
    from napari_emdenoise.simulate import simulate

    im = simulate(size=128, period=10, dose=5, seed=1)
    stack = np.stack([np.full_like(im.noisy, np.nan), im.noisy, im.noisy[::-1].copy()])
    out = np.stack([np.full_like(im.clean, np.nan), im.clean, im.clean[::-1].copy()])
    c = check(stack, out)
    assert np.isnan(c.z[0]).all() and not c.flagged[0].any()
    assert np.isfinite(c.z[1:]).all() and c.regions == 0
    assert c.scale == pytest.approx(check(im.noisy, im.clean).scale)
