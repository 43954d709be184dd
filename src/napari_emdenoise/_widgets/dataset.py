"""Plugins > EM Denoise > Target set: the target-set builder, previewed as layers, written in a worker.

Sources: the clean lattice is an image layer or the simulator; the masks are mask layers
(Image or Labels) and/or a folder of mask TIFFs; the noisy images for ``trainA`` are image
layers. "Preview" adds the first targets as layers without writing anything; "Build" writes
everything to the output folder in a worker running the builder's generator, with a
progress bar and Cancel (the manifest then lists what was written).
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, Select, SpinBox
from napari.utils.notifications import show_error, show_info

from ..dataset import (
    DatasetError,
    TargetSpec,
    iter_build_targets,
    iter_targets,
    parse_zoom,
)
from ..io import ImageFileError, list_tiffs, read_tiff
from ..jobs import Event
from ..simulate import simulate
from ._common import chosen_path, geometry
from ._settings import remember
from .base import JobWidget

SIMULATED = "simulated lattice"
PREVIEW = "target "  # name prefix of preview layers


def _lattice(source) -> np.ndarray:
    """The clean lattice: a layer's data, or ``(period, seed)`` of a simulated one (made in the worker)."""
    if isinstance(source, tuple):
        period, seed = source
        return simulate(size=(1024, 1024), period=period, dents=0, dose=1000.0, seed=seed).clean
    return source


def _preview_targets(source, masks, spec, n: int):
    """The first ``n`` targets, in the worker thread, with an event per target; nothing is written."""
    lattice = _lattice(source)
    targets = []
    for t in iter_targets(lattice, masks, spec):
        targets.append(t)
        yield Event(len(targets), n, "preview", f"target {len(targets)} of {n}")
        if len(targets) >= n:
            break
    return targets


def _build(source, masks, spec, out, **kwargs):
    return (yield from iter_build_targets(_lattice(source), masks, spec, out, **kwargs))


