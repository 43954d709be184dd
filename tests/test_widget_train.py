"""The Train flow in a real viewer: start, progress events, Stop, a checkpoint the Denoise flow loads."""


import numpy as np

from napari_emdenoise._widgets.denoise import FILE, DenoiseWidget
from napari_emdenoise._widgets.train import CYCLEGAN, PAIRED_SIM, TrainWidget
from napari_emdenoise.io import write_tiff
from napari_emdenoise.simulate import simulate


def _start_long_paired_run(make_napari_viewer, tmp_path):
    """A Train widget running a 10 000-iteration paired run on simulated pairs; events are collected."""
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._mode.value = PAIRED_SIM
    w._preset.value = "small"  # the reference method from scratch: quick iterations on a CPU
    w._consistency.value = 0.0
    w._iters.value = 10_000
    w._crop.value = 48
    w._out.value = tmp_path / "run"
    events = []
    worker = w.start()
    worker.yielded.connect(events.append)
    return viewer, w, worker, events


def test_start_progress_stop_then_denoise_with_the_checkpoint(make_napari_viewer, qtbot, tmp_path):
    viewer, w, worker, events = _start_long_paired_run(make_napari_viewer, tmp_path)
    qtbot.waitUntil(lambda: len(events) >= 3, timeout=60_000)
    assert [e.iteration for e in events[:3]] == [1, 2, 3]
    assert not w._progress.native.isHidden() and "iteration" in w._status.value
    assert "L1" in w.plot.series and "training preview" in viewer.layers
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        w.stop()
    assert (tmp_path / "run" / "checkpoint.pt").exists() and w._run.enabled
    # the Denoise flow loads what Stop saved
    viewer.add_image(simulate(size=96, period=12, seed=1).noisy, name="scan")
    d = DenoiseWidget(viewer)
    d._source.value = FILE
    d._file.value = tmp_path / "run" / "denoiser.safetensors"
    assert d._model is not None and "trained at 12.0 px/period" in d._model_label.value


def test_cyclegan_from_folders_and_a_clear_error_for_an_empty_one(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    (tmp_path / "empty").mkdir()
    for i in range(2):
        write_tiff(tmp_path / "noisy" / f"n{i}.tif", simulate(size=96, period=12, dose=4, seed=i).noisy)
    w._mode.value = CYCLEGAN
    w._noisy_dir.value = tmp_path / "noisy"
    w._clean_dir.value = tmp_path / "empty"
    w._out.value = tmp_path / "run"
    assert w.start() is None  # "the target folder ... holds no .tif files"
    for i in range(2):
        write_tiff(tmp_path / "clean" / f"c{i}.tif", simulate(size=96, period=12, dose=1000, seed=5 + i).clean)
    w._clean_dir.value = tmp_path / "clean"
    w._crop.value = 32
    w._iters.value = 3
    worker = w.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert (tmp_path / "run" / "latest_net_G_B.pth").exists()
    assert set(w.plot.series) >= {"D_A", "G_A", "cycle_A", "consistency"}  # the default: the consistency term on
    # the fidelity report ends the run: in the run folder and under the buttons
    assert (tmp_path / "run" / "fidelity_report.md").is_file()
    qtbot.waitUntil(lambda: "fidelity report" in w._status.value or "less faithful than the bundled model" in w._status.value,
                    timeout=10_000)  # the result's slot may run just after `finished` reached the test


def test_widget_is_in_the_plugins_menu(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-emdenoise", "Train")
    assert isinstance(widget, TrainWidget)


def test_closing_napari_during_training_keeps_a_checkpoint(make_napari_viewer, qtbot, tmp_path):
    viewer, w, worker, events = _start_long_paired_run(make_napari_viewer, tmp_path)
    qtbot.waitUntil(lambda: len(events) >= 2, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: (tmp_path / "run" / "checkpoint.pt").exists(), timeout=60_000)
    import torch

    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] >= 2


def test_self_supervised_from_a_layer_and_fields_follow_the_method(make_napari_viewer, qtbot, tmp_path, tiny_training):
    from napari_emdenoise._widgets.train import SELF

    viewer = make_napari_viewer()
    viewer.add_image(simulate(size=96, period=12, dose=4, seed=3).noisy, name="scan")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    shown = lambda widget: not widget.native.isHidden()  # noqa: E731 - the viewer itself is not on screen in tests
    w._mode.value = PAIRED_SIM
    assert shown(w._sim_period) and not shown(w._clean_dir) and not shown(w._noisy_layers)
    w._mode.value = SELF
    assert shown(w._noisy_layers) and not shown(w._clean_dir) and not shown(w._sim_period)
    w._noisy_layers.value = ["scan"]
    tiny_training(w, tmp_path / "run", timeout=60_000)
    assert (tmp_path / "run" / "denoiser.safetensors").exists() and "N2V" in w.plot.series


def test_a_time_estimate_before_start_and_a_loss_plot_with_axes(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._mode.value = PAIRED_SIM
    w._preset.value = "small"
    w._consistency.value = 0.0
    w._crop.value = 32
    w._iters.value = 1000
    with qtbot.waitSignal(w.update_estimate(force=True).finished, timeout=60_000):
        pass
    text = w._estimate.value
    assert text.startswith("about ") and "for 1000 iterations" in text and "s per iteration, measured here" in text
    per_it = float(text.split("(")[1].split(" s per")[0])
    assert 0 < per_it < 10
    w._iters.value = 50_000  # the same measurement, scaled: no new measuring
    assert "for 50000 iterations" in w._estimate.value and w.update_estimate(force=True) is None
    axes = w.plot.plot.getPlotItem()
    assert axes.getAxis("bottom").labelText == "iteration" and axes.getAxis("left").labelText == "loss (log)"
    w.plot.add(1, {"L1": 0.5})
    w.plot.add(2, {"L1": 0.4})
    w.plot.redraw()
    xs, ys = w.plot._curves["L1"].xData, w.plot._curves["L1"].yData
    assert list(xs) == [1, 2] and np.allclose(ys, [0.5, 0.4]) and "L1" in w.plot.legend.text()


def test_a_time_estimate_that_cannot_be_measured_is_said_once_and_not_retried(make_napari_viewer, qtbot, monkeypatch):
    import napari_emdenoise.train as train_module

    calls = []

    def fails(cfg, steps=2):
        calls.append(cfg)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train_module, "seconds_per_iteration", fails)
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    with qtbot.waitSignal(w.update_estimate(force=True).finished, timeout=30_000):
        pass
    assert w._estimate.value == "no time estimate: out of memory"
    assert w.update_estimate(force=True) is None and len(calls) == 1
    assert w._estimate.value == "no time estimate: out of memory"
