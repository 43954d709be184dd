import csv
import json

import numpy as np
import pytest

from napari_emdenoise.dataset import (
    DatasetError,
    TargetSpec,
    Zoom,
    build_targets,
    iter_targets,
    parse_zoom,
    rotate_clockwise,
)
from napari_emdenoise.io import read_tiff, write_tiff
from napari_emdenoise.masks import dent_mask
from napari_emdenoise.simulate import simulate


@pytest.fixture(scope="module")
def lattice():
    return simulate(size=(400, 440), period=16, dents=0, dose=1000.0, seed=1).clean


@pytest.fixture(scope="module")
def masks():
    a = simulate(size=(256, 320), period=10, dents=1, dent_depth=0.4, seed=2).noisy
    b = simulate(size=(200, 200), period=8, dents=1, dent_depth=0.4, seed=3).noisy
    return {"scan_a": dent_mask(a), "scan_b": dent_mask(b)}


def _periods(img):
    """Lattice periods along (y, x) from the strongest peak of each axis' mean profile."""
    out = []
    for axis in (0, 1):
        prof = img.mean(axis=1 - axis) - img.mean()
        spec = np.abs(np.fft.rfft(prof * np.hanning(len(prof))))
        k = np.argmax(spec[2:]) + 2
        lo, hi = k - 1, k + 2
        kk = (spec[lo:hi] ** 2 * np.arange(lo, hi)).sum() / (spec[lo:hi] ** 2).sum()
        out.append(len(prof) / kk)
    return out


def test_parse_zoom(tmp_path):
    assert parse_zoom("20MX=36x38") == Zoom("20MX", atoms=(36.0, 38.0))
    assert parse_zoom("10MX = 12.5px") == Zoom("10MX", period=12.5)
    example = write_tiff(tmp_path / "ex.tif", simulate(size=256, period=20, seed=0).noisy)
    z = parse_zoom(f"8MX={example}")
    assert z.period == pytest.approx(20, rel=0.02)
    assert z.atoms_for((200, 300)) == pytest.approx((15.0, 10.0), rel=0.02)
    for bad in ("20MX", "20MX=lots", "20MX=notes.txt"):
        with pytest.raises(DatasetError):
            parse_zoom(bad)
    # one label twice (or two that make one file name): the second's targets overwrote the first's under one name
    with pytest.raises(DatasetError, match="the zoom label 'A' is given twice"):
        TargetSpec([parse_zoom("A=10x10"), parse_zoom("A=12x12")])
    with pytest.raises(DatasetError, match="the zoom labels 'A B' and 'A_B' make the same file names"):
        TargetSpec([parse_zoom("A B=10x10"), parse_zoom("A_B=12x12")])


def test_rotation_is_exact():
    img = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(rotate_clockwise(img, 90), np.rot90(img, -1))
    assert np.array_equal(rotate_clockwise(img, 270), np.rot90(img, 1))
    assert np.array_equal(rotate_clockwise(img, 360), img)
    with pytest.raises(DatasetError, match="multiple of 90"):
        rotate_clockwise(img, 45)


def test_rotated_lattice_swaps_its_periods():
    rect = simulate(size=(400, 400), lattice="rectangular", period=10, aspect=1.6, dents=0, dose=1000.0, seed=4).clean
    mask = np.zeros((240, 240), np.float32)
    zoom = [Zoom("x", atoms=(12, 12))]
    (t0,) = list(iter_targets(rect, {"m": mask}, TargetSpec(zooms=zoom, per_mask=1)))
    (t90,) = list(iter_targets(rect, {"m": mask}, TargetSpec(zooms=zoom, per_mask=1, rotate=270)))
    # unrotated: period 16 px down (y), 10 across; the crop holds 12 of each, so both become 20 px
    assert _periods(t0.clean) == pytest.approx([20, 20], rel=0.05)
    assert _periods(t90.clean) == pytest.approx([20, 20], rel=0.05)
    # the raw lattice: y period 16, x period 10; rotated by 270 (or 90) they swap
    assert _periods(rotate_clockwise(rect, 270)) == pytest.approx(_periods(rect)[::-1], rel=0.02)


@pytest.mark.parametrize("atoms", [(16, 12), (36, 38), (8, 5)])
def test_each_crop_holds_the_requested_atoms(lattice, masks, atoms):
    spec = TargetSpec(zooms=[Zoom("z", atoms=atoms)], per_mask=3, seed=1)
    for t in iter_targets(lattice, masks, spec):
        h, w = t.clean.shape
        py, px = _periods(t.clean)
        assert abs(w / px - atoms[0]) <= 1 and abs(h / py - atoms[1]) <= 1, (t.mask_name, w / px, h / py)


