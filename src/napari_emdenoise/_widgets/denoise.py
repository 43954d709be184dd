"""Plugins > EM Denoise > Denoise: one button that runs the core ``iter_denoise`` in a thread.

The widget holds no numerics: it gathers settings, starts a napari worker over the core
generator followed by the core ``check`` (its progress events drive the bar; Cancel quits the
worker, which closes the generator in its own thread) and adds ``<name> denoised`` when the
worker returns, with the check's one-line verdict under the button, its summary in the
layer's ``metadata["consistency"]`` and, when asked for, the ``<name> consistency`` z map.
Warnings from the core (rescaling, NaN pixels) reach the user as napari notifications.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, Label, SpinBox, create_widget
from napari.utils.notifications import show_error

from ..checkpoints import CheckpointError, model_info
from ..consistency import Consistency, ConsistencyError, check
from ..inference import DEFAULT_MODEL, available_devices, iter_denoise, resolve_model
from ..lattice import estimate_period
from ._common import current_plane
from ._worker import ClosingWorker
from .base import JobWidget

BUNDLED = "bundled default"
FILE = "checkpoint file"


def _denoise_and_check(data, model, **kwargs):
    """``iter_denoise``'s progress events, then the consistency check of its result, all in the worker thread.

    Returns ``(result, Consistency)``, or ``(result, ConsistencyError)`` when the pair cannot be checked.
    """
    result = yield from iter_denoise(data, model, **kwargs)
    try:
        cons = check(data, result)
    except ConsistencyError as exc:
        cons = exc
    return result, cons


class DenoiseWidget(JobWidget):
    """Denoise the selected image layer (its current slice or the whole stack)."""

    what = "Denoising"
    cancelled = "no layer was added."

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "Denoise")
        self._model = None  # the loaded generator, cached between runs
        self._model_key: str | None = None

        self._image = create_widget(annotation=napari.layers.Image, label="image")
        sources = [BUNDLED, FILE] if DEFAULT_MODEL.exists() else [FILE]
        self._source = ComboBox(choices=sources, value=sources[0], label="model")
        self._file = FileEdit(mode="r", filter="Checkpoints (*.pth *.safetensors)", label="checkpoint")
        self._model_label = Label(value="", label="")
        self._tile = SpinBox(value=512, min=0, max=8192, step=32, label="tile (px)", tooltip="0: whole image in one pass")
        self._overlap = SpinBox(value=64, min=0, max=1024, step=8, label="overlap (px)")
        self._device = ComboBox(choices=available_devices(), value="auto", label="device")
        self._rescale = CheckBox(value=True, text="match the model's scale")
        self._period = FloatSpinBox(value=0.0, min=0.0, max=1000.0, step=0.1, label="period (px)",
                                    tooltip="lattice period of the image; 0: estimate it")
        self._period_label = Label(value="", label="")
        self._stack = CheckBox(value=False, text="whole stack (not only the current slice)")
        self._invert = CheckBox(value=False, text="invert contrast (bright-field / ABF)",
                                tooltip="for images whose atom columns are darker than the background: denoised as ADF "
                                        "contrast, the result turned back")
        self._map = CheckBox(value=False, text="add consistency map layer",
                             tooltip="z: data minus output in units of the noise (bwr colormap, ±2 x threshold); "
                                     "red: the data are brighter (something erased), blue: the output is "
                                     "brighter (something invented)")
        self.extend([
            self._image, self._source, self._file, self._model_label, self._tile, self._overlap, self._device,
            self._rescale, self._period, self._period_label, self._stack, self._invert, self._map, *self.run_controls(),
        ])
        self._file.visible = self._source.value == FILE
        self._source.changed.connect(self._on_source)
        self._file.changed.connect(self._on_model_changed)
        self._image.changed.connect(self._on_image)
        self._on_model_changed()
        self._on_image()

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
        layer = self._image.value
        self._stack.visible = layer is not None and layer.ndim > 2
        if layer is None:
            self._period_label.value = ""
            return
        if getattr(layer, "rgb", False):
            self._period_label.value = "a colour (RGB) layer: denoising needs a grey image"
            return
        est = estimate_period(current_plane(self._viewer, layer))
        self._period_label.value = (
            f"estimated {est.period:.2f} px" if est.found else "no clear lattice found: will not rescale"
        )

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
        whole_stack = layer.ndim > 2 and self._stack.value
        data = np.asarray(layer.data) if (layer.ndim == 2 or whole_stack) else current_plane(self._viewer, layer)
        ndim_out = data.ndim
        meta = {
            "name": f"{layer.name} denoised",
            "scale": tuple(layer.scale[-ndim_out:]),
            "translate": tuple(layer.translate[-ndim_out:]),
            "metadata": {"source_layer": layer.name, "model": model_info(self._model).source or BUNDLED},
        }
        units = getattr(layer, "units", None)
        if units is not None:
            meta["units"] = tuple(units[-ndim_out:])
        self._pending = (meta, f"{layer.name} consistency" if self._map.value else None)
        self._status.value = ""
        return self.launch(
            _denoise_and_check, data, self._model, tile=self._tile.value or None, overlap=self._overlap.value,
            device=self._device.value, period=self._period.value or None, rescale=self._rescale.value,
            invert=self._invert.value,
        )

    def on_result(self, out: tuple[np.ndarray, Consistency | ConsistencyError]) -> None:
        result, cons = out
        meta, map_name = self._pending
        if isinstance(cons, ConsistencyError):
            self._viewer.add_image(result, **meta)
            self._status.value = f"the check could not run: {cons}"
            return
        summary = cons.summary()
        self._viewer.add_image(result, **{**meta, "metadata": {**meta["metadata"], "consistency": summary}})
        self._status.value = cons.text()
        if map_name is not None:
            limit = 2 * cons.threshold
            extra = {"units": meta["units"]} if "units" in meta else {}
            self._viewer.add_image(
                cons.z, name=map_name, scale=meta["scale"], translate=meta["translate"], colormap="bwr",
                contrast_limits=(-limit, limit), **extra,
                metadata={"source_layer": meta["metadata"]["source_layer"], "consistency": summary},
            )
