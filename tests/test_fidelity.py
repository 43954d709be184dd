"""The fidelity benchmark measures what a user would check: filled vacancies, lost dopants, false atoms."""

import csv
import dataclasses

import numpy as np
import pytest

from napari_emdenoise import fidelity
from napari_emdenoise.scenes import ADATOM, DOPANT, LIGHT, VACANCY_HEAVY, VACUUM, make_scene, zweight


@pytest.fixture(scope="module")
def vacancies():
    return make_scene(kind="vacancies", size=256, period=12, dose=5, seed=fidelity.SEED0 + 100)


@pytest.fixture(scope="module")
def dopants():
    return make_scene(kind="dopants", size=256, period=12, dose=5, seed=fidelity.SEED0 + 101)


def test_the_truth_keeps_everything(vacancies, dopants):
    r = fidelity.measure(vacancies, vacancies.clean)
    assert r["vacancy_fill_heavy"] == 0 and r["vacancy_fill_light"] == 0
    assert r["light_error_5-15%"] < 0.02 and r["light_recall_5-15%"] == 1.0
    assert r["psnr"] == np.inf or r["psnr"] > 60
    d = fidelity.measure(dopants, dopants.clean)
    assert d["dopants_found"] == d["dopants"] == 10 and d["false_dopants"] == 0 and d["dopant_contrast_error"] < 0.02


def test_filled_vacancies_and_erased_dopants_are_counted(vacancies, dopants):
    w = vacancies.weights.copy()
    vac = vacancies.labels == VACANCY_HEAVY
    w[vac] = vacancies.site_weights[vac]
    filled, _ = vacancies.render(w)
    assert fidelity.measure(vacancies, filled)["vacancy_fill_heavy"] >= 0.9
    w = dopants.weights.copy()
    dop = np.isin(dopants.labels, [DOPANT, ADATOM])
    w[dop] = np.where(dopants.labels[dop] == DOPANT, dopants.site_weights[dop] * zweight(42) / zweight(74), 0.0)
    erased, _ = dopants.render(w)
    r = fidelity.measure(dopants, erased)
    assert r["dopants_found"] == 0 and r["dopant_contrast_change"] < -0.5


def test_ideal_observer_reads_each_column_off_the_frame(vacancies):
    # a frame without noise in which some light columns are gone: the observer reads their weights off it
    w = vacancies.weights.copy()
    gone = np.flatnonzero(vacancies.labels == LIGHT)[::40]
    w[gone] = 0.0
    want, frame = vacancies.render(w)
    seen = dataclasses.replace(vacancies, noisy=np.rint(frame).astype(np.uint16))
    out = fidelity.ideal_observer(seen)
    assert np.abs(out - want).max() < 0.02 * want.max()
    assert fidelity.measure(vacancies, out)["light_recall_5-15%"] < 0.99  # the removed columns (1 in 40) count as lost
    # on the noisy frame it keeps every vacancy and measures light columns better than the frame itself
    ideal, noisy = (fidelity.measure(vacancies, m(vacancies)) for m in (fidelity.ideal_observer, lambda s: s.noisy))
    assert ideal["vacancy_fill_heavy"] == 0 and ideal["vacancy_fill_light"] <= noisy["vacancy_fill_light"]
    assert ideal["light_error_5-15%"] < 0.7 * noisy["light_error_5-15%"]


def test_lattice_painted_over_vacuum_counts_as_false_atoms():
    s = make_scene(kind="amorphous", size=256, period=12, dose=5, seed=fidelity.SEED0 + 102)
    lattice = make_scene(kind="columns", size=256, period=12, dose=5, seed=1).clean
    assert fidelity.measure(s, s.clean)["false_atoms_vacuum"] == 0
    # a "denoiser" that paints a lattice, half as bright as the brightest atoms, over the vacuum
    painted = np.where(s.region == VACUUM, 0.5 * lattice * s.clean.max() / lattice.max(), s.clean)
    r = fidelity.measure(s, painted)
    assert r["false_atoms_vacuum"] > 20
    assert r["vacuum_psnr"] < fidelity.measure(s, s.clean)["vacuum_psnr"] - 20


def test_cli_fidelity_quick_writes_table_csv_and_figure(tmp_path, monkeypatch, capsys):
    from napari_emdenoise.cli import main

    monkeypatch.setattr(fidelity, "QUICK", fidelity.QUICK[:2])  # vacancies and dopants: keep the test short
    assert main(["bench", "--fidelity", "--quick", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "vacancies filled" in out and "| model |" in out and "| noisy |" in out
    rows = list(csv.DictReader(open(tmp_path / "fidelity.csv")))
    methods = {r["method"] for r in rows}
    assert {"noisy", "gaussian", fidelity.IDEAL, "model"} <= methods and len(rows) == 2 * len(methods)
    assert {r["kind"] for r in rows} == {"vacancies", "dopants"}
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000
    assert (tmp_path / "fidelity_summary.csv").exists()
