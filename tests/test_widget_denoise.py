"""The Denoise flow as a user runs it: a real viewer, a real worker thread."""

import numpy as np
import pytest

from napari_emdenoise import check
from napari_emdenoise._widgets.denoise import FILE, DenoiseWidget
from napari_emdenoise.simulate import simulate


@pytest.fixture
def widget(make_napari_viewer, trained_model):
    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._source.value = FILE
    w._file.value = trained_model
    return viewer, w


def _denoise(qtbot, viewer, w, layer: str) -> None:
    """Run the dock at tiles of 128 (overlap 32) and wait until ``layer`` is in the viewer."""
    w._tile.value, w._overlap.value = 128, 32
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: layer in viewer.layers, timeout=5_000)


def test_denoise_adds_a_layer_with_the_input_shape_and_scale(widget, qtbot):
    viewer, w = widget
    sim = simulate(size=(200, 240), period=12, dose=6, dents=1, seed=1)
    viewer.add_image(sim.noisy, name="scan", scale=(0.03, 0.03))
    assert w._image.value.name == "scan"
    qtbot.waitUntil(lambda: "estimated 12" in w._period_label.value, timeout=10_000)  # estimated in a worker
    assert "resnet_6blocks" in w._model_label.value
    assert w._stack.native.isHidden()  # a 2D image has no stack option
    _denoise(qtbot, viewer, w, "scan denoised")
    out = viewer.layers["scan denoised"]
    assert out.data.shape == (200, 240)
    assert tuple(out.scale) == pytest.approx((0.03, 0.03))
    err_in = np.mean((sim.noisy - sim.clean) ** 2)
    assert np.mean((out.data - sim.clean) ** 2) < 0.5 * err_in
    assert w._run.enabled and not w._cancel.enabled
    # the consistency check ran: its one line under the button, its summary on the layer, no map unless asked
    expected = check(sim.noisy, out.data)
    assert w._status.value.startswith(expected.text() + "; ")
    assert "disagree with the data" in w._status.value or "consistent with the data" in w._status.value
    assert out.metadata["consistency"] == expected.summary()
    assert [layer.name for layer in viewer.layers] == ["scan", "scan denoised"]
    # every column's height was refit to the data (on by default), and the layer says how many
    assert w._refit.value and out.metadata["settings"]["refit"] is True
    assert out.metadata["refit"]["columns"] >= 200  # about 300 columns of a 12 px lattice on 200 x 240 px
    assert f"{out.metadata['refit']['columns']} column heights refit to the data" in w._status.value


def test_refit_off_gives_the_network_output(widget, qtbot, trained_model):
    from napari_emdenoise import denoise

    viewer, w = widget
    sim = simulate(size=(128, 128), period=12, dose=6, seed=2)
    viewer.add_image(sim.noisy, name="scan")
    w._refit.value = False
    _denoise(qtbot, viewer, w, "scan denoised")
    out = viewer.layers["scan denoised"]
    assert "refit" not in out.metadata and "refit" not in w._status.value
    assert np.allclose(out.data, denoise(sim.noisy, trained_model), atol=1e-3 * float(np.ptp(out.data)))


def test_consistency_map_layer_when_asked_for(widget, qtbot):
    viewer, w = widget
    sim = simulate(size=(160, 192), period=12, dose=6, dents=1, seed=3)
    viewer.add_image(sim.noisy, name="scan", scale=(0.03, 0.03), translate=(1.0, 2.0))
    assert not w._map.value  # off by default
    w._map.value = True
    _denoise(qtbot, viewer, w, "scan consistency")
    assert [layer.name for layer in viewer.layers] == ["scan", "scan denoised", "scan consistency"]
    z = viewer.layers["scan consistency"]
    assert z.data.shape == (160, 192) and z.data.dtype == np.float32
    assert tuple(z.scale) == pytest.approx((0.03, 0.03)) and tuple(z.translate) == pytest.approx((1.0, 2.0))
    assert z.colormap.name == "bwr" and tuple(z.contrast_limits) == pytest.approx((-9.0, 9.0))
    expected = check(sim.noisy, viewer.layers["scan denoised"].data)
    np.testing.assert_array_equal(z.data, expected.z)
    assert z.metadata["consistency"] == expected.summary() == viewer.layers["scan denoised"].metadata["consistency"]
    assert w._status.value.startswith(expected.text())


