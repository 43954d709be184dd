"""Plugins > EM Denoise > Dent mask: preview a dent mask live, paint corrections, save ``mask.tif``.

* The preview is an Image layer ``<name> dent mask`` over the image, recomputed in a worker
  thread 150 ms after the last slider move (the newest settings win), so a 4096² image
  never freezes the viewer.
* "Make editable" turns the preview into a **Labels** layer ``<name> dent mask (edit)``:
  napari's brush, eraser and fill paint Labels layers only, and a dent mask drawn by hand
  is a region (1 = dent). The preview never touches that layer; remaking it after the user
  painted asks first.
* Save writes the edited region as 255 (0 elsewhere), or the soft preview when nothing
  was made editable, as float32 0–255 through the package's TIFF writer.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSlider,
    Label,
    PushButton,
    Slider,
)
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QMessageBox

from ..io import ImageFileError, safe_stem, write_tiff
from ..masks import (
    DEFAULT_RADIUS,
    PRESETS,
    VARIANTS,
    MaskError,
    MaskParams,
    dent_mask,
    mask_region,
    resolve_params,
)
from ._common import Dock, current_plane, geometry
from ._settings import remember

PRESET_TIPS = {
    "adaptive": "adaptive (recommended): window and blur from the image's own lattice period; the typical specimen "
                "(the median) is the zero, so only clearly darker regions are marked",
    "origin": "origin: the original recipe (window 5 px, threshold 128, image minimum to maximum as 0-255); on a "
              "large image with a small dent it can mark nearly everything",
    "origin-min": "origin-min: the original recipe, then each pixel takes the lowest value around it (shrinks the "
                  "mask's edge)",
    "origin-mean": "origin-mean: the original recipe, then each pixel takes the mean around it (softens the edge)",
}
MOST = 90.0  # % of the image: a mask that marks more is almost certainly not one dent


def ask(parent, question: str) -> bool:
    """Yes/No dialog; tests replace this function."""
    answer = QMessageBox.question(parent, "EM Denoise", question, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


class MaskWidget(Dock):
    """Live dent-mask preview with sliders, an editable Labels layer, and Save."""

    DEBOUNCE_MS = 150

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = napari_viewer
        self._busy = False
        self._dirty = False
        self._bar: progress | None = None
        self._mask: np.ndarray | None = None
        self._params: MaskParams | None = None
        self._image = ComboBox(choices=self._image_choices, label="image",
                               tooltip="the noisy ADF image whose thinner (darker) regions become the dent mask")
        self._preset = ComboBox(choices=sorted(PRESETS), value="adaptive", label="preset",
                                tooltip="\n".join(PRESET_TIPS[k] for k in sorted(PRESETS)))
        self._window = Slider(value=5, min=1, max=301, label="window (px)", tracking=True,
                              tooltip="the image is smoothed over this width first, so the mask follows the dent and "
                                      "not the atom columns (about two lattice periods)")
        self._threshold = Slider(value=128, min=0, max=255, label="threshold",
                                 tooltip="on the 0-255 darkness scale, where the dent begins: raise it to mark less")
        self._sigma = FloatSlider(value=2.0, min=0.0, max=60.0, step=0.5, label="blur sigma (px)",
                                  tooltip="softness of the mask's edge (a Gaussian blur, in pixels)")
        self._variant = ComboBox(choices=VARIANTS, value="plain", label="variant",
                                 tooltip="plain: as computed; min: each pixel takes the lowest value around it (a "
                                         "tighter edge); mean: the mean around it (a smoother edge)")
        self._radius = Slider(value=3, min=1, max=15, label="variant radius",
                              tooltip="how far around each pixel the min or mean variant looks (px)")
        self._status = Label(value="", label="")
        self._status.native.setWordWrap(True)
        self._edit = PushButton(text="Make editable (paint with the brush)",
                                tooltip="turn the preview into a Labels layer you can paint and erase with napari's "
                                        "brush; the sliders then no longer change it")
        self._path = FileEdit(mode="w", value="mask.tif", filter="TIFF (*.tif *.tiff)", label="save to",
                              tooltip="the mask TIFF to write (255 inside the dent, 0 elsewhere), for Target set")
        self._save = PushButton(text="Save mask", tooltip="write the painted mask (or the preview) with the image's "
                                                          "pixel size")
        self.extend([self._image, self._preset, self._threshold, self._status, self._edit, self._path, self._save])
        self.add_section([self._window, self._sigma, self._variant, self._radius], title="Fine tuning",
                         before=self._status)
        remember("mask", {"preset": self._preset, "variant": self._variant})
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_preview)
        self.native.destroyed.connect(self._timer.stop)
        for w in (self._window, self._threshold, self._sigma, self._variant, self._radius):
            w.changed.connect(self._schedule)
        self._variant.changed.connect(self._on_variant)
        self._preset.changed.connect(self._apply_preset)
        self._image.changed.connect(self._apply_preset)
        self._edit.clicked.connect(self.make_editable)
        self._save.clicked.connect(self.save)
        self._apply_preset()
        self.fit_width()

    # ------------------------------------------------------------------ settings
    def _image_choices(self, *_) -> list:
        """Grey image layers, without the masks this dock made (a mask of a mask is not a dent mask)."""
        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, napari.layers.Image) and not getattr(layer, "rgb", False)
                and not layer.name.endswith((" dent mask", " consistency"))]

    def params(self) -> MaskParams:
        return MaskParams(window=int(self._window.value), threshold=float(self._threshold.value),
                          sigma=float(self._sigma.value), variant=self._variant.value, radius=int(self._radius.value),
                          reference=PRESETS[self._preset.value].reference, smoothing=PRESETS[self._preset.value].smoothing)

    def _apply_preset(self, *_) -> None:
        """Put the preset's values on the sliders; adaptive ones are measured on the image."""
        layer = self._image.value
        preset = PRESETS[self._preset.value]
        if layer is not None:
            try:
                preset = resolve_params(current_plane(self._viewer, layer), replace(preset, variant=self._variant.value))
            except MaskError as exc:
                self._status.value = str(exc)
        with self._quiet():
            self._window.value = int(preset.window or 5)
            self._threshold.value = int(preset.threshold)
            self._sigma.value = float(preset.sigma if preset.sigma is not None else 2.0)
            self._variant.value = preset.variant
        self._schedule()

    def _on_variant(self, variant: str) -> None:
        if variant in DEFAULT_RADIUS:
            self._radius.value = DEFAULT_RADIUS[variant]

    def _quiet(self) -> contextlib.ExitStack:
        """Set sliders without each change scheduling its own preview."""
        stack = contextlib.ExitStack()
        for w in (self._window, self._threshold, self._sigma, self._variant):
            stack.enter_context(w.changed.blocked())
        return stack

    # ------------------------------------------------------------------ preview
    @property
    def idle(self) -> bool:
        """No preview pending or computing."""
        return not self._busy and not self._timer.isActive()

    def _schedule(self, *_) -> None:
        self._timer.start()

    def update_preview(self):
        """Recompute the preview in a worker (or mark it stale if one is running)."""
        layer = self._image.value
        if layer is None:
            return None
        if self._busy:
            self._dirty = True
            return None
        self._busy, self._dirty = True, False
        if self._bar is None:  # napari's activity dock shows the preview being computed
            self._bar = progress(total=0, desc="Dent mask preview")
        params = self.params()
        worker = create_worker(dent_mask, current_plane(self._viewer, layer), params, _start_thread=False)
        worker.returned.connect(lambda mask: self._show_preview(layer, mask, params))
        worker.errored.connect(lambda exc: setattr(self._status, "value", str(exc)))
        worker.finished.connect(self._preview_done)
        worker.start()
        return worker

    def _preview_done(self) -> None:
        self._busy = False
        if self._dirty:
            self.update_preview()
        elif self._bar is not None:
            self._bar.close()
            self._bar = None

    def preview_name(self, layer) -> str:
        return f"{layer.name} dent mask"

    def edit_name(self, layer) -> str:
        return f"{layer.name} dent mask (edit)"

    def _show_preview(self, layer, mask: np.ndarray, params: MaskParams) -> None:
        if layer not in self._viewer.layers:  # removed while the preview was computed
            return
        self._mask, self._params = mask, params
        name = self.preview_name(layer)
        if name in self._viewer.layers:
            self._viewer.layers[name].data = mask
        else:
            self._viewer.add_image(mask, name=name, colormap="magma", blending="additive", opacity=0.5,
                                   contrast_limits=(0, 255), **geometry(layer))
        area = 100 * float(mask_region(mask, params.threshold).mean())
        self._status.value = f"dent region: {area:.1f}% of the image"
        if area > MOST:
            self._status.value += (" - almost all of it: this is not one dent. Raise the threshold, or use the adaptive "
                                   "preset")
            show_warning(f"The dent mask of '{layer.name}' marks {area:.1f}% of the image as dent; raise the threshold "
                         "or use the adaptive preset.")

    # ------------------------------------------------------------------ edit and save
    def make_editable(self):
        layer = self._image.value
        if layer is None or self._mask is None:
            show_error("Choose an image and wait for its preview first.")
            return None
        name = self.edit_name(layer)
        region = mask_region(self._mask, self._params.threshold).astype(np.uint8)
        if name in self._viewer.layers:
            edit = self._viewer.layers[name]
            if not ask(self.native, f"Replace the painted '{name}' with the current preview? Your edits would be lost."):
                return edit
            edit.data = region
            return edit
        edit = self._viewer.add_labels(region, name=name, opacity=0.5, **geometry(layer))
        edit.mode = "paint"
        edit.selected_label = 1
        return edit

    def mask_to_save(self) -> np.ndarray | None:
        layer = self._image.value
        if layer is not None and self.edit_name(layer) in self._viewer.layers:
            return np.where(np.asarray(self._viewer.layers[self.edit_name(layer)].data) > 0, 255.0, 0.0).astype(np.float32)
        return self._mask

    def save(self) -> Path | None:
        mask = self.mask_to_save()
        layer = self._image.value
        if mask is None or layer is None:
            show_error("Nothing to save yet: choose an image and wait for its preview.")
            return None
        path = Path(self._path.value)
        if path.is_dir():  # a folder chosen: the mask is named after its image
            path = path / f"{safe_stem(layer.name)}_mask.tif"
        elif path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_name(path.name + ".tif")  # 'scan.2024' -> 'scan.2024.tif' (with_suffix made it 'scan.tif')
        if path.exists() and not ask(self.native, f"'{path.name}' exists. Replace it?"):
            return None
        pixel = tuple(layer.scale[-2:]) if tuple(layer.scale[-2:]) != (1.0, 1.0) else None
        try:
            write_tiff(path, mask, pixel_size=pixel, overwrite=True,
                       description={"source_layer": layer.name, "mask_params": (self._params or self.params()).to_dict()})
        except (ImageFileError, OSError) as exc:
            show_error(str(exc))
            return None
        show_info(f"Saved the dent mask to {path}")
        return path