class DatasetWidget(JobWidget):
    """Build a training target set from a clean lattice and dent masks."""

    what = "Building the target set"
    cancelled = "the manifest lists the targets written so far."

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, "Build", run_tip="write every target (trainB), the noisy frames (trainA) and "
                                                         "a manifest to the output folder, in the background")
        self._lattice = ComboBox(choices=self._lattice_choices, label="clean lattice",
                                 tooltip="the ideal lattice the targets are cut from: an image layer from a physicist's "
                                         "simulation, or one simulated here")
        self._sim_period = FloatSpinBox(value=16.0, min=3.0, max=100.0, step=0.5, label="simulated period (px)",
                                        tooltip="atom-column spacing in pixels of the simulated lattice")
        self._mask_layers = Select(choices=self._mask_choices, label="mask layers",
                                   tooltip="dent masks (from the Dent mask dock, or painted Labels): each gives targets "
                                           "with that dent")
        self._mask_dir = FileEdit(mode="d", value="", label="mask folder",
                                  tooltip="a folder of saved mask TIFFs, instead of or as well as the layers")
        self._noisy_layers = Select(choices=self._image_choices, label="noisy (trainA)",
                                    tooltip="your noisy frames, copied to trainA for CycleGAN training (optional)")
        self._zooms = LineEdit(value="20MX=36x38", label="zooms",
                               tooltip="the magnifications to make, as LABEL=ACROSSxDOWN atom columns in the field of "
                                       "view, comma separated (e.g. 20MX=36x38, 10MX=72x76)")
        self._per_mask = SpinBox(value=20, min=1, max=10_000, label="per mask",
                                 tooltip="targets per mask and zoom, each a different random cut of the lattice")
        self._rotate = ComboBox(choices=[0, 90, 180, 270], value=0, label="rotate (cw)",
                                tooltip="turn the lattice clockwise by this angle to match your frames' orientation")
        self._depth = FloatSpinBox(value=0.4, min=0.0, max=0.95, step=0.05, label="dent depth",
                                   tooltip="how much darker the deepest part of a dent is (0.4: 40 % less signal)")
        self._seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed",
                             tooltip="the same seed gives the same targets")
        self._out = FileEdit(mode="d", value="", label="output folder",
                             tooltip="where the set is written (trainA, trainB, manifest.json)")
        self._overwrite = CheckBox(value=False, text="replace an existing set",
                                   tooltip="write over a set already in the output folder")
        self._preview = PushButton(text="Preview 4 targets",
                                   tooltip="add the first four targets as layers to look at; nothing is written")
        self.extend([self._lattice, self._sim_period, self._mask_layers, self._mask_dir, self._noisy_layers, self._zooms,
                     self._per_mask, self._out, self._overwrite, self._preview, *self.run_controls()])
        self.add_section([self._rotate, self._depth, self._seed])
        self._preview.clicked.connect(lambda *_: self.preview())  # clicked(False) must not arrive as the count
        remember("target set", {"simulated period": self._sim_period, "zooms": self._zooms, "per mask": self._per_mask,
                                "rotate": self._rotate, "dent depth": self._depth, "seed": self._seed,
                                "output folder": self._out})
        self._mask_layers.native.setMaximumHeight(90)  # a few layers; it scrolls for more
        self._noisy_layers.native.setMaximumHeight(90)  # a few layers; it scrolls for more
        self.fit_width()

    # ------------------------------------------------------------------ choices (napari calls reset_choices)
    def _image_layers(self):
        return [layer for layer in self._viewer.layers if isinstance(layer, napari.layers.Image) and layer.ndim == 2]

    def _lattice_choices(self, *_):
        return [SIMULATED] + [layer.name for layer in self._image_layers()]

    def _mask_choices(self, *_):
        return [layer.name for layer in self._viewer.layers
                if isinstance(layer, (napari.layers.Image, napari.layers.Labels)) and "mask" in layer.name
                and layer.ndim == 2 and not layer.name.startswith(PREVIEW)]

    def _image_choices(self, *_):
        return [layer.name for layer in self._image_layers() if "mask" not in layer.name and not layer.name.startswith(PREVIEW)]

    # ------------------------------------------------------------------ inputs
    def _inputs(self):
        """Lattice, masks, spec and noisy images from the widgets; raises DatasetError/ValueError."""
        if self._lattice.value == SIMULATED or self._lattice.value is None:
            period = float(self._sim_period.value)
            lattice = (period, int(self._seed.value))  # simulated in the worker
        else:
            lattice, period = np.asarray(self._viewer.layers[self._lattice.value].data), None
        masks = {}
        for name in self._mask_layers.value:
            data = np.asarray(self._viewer.layers[name].data, dtype=np.float32)
            if isinstance(self._viewer.layers[name], napari.layers.Labels):
                data = np.where(data > 0, 255.0, 0.0).astype(np.float32)
            masks[name] = data
        folder = chosen_path(self._mask_dir.value)
        for p in list_tiffs(folder) if folder is not None else []:
            masks[p.stem] = read_tiff(p).data.astype(np.float32)
        zooms = [parse_zoom(z) for z in self._zooms.value.replace(";", ",").split(",") if z.strip()]
        spec = TargetSpec(zooms=zooms, per_mask=int(self._per_mask.value), rotate=int(self._rotate.value),
                          dent_depth=float(self._depth.value), seed=int(self._seed.value), lattice_period=period)
        noisy = {name: np.asarray(self._viewer.layers[name].data) for name in self._noisy_layers.value}
        return lattice, masks, spec, noisy

    # ------------------------------------------------------------------ actions
    def preview(self, n: int = 4):
        """Add the first ``n`` targets as layers, computed in a worker; nothing is written. Returns the worker."""
        if self.running:
            return None
        try:
            lattice, masks, spec, _ = self._inputs()
        except (DatasetError, ImageFileError, ValueError) as exc:
            show_error(str(exc))
            return None
        self._pending = "preview"
        self.what, self.cancelled = "Previewing targets", "no layer was added."
        return self.launch(_preview_targets, lattice, masks, spec, n)

    def _add_previews(self, targets) -> list:
        layers = []
        for t in targets:
            meta = {"mask": t.mask_name, "made_by": "Target set preview", "file": t.filename}
            layers.append(self._viewer.add_image(t.image, name=f"{PREVIEW}{t.filename}", metadata=meta,
                                                 **self._pixel_size(t.mask_name)))
        return layers

    def _pixel_size(self, mask_name: str) -> dict:
        """A target has the pixel size of the frames its mask came from: the mask layer's, else the first image's."""
        layers = self._viewer.layers
        source = layers[mask_name] if mask_name in layers else next(iter(self._image_layers()), None)
        return geometry(source, translate=False) if source is not None else {}

    def start(self):
        out = chosen_path(self._out.value)
        if out is None:
            show_error("Choose an output folder first.")
            return None
        try:
            lattice, masks, spec, noisy = self._inputs()
        except (DatasetError, ImageFileError, ValueError) as exc:
            show_error(str(exc))
            return None
        self._target = out
        self._pending = "build"
        self.what, self.cancelled = DatasetWidget.what, DatasetWidget.cancelled
        return self.launch(_build, lattice, masks, spec, out, noisy=noisy, overwrite=bool(self._overwrite.value))

    def on_result(self, result) -> None:
        if self._pending == "preview":
            self.previews = self._add_previews(result)
            self._status.value = f"{len(result)} target(s) previewed; nothing was written"
            return
        files = result
        self._status.value = f"{len(files)} files written to {self._target}"
        show_info(f"Target set written to {self._target}")