def test_a_check_that_cannot_run_still_adds_the_denoised_layer(widget, qtbot, monkeypatch):
    from napari_emdenoise._widgets import denoise as module
    from napari_emdenoise.consistency import ConsistencyError

    def refuse(noisy, denoised, **kw):
        raise ConsistencyError("the output has 4 NaN pixels where the data have numbers")

    monkeypatch.setattr(module, "check", refuse)
    viewer, w = widget
    noisy = simulate(size=(128, 128), period=12, dose=8, seed=4).noisy
    viewer.add_image(noisy, name="holes")
    w._map.value = True
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "holes denoised" in viewer.layers, timeout=5_000)
    assert w._status.value.startswith("the check could not run: ") and "NaN" in w._status.value
    assert [layer.name for layer in viewer.layers] == ["holes", "holes denoised"]
    assert "consistency" not in viewer.layers["holes denoised"].metadata


def test_cancel_mid_run_leaves_no_new_layer(widget, qtbot, two_tile_statistics):
    viewer, w = widget
    viewer.add_image(simulate(size=(768, 768), period=12, dose=6, seed=2).noisy, name="big")
    w._tile.value, w._overlap.value = 128, 32
    worker = w.start()
    seen = []

    def first_progress(p):
        seen.append(p)
        if len(seen) == 2:
            w.cancel()

    worker.yielded.connect(first_progress)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.wait(200)
    assert seen and seen[-1].done < seen[-1].total
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert w._run.enabled
    assert w._status.value == "Denoising cancelled; no layer was added."  # not the last progress line


def test_current_slice_of_a_stack(widget, qtbot):
    viewer, w = widget
    stack = np.stack([simulate(size=(96, 96), period=12, dose=8, seed=s).noisy for s in range(3)])
    viewer.add_image(stack, name="series", scale=(1.0, 0.05, 0.05))
    viewer.dims.set_point(0, 2)
    assert not w._stack.native.isHidden()  # offered only for stacks
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "series denoised" in viewer.layers, timeout=5_000)
    out = viewer.layers["series denoised"]
    assert out.data.shape == (96, 96)
    assert tuple(out.scale) == pytest.approx((0.05, 0.05))
    # how it was made: the source, its slice, the model and the settings
    assert out.metadata["source_layer"] == "series" and out.metadata["source_slice"] == (2,)
    assert out.metadata["settings"]["tile"] == 512 and out.metadata["model"].endswith(".safetensors")
    w._stack.value = True
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "series denoised [1]" in viewer.layers, timeout=5_000)
    assert viewer.layers["series denoised [1]"].data.shape == (3, 96, 96)
    assert viewer.layers["series denoised [1]"].metadata["consistency"]["regions"] >= 0  # the stack was checked too
    assert w._status.value


def test_a_bad_checkpoint_is_reported_when_chosen(widget, tmp_path):
    viewer, w = widget
    bad = tmp_path / "latest_net_D_A.pth"
    bad.write_text("nope")
    w._file.value = bad
    assert w._model is None and w._model_label.value == "no usable model"
    viewer.add_image(np.zeros((64, 64)), name="x")
    assert w.start() is None
    assert [layer.name for layer in viewer.layers] == ["x"]


def test_widget_is_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-emdenoise", "Denoise")
    assert isinstance(widget, DenoiseWidget)


def test_bundled_default_is_offered_first(make_napari_viewer):
    from napari_emdenoise._widgets.denoise import BUNDLED

    w = DenoiseWidget(make_napari_viewer())
    assert w._source.value == BUNDLED and w._model is not None
    assert "resnet_6blocks, residual, ngf 32" in w._model_label.value and "trained at 4.4-17.5 px/period" in w._model_label.value


def test_a_missing_model_file_and_an_rgb_layer_get_one_clear_message(make_napari_viewer, tmp_path, monkeypatch):
    import napari_emdenoise._widgets.denoise as module

    errors = []
    monkeypatch.setattr(module, "show_error", errors.append)
    viewer = make_napari_viewer()
    w = DenoiseWidget(viewer)
    viewer.window.add_dock_widget(w)
    viewer.add_image(simulate(size=96, period=12, seed=1).noisy, name="scan")
    w._image.value = viewer.layers["scan"]
    w._source.value = FILE
    w._file.value = tmp_path / "gone.safetensors"  # never existed
    assert w.start() is None and len(errors) == 1 and "No model" in errors[0]
    rgb = viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), name="photo", rgb=True)
    w.reset_choices()
    w._image.value = rgb
    assert "colour (RGB)" in w._period_label.value
    assert w.start() is None and "colour (RGB) layer" in errors[-1] and "photo" in errors[-1]
    assert [layer.name for layer in viewer.layers] == ["scan", "photo"]


