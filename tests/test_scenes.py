"""Specimen scenes: the labels must match the image, and the same seed gives the same bytes."""

import numpy as np
import pytest
from scipy import ndimage

from napari_emdenoise.scenes import (ADATOM, AMORPHOUS, AMORPHOUS_REGION, CRYSTAL, DOPANT, HEAVY, KINDS, LIGHT,
                                     LIGHT_BANDS, VACANCY_HEAVY, VACANCY_LIGHT, VACUUM, SceneParams, make_scene)


def _at(img, pos):
    rc = np.rint(pos).astype(int)
    return img[rc[:, 0], rc[:, 1]]


def _inner(scene, margin=4):
    h, w = scene.clean.shape
    p = scene.positions
    return (p[:, 0] > margin) & (p[:, 0] < h - margin) & (p[:, 1] > margin) & (p[:, 1] < w - margin)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_and_detector_values(kind):
    a = make_scene(kind=kind, size=128, period=10, dose=4, seed=7)
    b = make_scene(kind=kind, size=128, period=10, dose=4, seed=7)
    c = make_scene(kind=kind, size=128, period=10, dose=4, seed=8)
    assert a.noisy.dtype == np.uint16 and a.noisy.shape == (128, 128)
    assert a.noisy.tobytes() == b.noisy.tobytes() and a.clean.tobytes() == b.clean.tobytes()
    assert a.noisy.tobytes() != c.noisy.tobytes()
    # detector values, not counts: the offset sits under the darkest pixels
    assert np.median(a.noisy) > a.params.offset
    assert a.region.shape == a.clean.shape and len(a.labels) == len(a.positions) == len(a.weights)


def test_vacancies_are_dark_and_light_columns_at_their_ratio():
    s = make_scene(kind="vacancies", size=256, period=14, dose=10, seed=1)
    ok = _inner(s)
    occupied = _at(s.clean, s.positions[ok & (s.labels == HEAVY) & (s.sublattice == 0)])
    empty = _at(s.clean, s.positions[ok & (s.labels == VACANCY_HEAVY) & (s.sublattice == 0)])
    assert len(empty) >= 3
    # an empty Sr site is far below every occupied one (the neighbours' tails only)
    assert empty.max() < 0.5 * np.median(occupied)
    light_empty = ok & (s.labels == VACANCY_LIGHT)
    assert light_empty.sum() >= 3 and np.all(s.weights[light_empty] == 0)
    # O columns weigh 7 % of Sr (Z^1.7 of one O over one Sr per cell)
    o = s.sublattice >= 2
    assert np.median(s.site_weights[o & (s.labels == LIGHT)]) / np.median(s.site_weights[(s.sublattice == 0) & (s.labels == HEAVY)]) == pytest.approx(8**1.7 / 38**1.7, rel=0.1)


def test_dopants_are_bright():
    s = make_scene(kind="dopants", size=256, period=12, dose=10, seed=2)
    dop = s.labels == DOPANT
    ad = s.labels == ADATOM
    assert dop.sum() == 5 and ad.sum() == 5
    matrix = np.median(_at(s.clean, s.positions[_inner(s) & (s.labels == HEAVY)]))
    assert _at(s.clean, s.positions[dop]).min() > 1.8 * matrix  # W on a Mo site: (74/42)^1.7 = 2.6
    assert _at(s.clean, s.positions[ad]).min() > 1.8 * matrix  # Pt on a hollow site
    assert np.all(s.site_weights[ad] == 0)  # off the lattice: nothing there without the adatom


def test_light_columns_at_their_set_ratio_per_band():
    s = make_scene(kind="columns", size=288, period=16, dose=20, seed=3, tail=0.0)
    heavy_w = np.median(s.weights[s.labels == HEAVY])
    for b, (lo, hi) in enumerate(LIGHT_BANDS):
        r = s.weights[(s.labels == LIGHT) & (s.band == b)] / heavy_w
        assert len(r) > 10 and lo * 0.9 <= np.median(r) <= hi * 1.1
    # and the image agrees: light peak over heavy peak (background removed) near the set ratio
    bg = ndimage.minimum_filter(s.clean, size=16)
    ok = _inner(s, 10)
    heavy = np.median((_at(s.clean, s.positions[ok & (s.labels == HEAVY)]) - _at(bg, s.positions[ok & (s.labels == HEAVY)])))
    for b, (lo, hi) in enumerate(LIGHT_BANDS):
        sel = ok & (s.labels == LIGHT) & (s.band == b)
        ratio = np.median(_at(s.clean, s.positions[sel]) - _at(bg, s.positions[sel])) / heavy
        assert lo * 0.8 < ratio < hi * 1.2


