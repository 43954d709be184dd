"""Plugins > EM Denoise > Train: the core training generator in a worker thread, observable.

Start runs :func:`napari_emdenoise.train.train` in a napari worker; each event moves the
progress bar (with an ETA), extends the loss curve and, every few iterations, refreshes a
``training preview`` layer (the generator on a fixed noisy crop). Pause/Continue pauses the
worker between iterations; Stop quits it after the current iteration and the worker closes
the training generator in its own thread, which saves a checkpoint; "continue the run in
the output folder" resumes from it. Closing the widget or napari stops the worker the same
way, so the last checkpoint is always complete.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, Label, PushButton, Select, SpinBox
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QLabel, QVBoxLayout, QWidget

from ..inference import available_devices
from ..io import ImageFileError, expand_tiffs, read_tiff
from ..simulate import simulate
from ..train import (
    LOSS_COLORS,
    PRESETS,
    TrainConfig,
    TrainEvent,
    TrainingError,
)
from ..train_report import train_with_report
from ._common import chosen_path, geometry
from ._settings import remember
from .base import JobWidget

CYCLEGAN = "CycleGAN (frames + targets)"
PAIRED_SIM = "paired (simulated pairs)"
SELF = "self-supervised (frames only)"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _shutdown(holder: dict, detach: bool = False, wait: bool = False) -> None:
    """Ask a running training to stop after its current iteration (its generator then saves a
    checkpoint); ``detach`` first disconnects the widgets, which are gone; ``wait`` blocks until done."""
    worker = holder.get("worker")
    if worker is None:
        return
    if detach:
        for signal in (worker.yielded, worker.returned, worker.finished, worker.errored):
            try:
                signal.disconnect()
            except (TypeError, RuntimeError):
                pass
    if worker.is_paused:
        worker.resume()
    worker.quit()
    if wait:
        GeneratorWorker.await_workers(msecs=120_000)


class LossPlot(QWidget):
    """The live loss curves, smoothed, against the iteration, with axes and a legend above them (pyqtgraph)."""

    REDRAW_S = 0.25  # at most four redraws a second, however fast the iterations come

    def __init__(self):
        import pyqtgraph as pg

        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setToolTip("each loss of the run, smoothed over 1 % of its length")
        self.plot = pg.PlotWidget(background="#262930")
        self.plot.setMinimumHeight(150)
        self.plot.setLabel("bottom", "iteration")
        self.plot.setLabel("left", "loss (log)")
        self.plot.setLogMode(y=True)  # losses of very different sizes (L1 ~0.1, consistency ~100) all stay visible
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMouseEnabled(x=True, y=False)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot)
        self.series: dict[str, list[float]] = {}
        self.iterations: list[int] = []
        self._curves: dict = {}
        self._drawn = 0.0

    def sizeHint(self):  # noqa: N802 - Qt's name; a modest plot, so the dock does not have to scroll for it
        from qtpy.QtCore import QSize

        return QSize(300, 220)

    def add(self, iteration: int, losses: dict) -> None:
        self.iterations.append(int(iteration))
        for k, v in losses.items():
            self.series.setdefault(k, []).append(float(v))
        if time.monotonic() - self._drawn >= self.REDRAW_S:
            self.redraw()

    def clear(self) -> None:
        self.series, self.iterations = {}, []
        self.plot.clear()
        self._curves = {}
        self.legend.setText("")

    def redraw(self) -> None:
        import pyqtgraph as pg

        self._drawn = time.monotonic()
        colors = {}
        for i, (name, values) in enumerate(self.series.items()):
            v = np.asarray(values, dtype=np.float64)
            win = max(1, len(v) // 100)
            smooth = np.convolve(v, np.ones(win) / win, mode="valid")
            xs = np.asarray(self.iterations[win - 1 : win - 1 + len(smooth)], dtype=np.float64)
            color = LOSS_COLORS[i % len(LOSS_COLORS)]
            colors[name] = color
            if name not in self._curves:
                self._curves[name] = self.plot.plot(pen=pg.mkPen(color, width=1.5))
            self._curves[name].setData(xs[: len(smooth)], np.maximum(smooth, 1e-6))  # a log axis has no zero
        self.legend.setText("  ".join(f'<span style="color:{c}">━ {n}</span>' for n, c in colors.items()))


class TrainWidget(JobWidget):
    """Train a denoiser in the background with progress, loss curve, preview, Pause and Stop."""

    what = "Training"
    ESTIMATE_DELAY_MS = 800  # after the last change of a setting that changes the time per iteration

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "Start", cancel_text="Stop (saves a checkpoint)",
                         run_tip="start training in the background; the loss curve and a preview layer show how it goes",
                         cancel_tip="stop after the iteration in progress and save a checkpoint; 'continue the run' "
                                    "resumes it")
        self._mode = ComboBox(choices=[CYCLEGAN, PAIRED_SIM, SELF], value=CYCLEGAN, label="method",
                              tooltip="CycleGAN: your noisy frames to a target set; paired: simulated pairs; self-supervised: "
                                      "your noisy frames alone (structured Noise2Void, no targets needed)")
        self._noisy_layers = Select(choices=self._image_choices, label="noisy layers",
                                    tooltip="the noisy frames to train on (2-D image layers; Ctrl/Shift-click for several)")
        self._noisy_dir = FileEdit(mode="d", value="", label="or noisy folder",
                                   tooltip="a folder of noisy frames (TIFF), instead of or as well as the layers")
        self._clean_dir = FileEdit(mode="d", value="", label="targets (trainB)",
                                   tooltip="the clean targets: the trainB folder of a target set (Target set dock)")
        self._sim_period = FloatSpinBox(value=12.0, min=3.0, max=100.0, step=0.5, label="simulated period (px)",
                                        tooltip="atom-column spacing in pixels of the simulated noisy/clean pairs")
        self._out = FileEdit(mode="d", value="", label="output folder",
                             tooltip="where the run writes its checkpoints, loss log and denoiser.safetensors")
        self._resume = CheckBox(value=False, text="continue the run in the output folder",
                                tooltip="resume a stopped run from its last checkpoint, with the settings it began with")
        self._iters = SpinBox(value=2000, min=1, max=10_000_000, label="iterations",
                              tooltip="training steps; the estimate below is this times the measured time per step")
        self._estimate = Label(value="", label="")
        self._preset = ComboBox(choices=sorted(PRESETS), value="default", label="model",
                                tooltip="default: the bundled model's architecture, fine-tuned from its weights; small: a "
                                        "0.5 M-parameter generator from scratch (CPU); reference: the reference CycleGAN's "
                                        "resnet_9blocks from scratch (GPU)")
        self._crop = SpinBox(value=PRESETS["default"]["crop"], min=16, max=1024, step=16, label="crop (px)",
                             tooltip="side of the random square crops trained on; larger crops see more context but "
                                     "each step takes longer")
        self._consistency = FloatSpinBox(value=10.0, min=0.0, max=1000.0, step=0.5, label="consistency weight",
                                         tooltip="the output must explain each noisy frame within its noise at the atom-column "
                                                 "scale: inventing or erasing a column costs its z^2; 0: the reference method")
        self._device = ComboBox(choices=available_devices(), value="auto", label="device",
                                tooltip="auto: the GPU when there is one, else the CPU (CPU runs take about an hour)")
        self._report = CheckBox(value=True, text="fidelity report at the end",
                                tooltip="the trained model beside the bundled one: flagged pixels on your frames and the quick "
                                        "fidelity scenes (vacancies, dopants, vacuum, dents); a warning where it is worse")
        self._pause = PushButton(text="Pause", enabled=False, tooltip="pause between two iterations; Continue goes on")
        run, stop, bar, status = self.run_controls()
        self.extend([self._mode, self._noisy_layers, self._noisy_dir, self._clean_dir, self._sim_period, self._out,
                     self._resume, self._iters, self._estimate, run, self._pause, stop, bar, status])
        self.add_section([self._preset, self._crop, self._consistency, self._device, self._report])
        self._estimate.native.setWordWrap(True)
        self.plot = LossPlot()
        self.body.layout().addWidget(self.plot)
        self._preset.changed.connect(lambda name: setattr(self._crop, "value", PRESETS[name]["crop"]))
        self._pause.clicked.connect(lambda *_: self.toggle_pause())
        self._mode.changed.connect(self._on_mode)
        remember("train", {"method": self._mode, "output folder": self._out, "iterations": self._iters,
                           "model": self._preset, "crop": self._crop, "consistency": self._consistency,
                           "device": self._device, "report": self._report, "simulated period": self._sim_period})
        self._on_mode()
        # the time estimate: measured in a worker once the settings rest (and the dock is on screen)
        self._step_time: dict[tuple, float | None] = {}  # seconds per iteration by settings; None: could not measure
        self._estimate_worker = None
        self._estimate_timer = QTimer()
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(self.ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self.update_estimate)
        self.native.destroyed.connect(self._estimate_timer.stop)
        for w in (self._mode, self._preset, self._crop, self._consistency, self._device):
            w.changed.connect(lambda *_: self._estimate_timer.start())
        self._iters.changed.connect(lambda *_: self._show_estimate())
        self._resume.changed.connect(lambda *_: self._show_estimate())
        self._estimate_timer.start()
        # Closing the widget or napari: stop after the current iteration so the checkpoint is complete.
        # The slot captures no reference to this (then deleted) widget, only the flag and the worker holder.
        holder = self._running = {"worker": None}
        self.native.destroyed.connect(lambda *_: _shutdown(holder, detach=True))
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(lambda: _shutdown(holder, detach=True, wait=True))
        self._noisy_layers.native.setMaximumHeight(90)  # a few layers; it scrolls for more
        self.fit_width(stretch=False)  # the loss plot takes the room below

    # ------------------------------------------------------------------ the time estimate
    def _estimate_config(self) -> TrainConfig:
        mode = {CYCLEGAN: "cyclegan", PAIRED_SIM: "paired", SELF: "n2v"}[self._mode.value]
        return TrainConfig.from_preset(self._preset.value, mode=mode, crop=int(self._crop.value), device=self._device.value,
                                       lambda_consistency=float(self._consistency.value), init="scratch")

    def _estimate_key(self) -> tuple:
        return (self._mode.value, self._preset.value, int(self._crop.value), float(self._consistency.value) > 0,
                self._device.value)

    def update_estimate(self, force: bool = False):
        """Measure the time per iteration of the chosen settings in a worker (not while training, nor while the dock is
        hidden, unless ``force``); returns the worker, or None when nothing needed measuring."""
        key = self._estimate_key()
        if key in self._step_time:
            self._show_estimate()
            return None
        if not force and (self.running or not self.native.isVisible()):
            self._estimate_timer.start(2000)  # ask again later
            return None
        if self._estimate_worker is not None:  # one at a time; the newest settings are measured after it
            self._estimate_timer.start()
            return None
        try:
            cfg = self._estimate_config()
        except (TrainingError, ValueError) as exc:
            self._estimate.value = f"no time estimate: {exc}"
            return None
        from napari.qt.threading import create_worker

        from ..train import seconds_per_iteration

        self._estimate.value = "measuring the time per iteration…"
        worker = create_worker(seconds_per_iteration, cfg, _ignore_errors=True)
        self._estimate_worker = worker

        def measured(seconds: float) -> None:
            self._step_time[key] = seconds
            self._show_estimate()

        def failed(exc) -> None:
            self._step_time[key] = None  # said once; not measured again and again
            if self._estimate_key() == key:
                self._estimate.value = f"no time estimate: {exc}"

        def done() -> None:
            self._estimate_worker = None
            if self._estimate_key() not in self._step_time:
                self._estimate_timer.start()

        worker.returned.connect(measured)
        worker.errored.connect(failed)
        worker.finished.connect(done)
        worker.start()
        return worker

    def _show_estimate(self) -> None:
        key = self._estimate_key()
        if key not in self._step_time:  # not measured yet
            return
        seconds = self._step_time[key]
        if seconds is None:
            if not self._estimate.value.startswith("no time estimate"):  # keep the reason said when it failed
                self._estimate.value = "no time estimate: these settings could not be measured"
            return
        if self._resume.value:
            self._estimate.value = f"{seconds:.2f} s per iteration measured here; the run goes on from its checkpoint"
            return
        total = seconds * int(self._iters.value)
        self._estimate.value = (f"about {_duration(total)} for {int(self._iters.value)} iterations "
                                f"({seconds:.2f} s per iteration, measured here)")

    def _on_mode(self, *_) -> None:
        """Only the fields the chosen method uses are shown."""
        mode = self._mode.value
        self._noisy_layers.visible = self._noisy_dir.visible = mode in (CYCLEGAN, SELF)
        self._clean_dir.visible = mode == CYCLEGAN
        self._sim_period.visible = mode == PAIRED_SIM

    def _image_choices(self, *_):
        return [layer.name for layer in self._viewer.layers if isinstance(layer, napari.layers.Image)
                and layer.ndim == 2 and "preview" not in layer.name]

    # ------------------------------------------------------------------ inputs
    def _read_folder(self, folder: Path) -> tuple[list[np.ndarray], list[str]]:
        files = expand_tiffs([folder])
        return [read_tiff(p).data.astype(np.float32) for p in files], [p.name for p in files]

    def _data(self):
        if self._mode.value == PAIRED_SIM:
            p = float(self._sim_period.value)
            sims = [simulate(size=(256, 256), period=p * s, dose=d, dents=1, seed=i)
                    for i, (s, d) in enumerate([(1.0, 2.0), (1.0, 5.0), (1.0, 12.0), (1.0, 25.0)])]
            return [s.noisy for s in sims], [s.clean for s in sims], None, None, "paired", p
        noisy = [np.asarray(self._viewer.layers[n].data, dtype=np.float32) for n in self._noisy_layers.value]
        names = list(self._noisy_layers.value)
        folder = chosen_path(self._noisy_dir.value)
        if folder is not None:
            more, more_names = self._read_folder(folder)
            noisy, names = noisy + more, names + more_names
        if self._mode.value == SELF:
            if not noisy:
                raise TrainingError("choose noisy layers or a noisy folder to train on")
            return noisy, [], names, [], "n2v", None
        clean_dir = chosen_path(self._clean_dir.value)
        if clean_dir is None:
            raise TrainingError("choose the target folder (trainB of a target set) for CycleGAN training")
        clean, clean_names = self._read_folder(clean_dir)
        return noisy, clean, names, clean_names, "cyclegan", None

    # ------------------------------------------------------------------ running
    def start(self):
        out = chosen_path(self._out.value)
        if out is None:
            show_error("Choose an output folder for the run first.")
            return None
        try:
            noisy, clean, names, clean_names, mode, period = self._data()
            cfg = None
            if not self._resume.value:
                preset = self._preset.value
                cfg = TrainConfig.from_preset(preset, mode=mode, iterations=int(self._iters.value),
                                              crop=int(self._crop.value), device=self._device.value, period=period,
                                              init="bundled" if preset == "default" else "scratch",
                                              lambda_consistency=float(self._consistency.value))
        except (TrainingError, ImageFileError, ValueError) as exc:
            show_error(str(exc))
            return None
        self.plot.clear()
        self._out_dir = out
        self.cancelled = f"checkpoint saved in {out}"
        self._status.value = "reading the images and building the model…"
        # inputs are checked by the job before its first iteration; a problem arrives as `errored`
        worker = self.launch(train_with_report, noisy, clean, out, cfg, report=bool(self._report.value),
                             noisy_names=names, clean_names=clean_names, resume=self._resume.value)
        self._running["worker"] = worker
        return worker

    def on_result(self, result) -> None:
        path, report = result
        self._status.value = f"finished: {path}"
        if report is None:
            show_info(f"Training finished: {path}")
        elif report.warnings:
            self._status.value += "\nWARNING: less faithful than the bundled model:\n" + "\n".join(report.warnings)
            show_warning(f"Training finished, but the model is less faithful than the bundled one "
                         f"({'; '.join(report.warnings)}). See {path.parent / 'fidelity_report.md'}.")
        else:
            self._status.value += "\nfidelity report: at least as faithful as the bundled model on every row"
            show_info(f"Training finished: {path}; fidelity report in {path.parent / 'fidelity_report.md'}")

    def toggle_pause(self) -> None:
        if self._worker is not None:
            pausing = self._pause.text == "Pause"  # the worker pauses at its next iteration
            self._worker.toggle_pause()
            self._pause.text = "Continue" if pausing else "Pause"

    def stop(self, *_) -> None:
        """Stop after the current iteration; the training job saves a checkpoint as it closes."""
        self.cancel()

    def on_event(self, e) -> None:
        if not isinstance(e, TrainEvent):  # preparing (the noise model of each frame), the checkpoint chosen, the report
            if e.stage == "select":  # the run ends with an earlier checkpoint than the last: the user must know
                show_warning(e.message)
            self._status.value = e.message
            return
        self._status.value = f"iteration {e.iteration}/{e.total}, {_duration(e.elapsed)}, about {_duration(e.eta)} left"
        self.plot.add(e.iteration, e.losses)
        if e.preview is not None:
            if "training preview" in self._viewer.layers:
                self._viewer.layers["training preview"].data = e.preview
            else:
                first = next((self._viewer.layers[n] for n in self._noisy_layers.value if n in self._viewer.layers), None)
                extra = geometry(first, translate=False) if first is not None else {}
                self._viewer.add_image(e.preview, name="training preview", **extra,
                                       metadata={"source_layer": first.name if first is not None else None,
                                                 "run_folder": str(self._out_dir),
                                                 "made_by": "the generator being trained, on a fixed crop of the "
                                                            "first noisy frame"})

    def _finished(self) -> None:
        self._running["worker"] = None
        self.plot.redraw()
        super()._finished()
        if self._status.value.startswith("iteration"):  # stopped: no time is left to wait for
            self._status.value = f"stopped at {self._status.value.split(',')[0]}; checkpoint in {self._out_dir}"

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self._progress.visible = True
        self._pause.enabled = running
        self._pause.text = "Pause"
