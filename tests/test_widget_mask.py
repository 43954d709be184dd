"""The Dent mask flow in a real viewer: live preview, painting, saving."""

import numpy as np
import pytest

import napari_emdenoise._widgets.mask as mask_widget
from napari_emdenoise._widgets.mask import MaskWidget
from napari_emdenoise.io import read_tiff
from napari_emdenoise.masks import iou, mask_region
from napari_emdenoise.simulate import simulate


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    sim = simulate(size=(256, 288), period=10, dose=6, dents=1, dent_depth=0.4, dent_radius=60, seed=5)
    viewer.add_image(sim.noisy, name="scan", scale=(0.02, 0.02))
    w = MaskWidget(viewer)
    viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: "scan dent mask" in viewer.layers and w.idle, timeout=20_000)
    yield viewer, w, sim
    qtbot.waitUntil(lambda: w.idle, timeout=20_000)  # no preview may land on a closed viewer


def test_preview_appears_and_follows_the_sliders(setup, qtbot):
    viewer, w, sim = setup
    preview = viewer.layers["scan dent mask"]
    assert preview.data.shape == sim.noisy.shape
    assert tuple(preview.scale) == pytest.approx((0.02, 0.02))
    assert w._window.value >= 19  # adaptive: two lattice periods
    assert iou(mask_region(preview.data), sim.dent > 0.5) >= 0.7
    area = float((preview.data > 0).mean())
    w._threshold.value = 230
    qtbot.waitUntil(lambda: w.idle and float((viewer.layers["scan dent mask"].data > 0).mean()) < area - 0.01, timeout=20_000)
    assert "dent region" in w._status.value


def test_paint_then_save_writes_exactly_the_painted_mask(setup, tmp_path, monkeypatch, qtbot):
    viewer, w, sim = setup
    edit = w.make_editable()
    assert edit._type_string == "labels" and edit.name == "scan dent mask (edit)"
    painted = np.asarray(edit.data).copy()
    painted[:40, :50] = 1  # the user paints a region ...
    painted[100:140, 100:140] = 0  # ... and erases another
    edit.data = painted
    w._path.value = tmp_path / "mask.tif"
    path = w.save()
    saved = read_tiff(path)
    assert saved.data.dtype == np.float32
    np.testing.assert_array_equal(saved.data, np.where(painted > 0, 255.0, 0.0))
    assert saved.pixel_size == pytest.approx((0.02, 0.02))
    # the preview never overwrites the painting without asking
    monkeypatch.setattr(mask_widget, "ask", lambda *a: False)
    w._threshold.value = 50
    qtbot.waitUntil(lambda: w.idle, timeout=20_000)
    assert w._params.threshold == 50
    assert w.make_editable() is edit
    np.testing.assert_array_equal(np.asarray(edit.data), painted)
    # saving again over the file asks too; "No" keeps the file
    before = path.read_bytes()
    edit.data = np.zeros_like(painted)
    assert w.save() is None and path.read_bytes() == before


def test_save_to_a_folder_or_a_dotted_name(setup, tmp_path):
    viewer, w, sim = setup
    w._path.value = tmp_path  # a folder chosen in the file dialog: the mask is named after its image
    assert w.save() == tmp_path / "scan_mask.tif" and read_tiff(tmp_path / "scan_mask.tif").data.shape == sim.noisy.shape
    w._path.value = tmp_path / "scan.2024"  # a dotted name keeps its dot (was saved as 'scan.tif')
    assert w.save() == tmp_path / "scan.2024.tif" and (tmp_path / "scan.2024.tif").is_file()


def test_widget_is_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-emdenoise", "Dent mask")
    assert isinstance(widget, MaskWidget)