def test_a_dask_layer_gets_a_lazy_result_then_denoise_all(widget, qtbot):
    import dask.array as da

    from napari_emdenoise import denoise

    viewer, w = widget
    stack = np.stack([simulate(size=(128, 160), period=12, dose=d, seed=i).noisy for i, d in enumerate((3, 6, 12))])
    viewer.add_image(da.from_array(stack, chunks=(1, 128, 160)), name="series", scale=(1, 0.02, 0.02))
    assert w._stack.native.isHidden()  # a lazy layer is denoised whole, slice by slice as it is shown
    viewer.dims.set_point(0, 1)
    _denoise(qtbot, viewer, w, "series denoised")
    out = viewer.layers["series denoised"]
    assert isinstance(out.data, da.Array) and out.data.shape == stack.shape and out.metadata["lazy"]
    assert tuple(out.scale) == pytest.approx((1, 0.02, 0.02))
    want = denoise(stack, w._model, tile=128, overlap=32)
    np.testing.assert_allclose(np.asarray(out.data[1]), want[1], atol=1e-4)  # computed as the user browses
    assert "Denoise all" in w._all.text and not w._all.native.isHidden()
    worker = w.start_all()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: isinstance(viewer.layers["series denoised"].data, np.ndarray), timeout=5_000)
    np.testing.assert_allclose(viewer.layers["series denoised"].data, want, atol=1e-4)
    assert w._all.native.isHidden() and "all 3 slice(s)" in w._status.value


def test_compile_the_network_is_passed_to_the_run_for_a_whole_stack(widget, qtbot, monkeypatch):
    from napari_emdenoise import nets

    viewer, w = widget
    compiled = []

    def fake(module):  # stands in for torch.compile (whose real figures are in tests/test_denoise.py): records the call
        compiled.append(module)
        return module

    monkeypatch.setattr(nets, "compiled", fake)
    viewer.add_image(np.stack([simulate(size=(96, 96), period=12, dose=8, seed=s).noisy for s in range(2)]), name="series")
    w._stack.value, w._compile.value = True, True
    _denoise(qtbot, viewer, w, "series denoised")
    assert len(compiled) == 1 and viewer.layers["series denoised"].metadata["settings"]["compile"] is True
    assert viewer.layers["series denoised"].data.shape == (2, 96, 96)


def test_the_core_s_warnings_reach_the_user_once_each(widget, qtbot, monkeypatch):
    """napari's worker never relayed warnings (its notifying mixin is not initialised), so an inverted-contrast image or
    NaN pixels were denoised without a word in the window."""
    import napari_emdenoise._widgets.base as base

    shown = []
    monkeypatch.setattr(base, "show_warning", shown.append)
    viewer, w = widget
    sim = simulate(size=(128, 128), period=12, dose=6, seed=2)
    bf = (sim.noisy.max() - sim.noisy).astype(np.float32)  # bright-field contrast: dark columns
    bf[10:14, 20:30] = np.nan
    viewer.add_image(bf, name="bf")
    w._image.value = viewer.layers["bf"]
    w._period.value = 12.0
    _denoise(qtbot, viewer, w, "bf denoised")
    assert any("inverted contrast" in m and "invert" in m for m in shown), shown
    assert any("40 NaN/Inf pixel(s)" in m for m in shown), shown
    assert len(shown) == len(set(shown)) and all(m.startswith("Denoising: ") for m in shown)


def test_a_job_whose_window_closed_stops_quietly(widget, qtbot):
    """Closing the viewer from a script or a notebook while a job ran: its next progress event met deleted Qt objects
    and the RuntimeError aborted the process. Now the job is cancelled and nothing is raised."""
    from qtpy import sip

    viewer, w = widget
    viewer.add_image(np.stack([simulate(size=256, period=12, dose=6, seed=s).noisy for s in range(6)]), name="stack")
    w._image.value = viewer.layers["stack"]
    w._period.value = 12.0
    w._stack.value = True
    worker = w.start()
    qtbot.waitUntil(lambda: w._progress.value > 0, timeout=60_000)
    sip.delete(w._progress.native)  # what closing the window does to the dock's widgets
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert worker.abort_requested and "stack denoised" not in viewer.layers
