"""Plugins > EM Denoise > Denoise: one button that runs the core ``iter_denoise`` in a thread.

The widget holds no numerics: it gathers settings, starts a napari worker over the core
generator followed by the core ``check`` (its progress events drive the bar; Cancel quits the
worker, which closes the generator in its own thread) and adds ``<name> denoised`` when the
worker returns, with the check's one-line verdict under the button, its summary in the
layer's ``metadata["consistency"]`` and, when asked for, the ``<name> consistency`` z map.
Warnings from the core (rescaling, NaN pixels) reach the user as napari notifications.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, Label, PushButton, SpinBox, create_widget
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QApplication

from ..checkpoints import CheckpointError, model_info
from ..consistency import Consistency, ConsistencyError, UnfollowedOutput, check, in_denoising
from ..refit import Refit, refit_columns
from ..inference import DEFAULT_MODEL, available_devices, iter_denoise, resolve_model
from ..lattice import estimate_period
from ._common import current_plane
from ._settings import remember
from ._worker import ClosingWorker
from .base import JobWidget

BUNDLED = "bundled default"
FILE = "checkpoint file"


def _denoise_and_check(data, model, refit: bool = False, **kwargs):
    """``iter_denoise``'s progress events, then (with ``refit``) each column's height refit to the data, then the
    consistency check of the result, all in the worker thread.

    Returns ``(result, Consistency or ConsistencyError, Refit or ConsistencyError or None)``: an error where that step
    could not run (the result is then the network's output as it is).
    """
    from ..jobs import Event

    result = yield from iter_denoise(data, model, **kwargs)
    fit = None
    if refit:
        yield Event(1, 1, "refit", "refitting each column's height to the data")
        try:
            fit = refit_columns(data, result, invert=kwargs.get("invert", False))
            result = fit.image
        except ConsistencyError as exc:
            fit = exc
    try:
        cons = check(data, result)
    except ConsistencyError as exc:
        cons = exc
    return result, cons, fit


def _denoise_lazy(data, model, index, **kwargs):
    """Build the lazy result of a dask-backed layer and compute the slice the user looks at (all of a 2-D image), in the
    worker thread. Returns ``(lazy result, that slice)``."""
    from ..inference import denoise
    from ..jobs import Event
    from ..lazy import iter_compute

    yield Event(0, 1, "denoise", "sampling the image")
    lazy = denoise(data, model, **kwargs)
    shown = yield from iter_compute(lazy, index)
    return lazy, shown


class DenoiseWidget(JobWidget):
    """Denoise the selected image layer (its current slice or the whole stack)."""

    what = "Denoising"
    cancelled = "no layer was added."

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "Denoise",
                         run_tip="denoise the chosen image (its current slice, or the whole stack) and add the result "
                                 "as '<name> denoised', checked against the data")
        self._model = None  # the loaded generator, cached between runs
        self._model_key: str | None = None

        self._image = create_widget(annotation=napari.layers.Image, label="image",
                                    options={"tooltip": "the noisy ADF/HAADF image layer to denoise"})
        sources = [BUNDLED, FILE] if DEFAULT_MODEL.exists() else [FILE]
        self._source = ComboBox(choices=sources, value=sources[0], label="model",
                                tooltip="bundled default: trained on varied simulated specimens (see its model card); "
                                        "checkpoint file: a model you trained, or a reference CycleGAN *_net_G_A.pth")
        self._file = FileEdit(mode="r", filter="Checkpoints (*.pth *.safetensors)", label="checkpoint",
                              tooltip="a denoiser.safetensors from 'Train', or a reference CycleGAN *_net_G_A.pth")
        self._model_label = Label(value="", label="")
        self._period = FloatSpinBox(value=0.0, min=0.0, max=1000.0, step=0.1, label="period (px)",
                                    tooltip="distance between neighbouring atom columns in pixels; 0: estimated from "
                                            "the image (shown below)")
        self._period_label = Label(value="", label="")
        self._stack = CheckBox(value=False, text="whole stack",
                               tooltip="denoise every slice of the stack, not only the one on screen")
        self._invert = CheckBox(value=False, text="invert contrast (BF / ABF)",
                                tooltip="for bright-field or ABF images, whose atom columns are darker than the "
                                        "background: denoised as ADF contrast, then turned back")
        self._map = CheckBox(value=False, text="add consistency map",
                             tooltip="a second layer, z = data minus output in units of the noise (bwr colormap, "
                                     "±2 x threshold): red where the data are brighter (something erased), blue "
                                     "where the output is brighter (something invented)")
        self._refit = CheckBox(value=True, text="column heights from the data",
                               tooltip="refit each atom column of the result to the counts (a least-squares fit per "
                                       "column): a network that fills an empty site or pulls a column towards its "
                                       "neighbours is corrected, at the cost of each column keeping its own noise; "
                                       "off: the network's output as it is")
        self._tile = SpinBox(value=512, min=0, max=8192, step=32, label="tile (px)",
                             tooltip="an image too large for one pass in the memory available is denoised in tiles "
                                     "of this size (enlarged if the network needs more context), blended seamlessly; "
                                     "smaller tiles need less memory; 0: always the whole image in one pass")
        self._overlap = SpinBox(value=64, min=0, max=1024, step=8, label="overlap (px)",
                                tooltip="how far neighbouring tiles overlap; the blend hides their seams")
        self._device = ComboBox(choices=available_devices(), value="auto", label="device",
                                tooltip="auto: the GPU when there is one, else the CPU")
        self._rescale = CheckBox(value=True, text="match the model's scale",
                                 tooltip="resample the image to the pixels per atom column the model was trained at "
                                         "and back, when its period lies outside the model's range")
        self._compile = CheckBox(value=False, text="compile the network",
                                 tooltip="torch.compile: about twice as fast on a CPU once compiled, for 10-20 s of "
                                         "compiling at each new image size; worth it for a whole stack, not for one image "
                                         "(no layer-by-layer progress while it runs; not for lazy layers)")
        self._all = PushButton(text="Denoise all slices", visible=False,
                               tooltip="compute every slice of the lazy result now, in the background, and keep it in memory")
        self._lazy_layer = None  # the lazy result layer that 'Denoise all slices' computes
        self._period_worker = None  # the period estimate of the chosen layer, running in a thread
        self._estimates: list[threading.Event] = []  # one per period estimate started and not yet known to be done
        self.extend([
            self._image, self._source, self._file, self._model_label, self._period, self._period_label, self._stack,
            self._invert, self._refit, self._map, *self.run_controls(), self._all,
        ])
        self.add_section([self._tile, self._overlap, self._device, self._rescale, self._compile])
        for label in (self._model_label, self._period_label):
            label.native.setWordWrap(True)
        # not 'invert': it belongs to each image, and remembered it wrecked the next session's ADF images unasked
        remember("denoise", {"model": self._source, "checkpoint": self._file, "tile": self._tile,
                             "overlap": self._overlap, "device": self._device, "rescale": self._rescale,
                             "consistency map": self._map, "compile": self._compile,
                             "refit": self._refit})
        self._all.changed.connect(self.start_all)
        self._file.visible = self._source.value == FILE
        self._source.changed.connect(self._on_source)
        self._file.changed.connect(self._on_model_changed)
        self._image.changed.connect(self._on_image)
        self._on_model_changed()
        self._on_image()
        # closing napari removes the layers, which starts estimates: wait for the last, so no thread outlives Qt
        estimates = self._estimates

        def wait_for_estimates(*_) -> None:
            for done in list(estimates):
                done.wait(10)

        self.native.destroyed.connect(wait_for_estimates)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(wait_for_estimates)
        self.fit_width()

    # ------------------------------------------------------------------ settings
    def _on_source(self, *_):
        self._file.visible = self._source.value == FILE
        self._on_model_changed()

    def _model_path(self) -> Path | None:
        if self._source.value == BUNDLED:
            return None
        path = Path(self._file.value)
        return path if path.is_file() else None

    def _on_model_changed(self, *_) -> None:
        """Load the chosen model now, so a bad file is reported before the user presses Denoise."""
        self._model = None
        path = self._model_path()
        if path is None and self._source.value == FILE:
            self._model_label.value = "choose a *_net_G_A.pth or .safetensors file"
            return
        try:
            self._model = resolve_model(path)
        except (CheckpointError, FileNotFoundError) as exc:
            self._model_label.value = "no usable model"
            show_error(str(exc))
            return
        info = model_info(self._model)
        c = info.config
        if info.period_range:
            period = f", trained at {info.period_range[0]:.1f}-{info.period_range[1]:.1f} px/period"
        else:
            period = f", trained at {info.period:.1f} px/period" if info.period else ""
        kind = ", residual" if c.residual else ""
        self._model_label.value = f"{c.netG}{kind}, ngf {c.ngf}, {c.norm} norm{period}"

    def _on_image(self, *_) -> None:
        from ..lazy import is_dask

        layer = self._image.value
        self._period_worker = None  # an estimate still running for the layer chosen before is ignored
        self._stack.visible = layer is not None and layer.ndim > 2 and not is_dask(layer.data)
        if layer is None:
            self._period_label.value = ""
            return
        if getattr(layer, "rgb", False):
            self._period_label.value = "a colour (RGB) layer: denoising needs a grey image"
            return
        # in a worker: reading a lazy layer's slice and the estimate stay off napari's thread
        from napari.qt.threading import create_worker

        self._period_label.value = "estimating the lattice period..."
        self._estimates[:] = [e for e in self._estimates if not e.is_set()]
        done = threading.Event()
        self._estimates.append(done)

        def estimate():
            try:
                return estimate_period(current_plane(self._viewer, layer))
            finally:
                done.set()

        worker = create_worker(estimate, _ignore_errors=True)
        self._period_worker = worker

        def shown(est, worker=worker) -> None:
            if worker is self._period_worker:  # the answer for the layer still chosen
                with contextlib.suppress(RuntimeError):  # the dock was closed meanwhile
                    self._period_label.value = (f"estimated {est.period:.2f} px" if est.found
                                                else "no clear lattice found: will not rescale")

        def failed(exc, worker=worker) -> None:
            if worker is self._period_worker:
                with contextlib.suppress(RuntimeError):
                    self._period_label.value = f"the period could not be estimated: {exc}"

        worker.returned.connect(shown)
        worker.errored.connect(failed)
        worker.start()

    # ------------------------------------------------------------------ running
    def start(self) -> ClosingWorker | None:
        """Start denoising in a worker thread; returns the worker (None if nothing could start)."""
        layer = self._image.value
        if layer is None:
            show_error("Add or open an image layer first.")
            return None
        if getattr(layer, "rgb", False):
            show_error(f"'{layer.name}' is a colour (RGB) layer: denoising needs one grey channel. Convert it first, "
                       "e.g. Layers > Split RGB, and pick one channel.")
            return None
        if self._model is None:
            self._on_model_changed()
            if self._model is None:
                show_error(f"No model to denoise with: {self._model_label.value}.")
                return None
        from ..lazy import is_dask

        if getattr(layer, "multiscale", False):
            show_error(f"'{layer.name}' is a multiscale (pyramid) layer; open its full-resolution level as its own layer.")
            return None
        kwargs = dict(tile=self._tile.value or None, overlap=self._overlap.value, device=self._device.value,
                      period=self._period.value or None, rescale=self._rescale.value, invert=self._invert.value)
        if is_dask(layer.data):  # lazy: the result is computed per slice as the user browses
            index = self._slice_index(layer) if layer.ndim > 2 else ()
            meta = self._layer_meta(layer, layer.ndim)
            meta["metadata"]["settings"] = kwargs
            self._pending = ("lazy", meta, index)
            self._status.value = ""
            return self.launch(_denoise_lazy, layer.data, self._model, index, **kwargs)
        kwargs["compile"] = self._compile.value  # (in memory only: a lazy layer's chunks go through the network as it is)
        whole_stack = layer.ndim > 2 and self._stack.value
        data = np.asarray(layer.data) if (layer.ndim == 2 or whole_stack) else current_plane(self._viewer, layer)
        meta = self._layer_meta(layer, data.ndim)
        meta["metadata"]["settings"] = {**kwargs, "refit": self._refit.value}
        if layer.ndim > 2 and not whole_stack:
            meta["metadata"]["source_slice"] = self._slice_index(layer)
        self._pending = ("memory", meta, f"{layer.name} consistency" if self._map.value else None)
        self._status.value = ""
        return self.launch(_denoise_and_check, data, self._model, refit=self._refit.value, **kwargs)

    def start_all(self, *_) -> ClosingWorker | None:
        """Compute every slice of the lazy result layer in a worker; the layer then holds the result in memory."""
        from ..lazy import is_dask, iter_compute

        layer = self._lazy_layer
        if layer is None or layer not in self._viewer.layers or not is_dask(layer.data):
            self._all.visible = False
            return None
        if self.running:
            return None
        self._pending = ("all", layer)
        self._status.value = ""
        return self.launch(iter_compute, layer.data)

    def _slice_index(self, layer) -> tuple[int, ...]:
        """The index of the slice of ``layer`` on screen (its leading axes)."""
        index = layer.world_to_data(self._viewer.dims.point)[: layer.ndim - 2]
        return tuple(int(np.clip(round(i), 0, n - 1)) for i, n in zip(index, layer.data.shape))

    def _layer_meta(self, layer, ndim_out: int) -> dict:
        meta = {
            "name": f"{layer.name} denoised",
            "scale": tuple(layer.scale[-ndim_out:]),
            "translate": tuple(layer.translate[-ndim_out:]),
            "metadata": {"source_layer": layer.name, "model": model_info(self._model).source or BUNDLED},
        }
        units = getattr(layer, "units", None)
        if units is not None:
            meta["units"] = tuple(units[-ndim_out:])
        return meta

    def on_result(self, out) -> None:
        kind = self._pending[0]
        if kind == "lazy":
            self._lazy_result(*out)
        elif kind == "all":
            layer = self._pending[1]
            if layer in self._viewer.layers:
                layer.data = out
                layer.metadata = {**layer.metadata, "lazy": False}
            self._all.visible = False
            self._status.value = f"all {out.shape[0] if out.ndim > 2 else 1} slice(s) of '{layer.name}' computed"
        else:
            self._memory_result(*out)

    def _lazy_result(self, lazy, shown: np.ndarray) -> None:
        meta = self._pending[1]
        finite = shown[np.isfinite(shown)]
        limits = tuple(float(v) for v in np.percentile(finite, [0.5, 99.5])) if finite.size else (0.0, 1.0)
        if not limits[1] > limits[0]:
            limits = (limits[0], limits[0] + 1.0)
        if lazy.ndim == 2:  # a 2-D image was computed whole: keep it in memory
            self._viewer.add_image(shown, **meta, contrast_limits=limits)
            self._status.value = ("denoised chunk by chunk (lazy input); not checked for consistency" +
                                  (", column heights not refit" if self._refit.value else ""))
            return
        meta["metadata"] = {**meta["metadata"], "lazy": True}
        self._lazy_layer = self._viewer.add_image(lazy, **meta, contrast_limits=limits)
        self._all.visible = True
        self._status.value = ("lazy result: each slice is denoised when shown; 'Denoise all slices' computes the rest "
                              "in the background")

    def _memory_result(self, result: np.ndarray, cons: Consistency | ConsistencyError,
                       fit: Refit | ConsistencyError | None = None) -> None:
        meta, map_name = self._pending[1], self._pending[2]
        if fit is not None:
            meta = {**meta, "metadata": {**meta["metadata"], "refit": fit.summary() if isinstance(fit, Refit) else str(fit)}}
        refit_text = ("" if fit is None else f"; {fit.text()}" if isinstance(fit, Refit)
                      else f"; column heights not refit (the network's output as it is): {in_denoising(fit)}")
        if isinstance(cons, ConsistencyError):
            self._viewer.add_image(result, **meta)
            self._status.value = f"the check could not run: {in_denoising(cons)}{refit_text}"
            if isinstance(cons, UnfollowedOutput):
                show_error(f"{self.what}: {in_denoising(cons)}.")
            return
        summary = cons.summary()
        self._viewer.add_image(result, **{**meta, "metadata": {**meta["metadata"], "consistency": summary}})
        self._status.value = cons.text() + refit_text
        if map_name is not None:
            limit = 2 * cons.threshold
            extra = {"units": meta["units"]} if "units" in meta else {}
            self._viewer.add_image(
                cons.z, name=map_name, scale=meta["scale"], translate=meta["translate"], colormap="bwr",
                contrast_limits=(-limit, limit), **extra,
                metadata={"source_layer": meta["metadata"]["source_layer"], "consistency": summary},
            )
