"""The Target set flow in a real viewer: preview layers, then a build in a worker."""

import json

import numpy as np

from napari_emdenoise._widgets.dataset import SIMULATED, DatasetWidget
from napari_emdenoise.masks import dent_mask
from napari_emdenoise.simulate import simulate


def _viewer_with_masks(make_napari_viewer):
    viewer = make_napari_viewer()
    noisy = simulate(size=(160, 192), period=10, dents=1, seed=3).noisy
    viewer.add_image(noisy, name="scan", scale=(0.02, 0.02), units=("nm", "nm"))
    viewer.add_image(dent_mask(noisy), name="scan dent mask", scale=(0.02, 0.02), units=("nm", "nm"))
    painted = np.zeros((128, 128), np.uint8)
    painted[30:90, 40:100] = 1
    viewer.add_labels(painted, name="hand mask (edit)", scale=(0.02, 0.02), units=("nm", "nm"))
    w = DatasetWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    return viewer, w


def test_preview_adds_targets_without_writing(make_napari_viewer, qtbot, tmp_path):
    viewer, w = _viewer_with_masks(make_napari_viewer)
    assert w._lattice.value == SIMULATED
    assert set(w._mask_layers.choices) == {"scan dent mask", "hand mask (edit)"}
    w._mask_layers.value = ["scan dent mask", "hand mask (edit)"]
    w._zooms.value = "20MX=16x12, 10MX=8x6"
    w._per_mask.value = 2
    w._preview.clicked.emit(False)  # the button's clicked(False) is not a count: 4 targets, as it says
    assert w._worker is not None  # computed in a worker: napari stays responsive
    qtbot.waitUntil(lambda: not w.running, timeout=30_000)
    assert len([ly for ly in viewer.layers if ly.name.startswith("target ")]) == 4
    for name in [ly.name for ly in viewer.layers if ly.name.startswith("target ")]:
        viewer.layers.remove(name)
    with qtbot.waitSignal(w.preview().finished, timeout=30_000):
        pass
    layers = w.previews
    assert [layer.name for layer in layers] == [
        "target 20MX_scan_dent_mask_000.tif", "target 20MX_scan_dent_mask_001.tif",
        "target 20MX_hand_mask_edit_000.tif", "target 20MX_hand_mask_edit_001.tif"]
    assert layers[0].data.shape == (160, 192) and layers[2].data.shape == (128, 128)
    # the targets keep the frames' pixel size: no "inconsistent units" and no 50x too large previews
    assert all(tuple(ly.scale) == (0.02, 0.02) and tuple(str(u) for u in ly.units) == ("nanometer", "nanometer") for ly in layers)
    # the painted region is thinner by the dent depth
    t = layers[2].data
    assert t[30:90, 40:100].mean() < 0.7 * t[:20].mean()  # default depth 0.4: 0.6 of the untouched level
    assert not any(tmp_path.iterdir())


def test_build_writes_the_set_in_a_worker(make_napari_viewer, qtbot, tmp_path):
    viewer, w = _viewer_with_masks(make_napari_viewer)
    w._mask_layers.value = ["hand mask (edit)"]
    w._noisy_layers.value = ["scan"]
    w._zooms.value = "20MX=16x12"
    w._per_mask.value = 3
    w._out.value = tmp_path / "set"
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    meta = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert meta["complete"] and len(meta["files"]) == 4
    assert len(list((tmp_path / "set" / "trainB").iterdir())) == 3
    assert w._run.enabled


def test_widget_is_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-emdenoise", "Target set")
    assert isinstance(widget, DatasetWidget)