def test_amorphous_is_aperiodic_and_vacuum_is_empty():
    s = make_scene(kind="amorphous", size=256, period=12, dose=10, seed=4)
    am = s.region == AMORPHOUS_REGION
    assert 0.4 < am.mean() < 0.85 and (s.region == VACUUM).mean() > 0.1
    assert np.all(s.labels == AMORPHOUS)
    from napari_emdenoise.lattice import estimate_period

    assert not estimate_period(s.clean).found  # no lattice reflection
    lattice = make_scene(kind="vacancies", size=256, period=12, dose=10, seed=4)
    assert estimate_period(lattice.clean).found
    vac = ndimage.binary_erosion(s.region == VACUUM, iterations=6)
    assert s.clean[vac].max() < 0.05 * s.clean[am].max()


def test_particle_interface_regions():
    p = make_scene(kind="particle", size=256, period=10, dose=10, seed=5)
    assert {VACUUM, CRYSTAL, AMORPHOUS_REGION} <= set(np.unique(p.region))
    assert p.clean[p.region == CRYSTAL].mean() > 5 * p.clean[p.region == AMORPHOUS_REGION].mean()
    i = make_scene(kind="interface", size=256, period=10, dose=10, seed=5)
    assert (i.region == VACUUM).mean() > 0.05 and (i.region == CRYSTAL).mean() > 0.6


def test_render_fills_a_vacancy_where_it_should():
    s = make_scene(kind="vacancies", size=160, period=14, dose=10, seed=6)
    vac = (s.labels == VACANCY_HEAVY) & _inner(s)
    w = s.weights.copy()
    w[vac] = s.site_weights[vac]
    clean, expected = s.render(w)
    assert np.all(_at(clean, s.positions[vac]) > 3 * _at(s.clean, s.positions[vac]))
    same_clean, _ = s.render(s.weights)
    np.testing.assert_allclose(same_clean, s.clean, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [dict(kind="crystal"), dict(period=1), dict(size=16), dict(dose=0), dict(width=0.7), dict(jitter=-1)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        SceneParams(**bad)


def test_training_sets_take_kind_shares_and_the_perfect_lattice(tmp_path):
    import json

    from napari_emdenoise.scenes import make_scene
    from napari_emdenoise.scenes.training import check_kinds, training_params, write_training_set
    from napari_emdenoise.jobs import drive

    assert {training_params(s, kinds={"lattice": 1.0}).kind for s in range(10)} == {"lattice"}
    mix = [training_params(s, kinds={"lattice": 1, "dopants": 1}).kind for s in range(200)]
    assert 70 < mix.count("lattice") < 130 and set(mix) == {"lattice", "dopants"}
    scene = make_scene(training_params(3, size=128, kinds={"lattice": 1.0}))
    assert set(np.unique(scene.labels)) == {HEAVY} and len(scene.positions) > 20  # nothing missing, one kind of column
    with pytest.raises(ValueError, match="unknown scene kind 'crystal'"):
        check_kinds({"crystal": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        check_kinds({"lattice": -1.0})
    meta = drive(write_training_set(tmp_path / "set", 2, 0, size=64, kinds={"lattice": 3, "vacancies": 1}))
    assert json.loads(meta.read_text())["kinds"] == {"lattice": 0.75, "vacancies": 0.25}
    with pytest.raises(ValueError, match="a dose of 0 has no counts"):  # was 'must lie within 0-60 ... got 0 1'
        drive(write_training_set(tmp_path / "zero", 2, 0, size=64, doses=(0.0, 1.0)))
    assert not (tmp_path / "zero").exists()


def test_scenes_cli_takes_kinds(tmp_path, capsys):
    from napari_emdenoise.cli import main

    assert main(["scenes", "-o", str(tmp_path / "a"), "--n", "2", "--size", "64", "--kinds", "lattice=1"]) == 0
    assert main(["scenes", "-o", str(tmp_path / "b"), "--n", "1", "--size", "64", "--kinds", "lattice"]) == 2
    assert "KIND=SHARE" in capsys.readouterr().err
    assert main(["scenes", "-o", str(tmp_path / "c"), "--n", "1", "--size", "64", "--kinds", "atoms=1"]) != 0
    assert "unknown scene kind 'atoms'" in capsys.readouterr().err
