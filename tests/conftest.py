"""Shared fixtures: small TIFF files of every kind a user may drop on napari."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile


GUI_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp"}


def pytest_collection_modifyitems(items):
    """Mark every test that opens napari or Qt as ``gui``, so ``pytest -m "not gui"`` runs the core alone."""
    for item in items:
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in ("test_napari.py",) \
                or item.path.name.startswith("test_widget"):
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test(request):
    """A widget test's background workers finish before the next test starts: Qt's thread pool has as many threads
    as cores (2 here), so two left running would hold the next test's worker in the queue past its timeout."""
    yield
    import sys

    if "gui" in request.node.keywords and "qtpy" in sys.modules:
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(120_000)


@pytest.fixture(autouse=True)
def _own_widget_settings(tmp_path_factory, monkeypatch):
    """The widgets remember their settings in a file of the test's own, never in the user's."""
    monkeypatch.setenv("NAPARI_EMDENOISE_SETTINGS", str(tmp_path_factory.mktemp("settings") / "widgets.json"))


@pytest.fixture
def uint16_tiff(tmp_path):
    """A 16-bit image (48x64) with a pixel size of 0.025 nm in ImageJ metadata."""
    data = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 17 % 65536).astype(np.uint16)
    path = tmp_path / "BS3003_ADF_20MX_2435.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.025, 1 / 0.025), metadata={"unit": "nm"})
    return path, data


@pytest.fixture
def bad_files(tmp_path, uint16_tiff):
    """name -> (path, words the error message must contain)."""
    good, _ = uint16_tiff
    raw = good.read_bytes()
    files = {}
    p = tmp_path / "truncated.tif"
    p.write_bytes(raw[: len(raw) // 2])
    files["truncated"] = (p, "truncated or corrupt")
    p = tmp_path / "empty_file.tif"
    p.write_bytes(b"")
    files["empty file"] = (p, "empty or truncated")
    p = tmp_path / "renamed_png.tif"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    files["not a tiff"] = (p, "not a TIFF file")
    p = tmp_path / "garbage.tif"
    p.write_bytes(b"II*\x00" + b"\xff" * 60)
    files["corrupt header"] = (p, "truncated or corrupt")
    p = tmp_path / "zero_size.tif"
    with warnings.catch_warnings():  # tifffile warns that a zero-size TIFF is nonconformant: that is the point
        warnings.simplefilter("ignore")
        tifffile.imwrite(p, np.zeros((0, 16), np.uint16))
    files["empty image"] = (p, "empty")
    return files


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A small real denoiser: resnet_6blocks, ngf 8, trained paired for 200 iterations (~10 s) at period 12.

    The first training schedule this project used: learning rate 2e-3 decaying linearly from the start."""
    from napari_emdenoise.jobs import drive as run
    from napari_emdenoise.nets import GeneratorConfig
    from napari_emdenoise.simulate import simulate
    from napari_emdenoise.train import TrainConfig, train

    sims = [simulate(size=192, period=12, dose=d, dents=1, seed=i) for i, d in enumerate((3, 6, 12, 4))]
    cfg = TrainConfig(mode="paired", generator=GeneratorConfig("resnet_6blocks", ngf=8), iterations=200, batch_size=8,
                      crop=64, lr=2e-3, decay_from=0.0, preview_every=0, checkpoint_every=1000, seed=0)
    return run(train([s.noisy for s in sims], [s.clean for s in sims], tmp_path_factory.mktemp("model"), cfg))


@pytest.fixture(scope="session")
def dented_image():
    """A 384x448 simulated noisy image (period 12 px, 6 counts/px) with a deep dent, and its truth."""
    from napari_emdenoise.simulate import simulate

    return simulate(size=(384, 448), period=12, dose=6, dents=1, dent_depth=0.5, seed=99)


@pytest.fixture
def two_tile_statistics(monkeypatch):
    """Denoise in tiles and take the whole-image statistics from two of them, so that more batches follow them."""
    import napari_emdenoise.inference as d
    from napari_emdenoise import tiling

    spread = tiling.calibration_tiles
    monkeypatch.setattr(d, "_whole_pass_budget", lambda *a: 0)
    monkeypatch.setattr(tiling, "calibration_tiles",
                        lambda tiles, budget: spread(tiles, 2 * tiles[0].window().size))


@pytest.fixture
def tiled(monkeypatch):
    """Denoise in tiles (with whole-image statistics from all of them jointly) even where the whole image would fit one
    pass: for tests of the tile machinery itself, which otherwise only images beyond the memory budget reach."""
    import napari_emdenoise.inference as d

    monkeypatch.setattr(d, "_whole_pass_budget", lambda *a: 0)
    monkeypatch.setattr(d, "_calibration_budget", lambda *a: 10**12)


@pytest.fixture
def tiny_training(qtbot):
    """Run a Train dock for 3 iterations of 32-px crops with the small preset (no consistency term, no fidelity
    report) into ``out``, and wait (at most ``timeout`` ms) until it has finished."""

    def run(w, out, timeout: int):
        w._preset.value = "small"
        w._consistency.value = 0.0
        w._report.value = False
        w._crop.value = 32
        w._iters.value = 3
        w._out.value = out
        with qtbot.waitSignal(w.start().finished, timeout=timeout):
            pass

    return run

