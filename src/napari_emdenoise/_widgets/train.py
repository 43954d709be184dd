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

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, Select, SpinBox
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QApplication, QWidget

from ..inference import available_devices
from ..io import ImageFileError, expand_tiffs, read_tiff
from ..simulate import simulate
from ..train import (
    LOSS_COLORS,
    PRESETS,
    TrainConfig,
    TrainEvent,
    TrainingError,
    loss_curves,
)
from ..train_report import train_with_report
from ._common import chosen_path, geometry
from .base import JobWidget

CYCLEGAN = "CycleGAN: noisy -> target folder"
PAIRED_SIM = "paired: simulated pairs"
SELF = "self-supervised: noisy frames only"


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
    """A minimal live loss curve (no plotting library needed)."""

    def __init__(self):
        super().__init__()
        self.setMinimumHeight(140)
        self.series: dict[str, list[float]] = {}

    def add(self, losses: dict) -> None:
        for k, v in losses.items():
            self.series.setdefault(k, []).append(float(v))
        self.update()

    def clear(self) -> None:
        self.series = {}
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#262930"))
        if not self.series:
            return
        pad = 6
        for i, (name, (xs, ys)) in enumerate(loss_curves(self.series, self.width(), self.height(), pad).items()):
            p.setPen(QPen(QColor(LOSS_COLORS[i % len(LOSS_COLORS)]), 1.5))
            p.drawPolyline(QPolygonF([QPointF(x, y) for x, y in zip(xs, ys)]))
            p.drawText(pad + 4, 14 + 14 * i, name)


class TrainWidget(JobWidget):
    """Train a denoiser in the background with progress, loss curve, preview, Pause and Stop."""

    what = "Training"

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "Start", cancel_text="Stop (saves a checkpoint)")
        self._mode = ComboBox(choices=[CYCLEGAN, PAIRED_SIM, SELF], value=CYCLEGAN, label="method",
                              tooltip="CycleGAN: your noisy frames to a target set; paired: simulated pairs; self-supervised: "
                                      "your noisy frames alone (structured Noise2Void, no targets needed)")
        self._noisy_layers = Select(choices=self._image_choices, label="noisy layers")
        self._noisy_dir = FileEdit(mode="d", value="", label="or noisy folder")
        self._clean_dir = FileEdit(mode="d", value="", label="target folder (trainB)")
        self._sim_period = FloatSpinBox(value=12.0, min=3.0, max=100.0, step=0.5, label="simulated period (px)")
        self._preset = ComboBox(choices=sorted(PRESETS), value="default", label="model",
                                tooltip="default: the bundled model's architecture, fine-tuned from its weights; small: a "
                                        "0.5 M-parameter generator from scratch (CPU); reference: the reference CycleGAN's "
                                        "resnet_9blocks from scratch (GPU)")
        self._crop = SpinBox(value=PRESETS["default"]["crop"], min=16, max=1024, step=16, label="crop (px)")
        self._consistency = FloatSpinBox(value=10.0, min=0.0, max=1000.0, step=0.5, label="consistency weight",
                                         tooltip="the output must explain each noisy frame within its noise at the atom-column "
                                                 "scale: inventing or erasing a column costs its z^2; 0: the reference method")
        self._iters = SpinBox(value=2000, min=1, max=10_000_000, label="iterations")
        self._device = ComboBox(choices=available_devices(), value="auto", label="device")
        self._out = FileEdit(mode="d", value="", label="output folder")
        self._resume = CheckBox(value=False, text="continue the run in the output folder")
        self._report = CheckBox(value=True, text="fidelity report at the end",
                                tooltip="the trained model beside the bundled one: flagged pixels on your frames and the quick "
                                        "fidelity scenes (vacancies, dopants, vacuum, dents); a warning where it is worse")
        self._pause = PushButton(text="Pause", enabled=False)
        run, stop, bar, status = self.run_controls()
        self.extend([self._mode, self._noisy_layers, self._noisy_dir, self._clean_dir, self._sim_period, self._preset,
                     self._crop, self._consistency, self._iters, self._device, self._out, self._resume, self._report, run, self._pause, stop, bar, status])
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot)
        self._preset.changed.connect(lambda name: setattr(self._crop, "value", PRESETS[name]["crop"]))
        self._pause.clicked.connect(lambda *_: self.toggle_pause())
        self._mode.changed.connect(self._on_mode)
        self._on_mode()
        # Closing the widget or napari: stop after the current iteration so the checkpoint is complete.
        # The slot captures no reference to this (then deleted) widget, only the flag and the worker holder.
        holder = self._running = {"worker": None}
        self.native.destroyed.connect(lambda *_: _shutdown(holder, detach=True))
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(lambda: _shutdown(holder, detach=True, wait=True))

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
        self._status.value = f"iteration {e.iteration}/{e.total}, {e.elapsed:.0f} s, about {e.eta:.0f} s left"
        self.plot.add(e.losses)
        if e.preview is not None:
            if "training preview" in self._viewer.layers:
                self._viewer.layers["training preview"].data = e.preview
            else:
                first = next((self._viewer.layers[n] for n in self._noisy_layers.value if n in self._viewer.layers), None)
                extra = geometry(first, translate=False) if first is not None else {}
                self._viewer.add_image(e.preview, name="training preview", **extra)

    def _finished(self) -> None:
        self._running["worker"] = None
        super()._finished()
        if self._status.value.startswith("iteration"):  # stopped: no time is left to wait for
            self._status.value = f"stopped at {self._status.value.split(',')[0]}; checkpoint in {self._out_dir}"

    def _set_running(self, running: bool) -> None:
        super()._set_running(running)
        self._progress.visible = True
        self._pause.enabled = running
        self._pause.text = "Pause"