def test_each_target_carries_exactly_its_mask(lattice, masks):
    spec = TargetSpec(zooms=[Zoom("20MX", atoms=(20, 20))], per_mask=2, dent_depth=0.3)
    for t in iter_targets(lattice, masks, spec):
        mask = masks[t.mask_name]
        assert t.image.shape == mask.shape
        ok = t.clean > 1e-3 * t.clean.max()
        np.testing.assert_allclose((t.image / t.clean)[ok], (1 - 0.3 * mask / 255)[ok], rtol=1e-5)


def test_build_writes_n_per_mask_and_a_complete_manifest(tmp_path, lattice, masks):
    noisy = {"scan a": simulate(size=64, seed=5).noisy}
    spec = TargetSpec(zooms=[Zoom("20MX", atoms=(36, 38)), Zoom("10MX", atoms=(18, 19))], per_mask=4, rotate=270, seed=3)
    files = build_targets(lattice, masks, spec, tmp_path / "set", noisy=noisy)
    targets = sorted((tmp_path / "set" / "trainB").iterdir())
    assert len(targets) == 2 * 2 * 4
    assert sorted(p.name for p in targets if "scan_a" in p.name and p.name.startswith("20MX")) == [
        f"20MX_scan_a_{i:03d}.tif" for i in range(4)]
    assert [p.name for p in (tmp_path / "set" / "trainA").iterdir()] == ["scan_a.tif"]
    with open(tmp_path / "set" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["file"] for r in rows) == sorted(p.relative_to(tmp_path / "set").as_posix() for p in files)
    meta = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert meta["complete"] and meta["spec"]["rotate"] == 270 and len(meta["files"]) == 17
    assert read_tiff(targets[0]).data.shape in {(256, 320), (200, 200)}
    with pytest.raises(FileExistsError, match="overwrite"):
        build_targets(lattice, masks, spec, tmp_path / "set")


def test_same_seed_same_targets(lattice, masks):
    spec = TargetSpec(zooms=[Zoom("z", atoms=(10, 10))], per_mask=2, seed=7)
    a = [t.image for t in iter_targets(lattice, masks, spec)]
    b = [t.image for t in iter_targets(lattice, masks, spec)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])


def test_bad_inputs_are_explained(lattice, masks):
    with pytest.raises(DatasetError, match="no masks"):
        list(iter_targets(lattice, {}, TargetSpec(zooms=[Zoom("z", atoms=(4, 4))])))
    with pytest.raises(DatasetError, match="no zoom"):
        list(iter_targets(lattice, masks, TargetSpec(zooms=[])))
    with pytest.raises(DatasetError, match="no clear lattice"):
        list(iter_targets(np.random.default_rng(0).random((128, 128)), masks, TargetSpec(zooms=[Zoom("z", atoms=(4, 4))])))


def test_cancel_leaves_a_manifest_of_exactly_what_was_written(tmp_path, lattice, masks):
    from napari_emdenoise.dataset import iter_build_targets

    spec = TargetSpec(zooms=[Zoom("z", atoms=(10, 10))], per_mask=5)
    gen = iter_build_targets(lattice, masks, spec, tmp_path / "set")
    for _ in range(3):
        assert next(gen).total == 10
    gen.close()  # the user pressed Cancel
    meta = json.loads((tmp_path / "set" / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(tmp_path / "set").as_posix() for p in (tmp_path / "set" / "trainB").iterdir())
    assert not meta["complete"] and sorted(r["file"] for r in meta["files"]) == on_disk and len(on_disk) == 3


def test_a_mask_with_nan_pixels_is_refused_before_anything_is_written(tmp_path):
    from napari_emdenoise.dataset import DatasetError, TargetSpec, Zoom, build_targets
    from napari_emdenoise.simulate import simulate

    lattice = simulate(size=(256, 256), period=16.0, dents=0, dose=1000.0, seed=0).clean
    mask = np.ones((64, 64), np.float32)
    mask[10:20, 10:20] = np.nan
    with pytest.raises(DatasetError, match="mask 'scan' has 100 NaN or infinite pixel"):
        build_targets(lattice, {"scan": mask}, TargetSpec(zooms=[Zoom("z", period=12.0)], per_mask=2, lattice_period=16.0),
                      tmp_path / "set")
    assert not (tmp_path / "set").exists() or not any((tmp_path / "set").rglob("*.tif"))
